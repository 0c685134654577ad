package response

import (
	"context"
	"log/slog"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/policy"
)

type nopSink struct{}

func (nopSink) Emit(context.Context, events.Event) {}

// BenchmarkHandle is the data path's cost of deciding one threat against 20 rules (none
// matching, the common case) with the queue full (engine not running).
func BenchmarkHandle(b *testing.B) {
	eng, err := New(Config{Clock: clockwork.NewRealClock(), Log: slog.New(slog.DiscardHandler), Events: nopSink{},
		Registry: prometheus.NewRegistry(), Queue: 1})
	if err != nil {
		b.Fatal(err)
	}
	var rules []policy.ResponseRule
	for range 20 {
		rules = append(rules, rule("", "r", policy.EventMatch{Kind: "threat", Name: "dns-tunnel"}, "quarantine"))
	}
	eng.SetRules(rules)
	in := Input{Event: threatEvent("sqli", "high"), Mode: policy.ModeProtect}
	ctx := context.Background()
	b.ReportAllocs()
	for range b.N {
		if !eng.Handle(ctx, in).Block {
			b.Fatal("not blocked")
		}
	}
}
