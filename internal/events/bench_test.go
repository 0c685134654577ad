package events

import (
	"context"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// discardExporter accepts everything.
type discardExporter struct{}

func (discardExporter) Name() string                        { return "discard" }
func (discardExporter) Export(context.Context, Event) error { return nil }

// BenchmarkPipelineEmit is the producer's cost (a sidecar emitting a threat event): the
// full-queue path, which is also what a flood costs.
func BenchmarkPipelineEmit(b *testing.B) {
	p, err := NewPipeline(PipelineConfig{Exporters: []Exporter{discardExporter{}}, Capacity: 1, Registry: prometheus.NewRegistry(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	e := threat("sqli")
	ctx := context.Background()
	b.ReportAllocs()
	for range b.N {
		p.Emit(ctx, e)
	}
}
