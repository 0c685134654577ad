package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// ReportSender delivers one batch to the controller; *Client implements it.
type ReportSender interface {
	ReportConnections(ctx context.Context, reports []*xdsv1.ConnectionReport, dropped uint64) error
}

// BatcherConfig configures a Batcher; the zero value is not valid.
type BatcherConfig struct {
	Sender ReportSender
	Clock  clockwork.Clock
	Log    *slog.Logger
	// QueueSize bounds the reports waiting to be sent; beyond it Add drops and counts.
	// Default 8192.
	QueueSize int
	// BatchSize flushes as soon as this many reports wait, and caps one batch. Default 256.
	BatchSize int
	// FlushInterval flushes whatever waits at least this often. Default 2s.
	FlushInterval time.Duration
	// SendTimeout bounds one batch's RPC. Default 10s.
	SendTimeout time.Duration
	// Metrics, if set, is where the batcher registers its counters.
	Metrics prometheus.Registerer
}

func (c *BatcherConfig) validate() error {
	if c.Sender == nil || c.Clock == nil || c.Log == nil {
		return errors.New("report batcher: Sender, Clock and Log are required")
	}
	if c.QueueSize < 0 || c.BatchSize < 0 || c.FlushInterval < 0 || c.SendTimeout < 0 {
		return errors.New("report batcher: sizes and durations must not be negative (0 picks the default)")
	}
	if c.QueueSize == 0 {
		c.QueueSize = 8192
	}
	if c.BatchSize == 0 {
		c.BatchSize = 256
	}
	if c.BatchSize > c.QueueSize {
		c.BatchSize = c.QueueSize
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = 2 * time.Second
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = 10 * time.Second
	}
	return nil
}

// BatcherStats are the batcher's counters.
type BatcherStats struct {
	Queued  int    // waiting now
	Sent    uint64 // delivered to the controller
	Dropped uint64 // dropped because the queue was full
	Failed  uint64 // batch sends that failed (their reports were kept while room allowed)
}

// Batcher queues connection reports and sends them in batches. Add never blocks: the data
// path calls it when a connection ends, and a slow or absent controller must not slow
// connections down, so a full queue drops the report and counts it (the count reaches the
// controller with the next batch).
type Batcher struct {
	cfg  BatcherConfig
	kick chan struct{}

	mu             sync.Mutex
	queue          []*xdsv1.ConnectionReport
	pendingDropped uint64 // drops not yet told to the controller
	stats          BatcherStats
}

// NewBatcher validates cfg.
func NewBatcher(cfg BatcherConfig) (*Batcher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &Batcher{cfg: cfg, kick: make(chan struct{}, 1), queue: make([]*xdsv1.ConnectionReport, 0, cfg.BatchSize)}
	if cfg.Metrics != nil {
		// Read at scrape time: Add stays a queue append under a short lock.
		stat := func(f func(BatcherStats) float64) func() float64 { return func() float64 { return f(b.Stats()) } }
		for _, col := range []prometheus.Collector{
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshguard_sidecar_reports_sent_total", Help: "Connection reports delivered to the controller."},
				stat(func(s BatcherStats) float64 { return float64(s.Sent) })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshguard_sidecar_reports_dropped_total", Help: "Connection reports dropped because the queue was full."},
				stat(func(s BatcherStats) float64 { return float64(s.Dropped) })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshguard_sidecar_reports_send_failures_total", Help: "Report batches the controller did not accept."},
				stat(func(s BatcherStats) float64 { return float64(s.Failed) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshguard_sidecar_reports_queued", Help: "Connection reports waiting to be sent."},
				stat(func(s BatcherStats) float64 { return float64(s.Queued) })),
		} {
			if err := cfg.Metrics.Register(col); err != nil {
				return nil, fmt.Errorf("report batcher: register metrics: %w (one Batcher per registry)", err)
			}
		}
	}
	return b, nil
}

// Add queues r; false means the queue was full and r was dropped.
func (b *Batcher) Add(r *xdsv1.ConnectionReport) bool {
	b.mu.Lock()
	if len(b.queue) >= b.cfg.QueueSize {
		b.pendingDropped++
		b.stats.Dropped++
		b.mu.Unlock()
		return false
	}
	b.queue = append(b.queue, r)
	full := len(b.queue) >= b.cfg.BatchSize
	b.mu.Unlock()
	if full {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// Stats returns the counters.
func (b *Batcher) Stats() BatcherStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.Queued = len(b.queue)
	return s
}

// Run flushes on size and interval until ctx ends, then tries one last flush bounded by
// SendTimeout.
func (b *Batcher) Run(ctx context.Context) error {
	t := b.cfg.Clock.NewTicker(b.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.SendTimeout)
			b.flush(fctx)
			cancel()
			return nil
		case <-t.Chan():
		case <-b.kick:
		}
		b.flush(ctx)
	}
}

// flush sends batches until the queue is empty or a send fails.
func (b *Batcher) flush(ctx context.Context) {
	for {
		b.mu.Lock()
		n := min(len(b.queue), b.cfg.BatchSize)
		dropped := b.pendingDropped
		if n == 0 && dropped == 0 {
			b.mu.Unlock()
			return
		}
		batch := make([]*xdsv1.ConnectionReport, n)
		copy(batch, b.queue[:n])
		rest := copy(b.queue, b.queue[n:])
		clear(b.queue[rest:])
		b.queue = b.queue[:rest]
		b.pendingDropped = 0
		b.mu.Unlock()

		sctx, cancel := context.WithTimeout(ctx, b.cfg.SendTimeout)
		err := b.cfg.Sender.ReportConnections(sctx, batch, dropped)
		cancel()

		b.mu.Lock()
		if err != nil {
			b.stats.Failed++
			b.pendingDropped += dropped
			// Put the batch back in front while room allows; what does not fit is dropped.
			room := b.cfg.QueueSize - len(b.queue)
			keep := min(room, len(batch))
			lost := len(batch) - keep
			b.queue = append(batch[lost:], b.queue...)
			b.pendingDropped += uint64(lost)
			b.stats.Dropped += uint64(lost)
			b.mu.Unlock()
			// Retry on the next tick, not on the next full batch: the controller is struggling.
			select {
			case <-b.kick:
			default:
			}
			b.cfg.Log.Debug("sending connection reports failed; will retry", "reports", n, "err", err)
			return
		}
		b.stats.Sent += uint64(n)
		more := len(b.queue) >= b.cfg.BatchSize
		b.mu.Unlock()
		if !more {
			return
		}
	}
}
