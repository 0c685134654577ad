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
	Dropped uint64 // dropped because the queue was full (or, for threats, retries ran out)
	Failed  uint64 // batch sends that failed (their items were kept while room allowed)
}

// Batcher queues connection reports and sends them in batches. Add never blocks: the data
// path calls it when a connection ends, and a slow or absent controller must not slow
// connections down, so a full queue drops the report and counts it (the count reaches the
// controller with the next batch).
type Batcher struct {
	q *batchQueue[*xdsv1.ConnectionReport]
}

// NewBatcher validates cfg.
func NewBatcher(cfg BatcherConfig) (*Batcher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	q := newBatchQueue(queueConfig[*xdsv1.ConnectionReport]{
		send: cfg.Sender.ReportConnections, clock: cfg.Clock, log: cfg.Log,
		size: cfg.QueueSize, flushAt: cfg.BatchSize, maxBatch: cfg.BatchSize,
		interval: cfg.FlushInterval, timeout: cfg.SendTimeout,
	})
	if cfg.Metrics != nil {
		err := q.register(cfg.Metrics, queueMetrics{
			prefix:  "meshguard_sidecar_reports_",
			sent:    "Connection reports delivered to the controller.",
			dropped: "Connection reports dropped because the queue was full.",
			failed:  "Report batches the controller did not accept.",
			queued:  "Connection reports waiting to be sent.",
		})
		if err != nil {
			return nil, fmt.Errorf("report batcher: register metrics: %w (one Batcher per registry)", err)
		}
	}
	return &Batcher{q: q}, nil
}

// Add queues r; false means the queue was full and r was dropped.
func (b *Batcher) Add(r *xdsv1.ConnectionReport) bool { return b.q.add(r) }

// Stats returns the counters.
func (b *Batcher) Stats() BatcherStats { return b.q.Stats() }

// Run flushes on size and interval until ctx ends, then tries one last flush bounded by
// SendTimeout.
func (b *Batcher) Run(ctx context.Context) error { return b.q.run(ctx) }

// queueConfig is what the batching core shared by Batcher and ThreatBatcher needs.
type queueConfig[T any] struct {
	send     func(ctx context.Context, batch []T, dropped uint64) error
	clock    clockwork.Clock
	log      *slog.Logger
	size     int           // items waiting at most; Add drops beyond
	flushAt  int           // flush as soon as this many wait
	maxBatch int           // items per send at most
	interval time.Duration // flush whatever waits at least this often
	timeout  time.Duration // bounds one send
	// attempts bounds the sends of one item: after that many failures it is dropped and
	// counted. 0 keeps failed items as long as the queue has room.
	attempts int
	// retryMax, if above interval, spaces retries after failures: interval doubling up to
	// retryMax (sends resume at the normal pace after a success). 0 retries on the next tick.
	retryMax time.Duration
}

// queued is one waiting item and how many sends of it failed.
type queued[T any] struct {
	v      T
	failed int
}

// batchQueue is the bounded, never-blocking queue with batched sends behind Batcher and
// ThreatBatcher.
type batchQueue[T any] struct {
	cfg  queueConfig[T]
	kick chan struct{}

	mu             sync.Mutex
	queue          []queued[T]
	pendingDropped uint64 // drops not yet told to the controller
	stats          BatcherStats
	failures       int       // consecutive failed sends
	retryAt        time.Time // no send before this after failures (retryMax only)
}

func newBatchQueue[T any](cfg queueConfig[T]) *batchQueue[T] {
	return &batchQueue[T]{cfg: cfg, kick: make(chan struct{}, 1), queue: make([]queued[T], 0, cfg.flushAt)}
}

// queueMetrics names a queue's collectors.
type queueMetrics struct{ prefix, sent, dropped, failed, queued string }

// register exposes the counters, read at scrape time: add stays a queue append under a short
// lock.
func (q *batchQueue[T]) register(reg prometheus.Registerer, m queueMetrics) error {
	stat := func(f func(BatcherStats) float64) func() float64 { return func() float64 { return f(q.Stats()) } }
	for _, col := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: m.prefix + "sent_total", Help: m.sent},
			stat(func(s BatcherStats) float64 { return float64(s.Sent) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: m.prefix + "dropped_total", Help: m.dropped},
			stat(func(s BatcherStats) float64 { return float64(s.Dropped) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: m.prefix + "send_failures_total", Help: m.failed},
			stat(func(s BatcherStats) float64 { return float64(s.Failed) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: m.prefix + "queued", Help: m.queued},
			stat(func(s BatcherStats) float64 { return float64(s.Queued) })),
	} {
		if err := reg.Register(col); err != nil {
			return err
		}
	}
	return nil
}

// add queues v; false means the queue was full and v was dropped.
func (q *batchQueue[T]) add(v T) bool {
	q.mu.Lock()
	if len(q.queue) >= q.cfg.size {
		q.pendingDropped++
		q.stats.Dropped++
		q.mu.Unlock()
		return false
	}
	q.queue = append(q.queue, queued[T]{v: v})
	full := len(q.queue) >= q.cfg.flushAt
	q.mu.Unlock()
	if full {
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// Stats returns the counters.
func (q *batchQueue[T]) Stats() BatcherStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.stats
	s.Queued = len(q.queue)
	return s
}

// run flushes on size and interval until ctx ends, then tries one last flush bounded by
// the send timeout.
func (q *batchQueue[T]) run(ctx context.Context) error {
	t := q.cfg.clock.NewTicker(q.cfg.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), q.cfg.timeout)
			q.flush(fctx, true)
			cancel()
			return nil
		case <-t.Chan():
		case <-q.kick:
		}
		q.flush(ctx, false)
	}
}

// flush sends batches until the queue is empty or a send fails; unless final, it waits out
// the retry delay after failures.
func (q *batchQueue[T]) flush(ctx context.Context, final bool) {
	for {
		q.mu.Lock()
		n := min(len(q.queue), q.cfg.maxBatch)
		dropped := q.pendingDropped
		if (n == 0 && dropped == 0) || (!final && q.cfg.clock.Now().Before(q.retryAt)) {
			q.mu.Unlock()
			return
		}
		taken := make([]queued[T], n)
		copy(taken, q.queue[:n])
		rest := copy(q.queue, q.queue[n:])
		clear(q.queue[rest:])
		q.queue = q.queue[:rest]
		q.pendingDropped = 0
		q.mu.Unlock()

		batch := make([]T, n)
		for i, e := range taken {
			batch[i] = e.v
		}
		sctx, cancel := context.WithTimeout(ctx, q.cfg.timeout)
		err := q.cfg.send(sctx, batch, dropped)
		cancel()

		q.mu.Lock()
		if err != nil {
			q.stats.Failed++
			q.pendingDropped += dropped
			// Put the batch back in front while room allows and attempts remain; the rest is
			// dropped (the oldest first when room is short).
			retry := taken[:0]
			for _, e := range taken {
				if e.failed++; q.cfg.attempts == 0 || e.failed < q.cfg.attempts {
					retry = append(retry, e)
				}
			}
			keep := min(q.cfg.size-len(q.queue), len(retry))
			lost := n - keep
			q.queue = append(retry[len(retry)-keep:], q.queue...)
			q.pendingDropped += uint64(lost)
			q.stats.Dropped += uint64(lost)
			q.failures++
			if q.cfg.retryMax > q.cfg.interval {
				d := q.cfg.interval
				for i := 1; i < q.failures && d < q.cfg.retryMax; i++ {
					d *= 2
				}
				q.retryAt = q.cfg.clock.Now().Add(min(d, q.cfg.retryMax))
			}
			q.mu.Unlock()
			// Retry on a later tick, not on the next full batch: the controller is struggling.
			select {
			case <-q.kick:
			default:
			}
			q.cfg.log.Debug("sending batch to the controller failed; will retry", "items", n, "dropped", lost, "err", err)
			return
		}
		q.stats.Sent += uint64(n)
		q.failures, q.retryAt = 0, time.Time{}
		more := len(q.queue) >= q.cfg.flushAt
		q.mu.Unlock()
		if !more {
			return
		}
	}
}
