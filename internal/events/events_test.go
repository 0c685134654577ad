package events

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRingKeepsNewestAndFilters(t *testing.T) {
	r := NewRing(3)
	ctx := context.Background()
	kinds := []Kind{KindAudit, KindThreat, KindAudit, KindAudit, KindConnection}
	for i, k := range kinds {
		r.Emit(ctx, Event{Kind: k, Name: string(rune('a' + i))})
	}
	all := r.List(Filter{})
	if got := names(all); got != "cde" {
		t.Fatalf("ring order = %q, want cde (oldest dropped)", got)
	}
	if got := names(r.List(Filter{Kind: KindAudit})); got != "cd" {
		t.Fatalf("audit filter = %q, want cd", got)
	}
	if got := names(r.List(Filter{Limit: 1})); got != "e" {
		t.Fatalf("limit 1 = %q, want e", got)
	}
}

func TestRingCapsEvidence(t *testing.T) {
	r := NewRing(1)
	big := make([]byte, MaxEvidence+10)
	r.Emit(context.Background(), Event{Kind: KindThreat, Evidence: big})
	if n := len(r.List(Filter{})[0].Evidence); n != MaxEvidence {
		t.Fatalf("evidence len = %d, want %d", n, MaxEvidence)
	}
	// The kept evidence is a copy: the producer's buffer is neither pinned nor shared.
	big[0] = 'x'
	if r.List(Filter{})[0].Evidence[0] == 'x' {
		t.Fatal("capped evidence still aliases the producer's buffer")
	}
}

func TestLoggerAndMulti(t *testing.T) {
	var buf bytes.Buffer
	r := NewRing(4)
	m := Multi{r, Logger{Log: slog.New(slog.NewTextHandler(&buf, nil))}}
	m.Emit(context.Background(), Event{Kind: KindAudit, Time: time.Now(), Name: "svid.refused", Action: "refuse", Reason: "join token already used"})
	if len(r.List(Filter{})) != 1 {
		t.Fatal("ring did not receive the event")
	}
	if s := buf.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, `reason="join token already used"`) {
		t.Fatalf("log line = %q", s)
	}
	if !KindAudit.Valid() || Kind("nope").Valid() {
		t.Fatal("Kind.Valid wrong")
	}
}

func names(es []Event) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString(e.Name)
	}
	return b.String()
}
