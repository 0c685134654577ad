package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Exporter delivers events somewhere outside the process (a webhook, syslog, a file, the
// event store). Export may block and retry: the pipeline gives each exporter its own queue and
// goroutine, so a slow one only fills its own queue. An error means the event is lost (after
// the exporter's own retries) and is counted.
type Exporter interface {
	Name() string // stable, used as the "exporter" metric label
	Export(ctx context.Context, e Event) error
}

// BatchExporter is an optional Exporter extension: the pipeline hands it everything queued
// at once (the event store writes a batch in one transaction).
type BatchExporter interface {
	Exporter
	ExportBatch(ctx context.Context, es []Event) error
}

// Drop reasons, the "reason" label of meshguard_events_dropped_total.
const (
	DropQueueFull = "queue_full"
	DropFailed    = "export_failed"
	DropStopped   = "stopped"
)

// PipelineConfig configures a Pipeline.
type PipelineConfig struct {
	Exporters []Exporter
	Capacity  int // events queued per exporter; default 4096
	Registry  prometheus.Registerer
	Log       *slog.Logger
}

// Pipeline is the asynchronous fan-out to exporters. Emit never blocks: each exporter has a
// bounded queue, and an event that finds a queue full is dropped for that exporter and
// counted. It is a Sink, so producers (sidecars, the response engine) just Emit.
type Pipeline struct {
	cfg      PipelineConfig
	queues   []chan Event
	byKind   map[Kind]prometheus.Counter // resolved once: Emit is a hot path
	other    prometheus.Counter
	full     []prometheus.Counter // per exporter, resolved once
	stop     []prometheus.Counter
	dropped  *prometheus.CounterVec
	exported *prometheus.CounterVec
	mu       sync.RWMutex
	stopped  bool
}

// NewPipeline validates cfg and registers the pipeline's metrics on cfg.Registry.
func NewPipeline(cfg PipelineConfig) (*Pipeline, error) {
	if cfg.Registry == nil || cfg.Log == nil {
		return nil, errors.New("events: pipeline needs a metrics registry and a logger (set Registry and Log)")
	}
	if cfg.Capacity < 0 {
		return nil, fmt.Errorf("events: pipeline capacity must not be negative, got %d", cfg.Capacity)
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = 4096
	}
	seen := map[string]bool{}
	for i, x := range cfg.Exporters {
		if x == nil {
			return nil, fmt.Errorf("events: exporter %d is nil", i)
		}
		if seen[x.Name()] {
			return nil, fmt.Errorf("events: two exporters named %q; give each destination its own name", x.Name())
		}
		seen[x.Name()] = true
	}
	p := &Pipeline{
		cfg: cfg,
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_events_dropped_total",
			Help: "Events an exporter did not deliver, by exporter and reason (queue_full, export_failed, stopped).",
		}, []string{"exporter", "reason"}),
		exported: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_events_exported_total",
			Help: "Events delivered, by exporter.",
		}, []string{"exporter"}),
	}
	emitted := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshguard_events_total",
		Help: "Events published, by kind.",
	}, []string{"kind"})
	p.byKind = map[Kind]prometheus.Counter{}
	for _, k := range []Kind{KindConnection, KindViolation, KindThreat, KindIncident, KindAudit} {
		p.byKind[k] = emitted.WithLabelValues(string(k))
	}
	p.other = emitted.WithLabelValues("other")
	for _, c := range []prometheus.Collector{p.dropped, p.exported, emitted} {
		if err := cfg.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("events: register pipeline metrics: %w", err)
		}
	}
	for _, x := range cfg.Exporters {
		p.queues = append(p.queues, make(chan Event, cfg.Capacity))
		p.full = append(p.full, p.dropped.WithLabelValues(x.Name(), DropQueueFull))
		p.stop = append(p.stop, p.dropped.WithLabelValues(x.Name(), DropStopped))
		// Pre-create the series so dashboards see zeros, not absences.
		for _, r := range []string{DropQueueFull, DropFailed, DropStopped} {
			p.dropped.WithLabelValues(x.Name(), r)
		}
		p.exported.WithLabelValues(x.Name())
	}
	return p, nil
}

// Emit implements Sink; it never blocks.
func (p *Pipeline) Emit(_ context.Context, e Event) {
	e.Evidence = capEvidence(e.Evidence)
	if c, ok := p.byKind[e.Kind]; ok {
		c.Inc()
	} else {
		p.other.Inc()
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	for i, q := range p.queues {
		if p.stopped {
			p.stop[i].Inc()
			continue
		}
		select {
		case q <- e:
		default:
			p.full[i].Inc()
		}
	}
}

// Dropped returns the drop count for one exporter and reason (for tests and status).
func (p *Pipeline) Dropped(exporter, reason string) float64 {
	return counterValue(p.dropped.WithLabelValues(exporter, reason))
}

// Run delivers queued events until ctx ends; then it stops accepting events and counts what
// is still queued as dropped (exporters get no more time: shutdown must not hang).
func (p *Pipeline) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i, x := range p.cfg.Exporters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.drain(ctx, x, p.queues[i])
		}()
	}
	<-ctx.Done()
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	wg.Wait()
	for i, x := range p.cfg.Exporters {
		if n := len(p.queues[i]); n > 0 {
			p.dropped.WithLabelValues(x.Name(), DropStopped).Add(float64(n))
		}
	}
	return nil
}

// maxBatch bounds what one ExportBatch call carries.
const maxBatch = 256

func (p *Pipeline) drain(ctx context.Context, x Exporter, q chan Event) {
	bx, batching := x.(BatchExporter)
	batch := make([]Event, 0, maxBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-q:
			if !batching {
				p.account(x, 1, x.Export(ctx, e))
				continue
			}
			batch = append(batch[:0], e)
		more:
			for len(batch) < maxBatch {
				select {
				case e := <-q:
					batch = append(batch, e)
				default:
					break more
				}
			}
			p.account(x, len(batch), bx.ExportBatch(ctx, batch))
		}
	}
}

func (p *Pipeline) account(x Exporter, n int, err error) {
	if err != nil {
		p.dropped.WithLabelValues(x.Name(), DropFailed).Add(float64(n))
		p.cfg.Log.Warn("event export failed", "exporter", x.Name(), "events", n, "err", err)
		return
	}
	p.exported.WithLabelValues(x.Name()).Add(float64(n))
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
