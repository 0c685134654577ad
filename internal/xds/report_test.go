package xds

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// fakeSender records batches; gate (if set) holds each send until a value arrives, which
// says whether the send fails.
type fakeSender struct {
	mu      sync.Mutex
	batches [][]*xdsv1.ConnectionReport
	dropped []uint64
	sent    chan int
	gate    chan error
}

func (f *fakeSender) ReportConnections(ctx context.Context, r []*xdsv1.ConnectionReport, dropped uint64) error {
	if f.gate != nil {
		select {
		case err := <-f.gate:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	f.batches = append(f.batches, r)
	f.dropped = append(f.dropped, dropped)
	f.mu.Unlock()
	f.sent <- len(r)
	return nil
}

func report(i int) *xdsv1.ConnectionReport {
	return &xdsv1.ConnectionReport{Direction: "outbound", DestinationPort: uint32(i)}
}

func startBatcher(t *testing.T, cfg BatcherConfig) (*Batcher, context.CancelFunc) {
	t.Helper()
	cfg.Log = discardLog()
	b, err := NewBatcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return b, cancel
}

func recv(t *testing.T, ch <-chan int) int {
	t.Helper()
	select {
	case n := <-ch:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no batch within 10s")
		return 0
	}
}

func TestBatcherFlushesOnSizeAndInterval(t *testing.T) {
	clk := clockwork.NewFakeClock()
	snd := &fakeSender{sent: make(chan int, 10)}
	b, _ := startBatcher(t, BatcherConfig{Sender: snd, Clock: clk, QueueSize: 16, BatchSize: 4, FlushInterval: time.Minute})
	for i := 0; i < 4; i++ {
		b.Add(report(i))
	}
	if n := recv(t, snd.sent); n != 4 {
		t.Fatalf("size flush sent %d, want 4", n)
	}
	for i := 0; i < 3; i++ {
		b.Add(report(i))
	}
	select {
	case n := <-snd.sent:
		t.Fatalf("flushed %d before the interval", n)
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	if n := recv(t, snd.sent); n != 3 {
		t.Fatalf("interval flush sent %d, want 3", n)
	}
	waitFor(t, func() bool { return b.Stats().Sent == 7 }) // counted after the send returns
	if s := b.Stats(); s.Queued != 0 || s.Dropped != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestBatcherNeverBlocksAndDropsBeyondBound(t *testing.T) {
	clk := clockwork.NewFakeClock()
	snd := &fakeSender{sent: make(chan int, 10), gate: make(chan error)}
	reg := prometheus.NewRegistry()
	b, _ := startBatcher(t, BatcherConfig{Sender: snd, Clock: clk, QueueSize: 8, BatchSize: 4, FlushInterval: time.Minute, Metrics: reg})
	// The first 4 go out as a batch that hangs in the sender (the controller is slow); the
	// queue then holds 8 more; everything after is dropped without blocking.
	for i := 0; i < 4; i++ {
		if !b.Add(report(i)) {
			t.Fatalf("add %d refused with room in the queue", i)
		}
	}
	waitFor(t, func() bool { return b.Stats().Queued == 0 }) // taken by the hanging send
	accepted, refused := 0, 0
	for i := 0; i < 100; i++ {
		if b.Add(report(i)) {
			accepted++
		} else {
			refused++
		}
	}
	if accepted != 8 || refused != 92 {
		t.Fatalf("accepted %d refused %d, want 8 and 92 (queue bound 8)", accepted, refused)
	}
	if s := b.Stats(); s.Dropped != 92 || s.Queued != 8 {
		t.Fatalf("stats %+v, want 92 dropped and 8 queued", s)
	}
	if n := gatherValue(t, reg, "meshguard_sidecar_reports_dropped_total"); n != 92 {
		t.Fatalf("dropped metric %v, want 92", n)
	}
	// The hanging send fails: its reports go back in front only as far as room allows (none).
	snd.gate <- errors.New("controller unavailable")
	waitFor(t, func() bool { return b.Stats().Failed == 1 })
	if s := b.Stats(); s.Dropped != 96 || s.Queued != 8 {
		t.Fatalf("after a failed send stats %+v, want 96 dropped, 8 queued", s)
	}
	// The controller recovers: the queue drains in batches, and the drop count is told.
	go func() {
		for i := 0; i < 2; i++ {
			snd.gate <- nil
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	if recv(t, snd.sent)+recv(t, snd.sent) != 8 {
		t.Fatal("recovered sends did not carry the 8 queued reports")
	}
	snd.mu.Lock()
	defer snd.mu.Unlock()
	if snd.dropped[0] != 96 || snd.dropped[1] != 0 {
		t.Fatalf("dropped counts told to the controller %v, want [96 0]", snd.dropped)
	}
}

func TestBatcherRequeuesFailedBatchWhenThereIsRoom(t *testing.T) {
	clk := clockwork.NewFakeClock()
	snd := &fakeSender{sent: make(chan int, 10), gate: make(chan error, 1)}
	b, _ := startBatcher(t, BatcherConfig{Sender: snd, Clock: clk, QueueSize: 100, BatchSize: 5, FlushInterval: time.Minute})
	snd.gate <- errors.New("unavailable")
	for i := 0; i < 5; i++ {
		b.Add(report(i))
	}
	waitFor(t, func() bool { return b.Stats().Failed == 1 })
	if s := b.Stats(); s.Queued != 5 || s.Dropped != 0 {
		t.Fatalf("failed batch not kept: %+v", s)
	}
	snd.gate <- nil
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	if n := recv(t, snd.sent); n != 5 {
		t.Fatalf("retry sent %d, want 5", n)
	}
	snd.mu.Lock()
	defer snd.mu.Unlock()
	for i, r := range snd.batches[0] {
		if r.GetDestinationPort() != uint32(i) {
			t.Fatalf("retried batch out of order: %v", snd.batches[0])
		}
	}
}

// waitFor polls cond on a short real-time tick, bounded; for state the batcher changes on its
// own goroutine without a notification channel.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		<-tick.C
	}
}

// reportSink collects what the server received.
type reportSink struct {
	mu   sync.Mutex
	from []Node
	got  []*xdsv1.ConnectionReport
	ch   chan struct{}
}

func (s *reportSink) HandleReports(_ context.Context, n Node, r []*xdsv1.ConnectionReport) error {
	s.mu.Lock()
	s.from = append(s.from, n)
	s.got = append(s.got, r...)
	s.mu.Unlock()
	s.ch <- struct{}{}
	return nil
}

func TestReportsReachTheControllerWithTheAuthenticatedIdentity(t *testing.T) {
	ca := newTestCA(t)
	sink := &reportSink{ch: make(chan struct{}, 10)}
	srv := startServer(t, "127.0.0.1:0", newWorld("x"), func(c *ServerConfig) {
		c.AllowInsecure = false
		c.Reports = sink
		c.ServerOptions = append(c.ServerOptions, grpcCreds(ca.serverCreds(t)))
	})
	id := "spiffe://test.local/ns/shop/sa/web"
	cl, err := NewClient(ClientConfig{Conn: dial(t, srv.Addr, ca.clientCreds(t, id)), Applier: newApplier(), Clock: clockwork.NewRealClock(), Log: discardLog(), Namespace: "shop", Workload: "web-0"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := startBatcher(t, BatcherConfig{Sender: cl, Clock: clockwork.NewFakeClock(), BatchSize: 2, FlushInterval: time.Hour})
	b.Add(&xdsv1.ConnectionReport{Direction: "outbound", SourceSpiffeId: id, DestinationSpiffeId: "spiffe://test.local/ns/shop/sa/cache",
		DestinationPort: 6379, AppProtocol: "redis", L7: map[string]string{"command": "GET"}, BytesSent: 10, BytesReceived: 20, Verdict: "allow", RuleId: "shop/web-to-cache"})
	b.Add(&xdsv1.ConnectionReport{Direction: "inbound", CloseReason: "closed"})
	select {
	case <-sink.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("reports not received")
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.got) != 2 || sink.got[0].GetL7()["command"] != "GET" || sink.got[0].GetRuleId() != "shop/web-to-cache" {
		t.Fatalf("received %v", sink.got)
	}
	if n := sink.from[0]; !n.Authenticated || n.ID.String() != id || n.Key() != "shop/web-0" {
		t.Fatalf("reporter %+v, want authenticated %s", n, id)
	}
	if m := srv.metric(t, "meshguard_xds_connection_reports_total"); m != 2 {
		t.Fatalf("reports metric %v", m)
	}
}

func TestBackoffGrowsWithJitterAndCaps(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	min, max := 100*time.Millisecond, 2*time.Second
	for n := 0; n < 20; n++ {
		want := min << n
		if n > 10 || want > max {
			want = max
		}
		seen := map[time.Duration]bool{}
		for i := 0; i < 50; i++ {
			d := backoffDelay(n, min, max, r)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: %v outside [%v, %v]", n, d, want/2, want)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Fatalf("attempt %d: only %d distinct delays in 50: no jitter", n, len(seen))
		}
	}
}
