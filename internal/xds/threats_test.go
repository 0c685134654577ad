package xds

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// threatSink collects what the server received.
type threatSink struct {
	mu   sync.Mutex
	from []Node
	reqs []*xdsv1.ReportThreatsRequest
	ch   chan struct{}
}

func (s *threatSink) HandleThreats(_ context.Context, n Node, r *xdsv1.ReportThreatsRequest) error {
	s.mu.Lock()
	s.from = append(s.from, n)
	s.reqs = append(s.reqs, r)
	s.mu.Unlock()
	s.ch <- struct{}{}
	return nil
}

type captureSink struct {
	mu   sync.Mutex
	from []Node
	reqs []*xdsv1.UploadCaptureRequest
}

func (s *captureSink) HandleCapture(_ context.Context, n Node, r *xdsv1.UploadCaptureRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.from = append(s.from, n)
	s.reqs = append(s.reqs, r)
	return nil
}

const (
	shopWeb   = "spiffe://test.local/ns/shop/sa/web"
	captureID = "20261125T044100Z-0123456789ab"
)

// mtlsServer runs a server that requires the sidecars' SVIDs.
func mtlsServer(t *testing.T, ca *testCA, mut func(*ServerConfig)) *testServer {
	return startServer(t, "127.0.0.1:0", newWorld("x"), func(c *ServerConfig) {
		c.AllowInsecure = false
		c.ServerOptions = append(c.ServerOptions, grpcCreds(ca.serverCreds(t)))
		if mut != nil {
			mut(c)
		}
	})
}

func newTestClient(t *testing.T, cfg ClientConfig) *Client {
	t.Helper()
	cfg.Applier, cfg.Log = newApplier(), discardLog()
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestThreatsReachTheSinkWithTheAuthenticatedNode(t *testing.T) {
	ca := newTestCA(t)
	sink := &threatSink{ch: make(chan struct{}, 10)}
	srv := mtlsServer(t, ca, func(c *ServerConfig) { c.Threats = sink })
	cl := newTestClient(t, ClientConfig{Conn: dial(t, srv.Addr, ca.clientCreds(t, shopWeb)), Namespace: "shop", Workload: "web-0"})
	b, err := NewThreatBatcher(ThreatBatcherConfig{Sender: cl, Clock: clockwork.NewRealClock(), Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done }()

	b.Add(&xdsv1.ThreatEvent{Name: "sqli", Category: "injection", Severity: "high", Action: "block", Evidence: []byte("' OR 1=1--"),
		CaptureRef: captureID, SourceWorkload: "shop/web-0", DestinationWorkload: "shop/db-0", Mode: "protect", Rules: []string{"shop/block-sqli"}})
	b.Add(&xdsv1.ThreatEvent{Name: "dns-tunnel", Action: "alert", Evidence: bytes.Repeat([]byte("a"), 5000)})
	var got []*xdsv1.ThreatEvent
	for len(got) < 2 { // one batch on the 200ms tick, or two if the tick split them
		select {
		case <-sink.ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("threats not received; got %v", got)
		}
		sink.mu.Lock()
		got = got[:0]
		for _, r := range sink.reqs {
			got = append(got, r.GetThreats()...)
		}
		sink.mu.Unlock()
	}
	if got[0].GetName() != "sqli" || !bytes.Equal(got[0].GetEvidence(), []byte("' OR 1=1--")) || got[0].GetCaptureRef() != captureID ||
		got[0].GetRules()[0] != "shop/block-sqli" || got[1].GetName() != "dns-tunnel" || len(got[1].GetEvidence()) != MaxEvidence {
		t.Fatalf("received %v", got)
	}
	sink.mu.Lock()
	n := sink.from[0]
	sink.mu.Unlock()
	if !n.Authenticated || n.ID.String() != shopWeb || n.Key() != "shop/web-0" {
		t.Fatalf("reporter %+v, want authenticated %s as shop/web-0", n, shopWeb)
	}
	if m := srv.metric(t, "meshguard_xds_threats_received_total"); m != 2 {
		t.Fatalf("threats metric %v, want 2", m)
	}
}

func TestSidecarCannotReportUnderAnotherIdentity(t *testing.T) {
	ca := newTestCA(t)
	threats := &threatSink{ch: make(chan struct{}, 10)}
	captures := &captureSink{}
	srv := mtlsServer(t, ca, func(c *ServerConfig) { c.Threats, c.Captures = threats, captures })
	cc := dial(t, srv.Addr, ca.clientCreds(t, shopWeb))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Through the Client: a configured identity other than the certificate's.
	admin := newTestClient(t, ClientConfig{Conn: cc, SpiffeID: "spiffe://test.local/ns/shop/sa/admin", Namespace: "shop", Workload: "admin-0"})
	if err := admin.ReportThreats(ctx, []*xdsv1.ThreatEvent{{Name: "sqli"}}, 0); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("threats under a foreign spiffe id: %v, want PermissionDenied", err)
	}
	if err := admin.UploadCapture(ctx, &xdsv1.UploadCaptureRequest{CaptureId: captureID, Pcap: []byte("x")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("capture under a foreign spiffe id: %v, want PermissionDenied", err)
	}
	// Raw calls claiming another namespace (no spiffe_id: the certificate's is used).
	raw := xdsv1.NewConfigDiscoveryClient(cc)
	wait := grpc.WaitForReady(true)
	if _, err := raw.ReportThreats(ctx, &xdsv1.ReportThreatsRequest{Namespace: "bank", Workload: "vault-0", Threats: []*xdsv1.ThreatEvent{{Name: "x"}}}, wait); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("threats for another namespace: %v, want PermissionDenied", err)
	}
	if _, err := raw.UploadCapture(ctx, &xdsv1.UploadCaptureRequest{Namespace: "bank", Workload: "vault-0", CaptureId: captureID}, wait); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("capture for another namespace: %v, want PermissionDenied", err)
	}
	st, err := raw.Commands(ctx, &xdsv1.CommandsRequest{Namespace: "bank", Workload: "vault-0"}, wait)
	if err != nil {
		t.Fatal(err)
	}
	// Refused without headers: RunCommands does not take it for an accepted stream.
	if md, _ := st.Header(); md != nil {
		t.Fatalf("refused command stream sent headers %v", md)
	}
	if _, err := st.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("command stream for another namespace: %v, want PermissionDenied", err)
	}
	if err := srv.SendCommand("bank", "vault-0", &xdsv1.Command{Id: "1"}); !errors.Is(err, ErrNoCommandStream) {
		t.Fatalf("refused stream registered: %v", err)
	}
	// Without a certificate and without AllowInsecure: refused.
	plain := startServer(t, "127.0.0.1:0", newWorld("x"), func(c *ServerConfig) { c.AllowInsecure, c.Threats = false, threats })
	if _, err := xdsv1.NewConfigDiscoveryClient(dial(t, plain.Addr, nil)).ReportThreats(ctx,
		&xdsv1.ReportThreatsRequest{SpiffeId: shopWeb, Namespace: "shop", Workload: "web-0"}, wait); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("insecure threats: %v, want Unauthenticated", err)
	}
	threats.mu.Lock()
	defer threats.mu.Unlock()
	captures.mu.Lock()
	defer captures.mu.Unlock()
	if len(threats.reqs)+len(captures.reqs) != 0 {
		t.Fatalf("refused calls reached the sinks: %v %v", threats.reqs, captures.reqs)
	}
}

func TestUploadCapture(t *testing.T) {
	ca := newTestCA(t)
	sink := &captureSink{}
	srv := mtlsServer(t, ca, func(c *ServerConfig) { c.Captures = sink })
	cc := dial(t, srv.Addr, ca.clientCreds(t, shopWeb))
	cl := newTestClient(t, ClientConfig{Conn: cc, Namespace: "shop", Workload: "web-0"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Above gRPC's 4 MiB default in both directions' limits.
	pcap := bytes.Repeat([]byte{0xd4, 0xc3, 0xb2, 0xa1}, 6<<20/4)
	if err := cl.UploadCapture(ctx, &xdsv1.UploadCaptureRequest{CaptureId: captureID, RequestId: "req-1", ConnIds: []string{"c1"}, Connections: 1, Pcap: pcap}); err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	if len(sink.reqs) != 1 || !bytes.Equal(sink.reqs[0].GetPcap(), pcap) || sink.reqs[0].GetRequestId() != "req-1" ||
		!sink.from[0].Authenticated || sink.from[0].Key() != "shop/web-0" || sink.reqs[0].GetWorkload() != "web-0" {
		t.Fatalf("sink got %d uploads from %v", len(sink.reqs), sink.from)
	}
	sink.mu.Unlock()
	if m := srv.metric(t, "meshguard_xds_captures_received_total"); m != 1 {
		t.Fatalf("captures metric %v, want 1", m)
	}

	// Too large: the client refuses before sending; a sender that bypasses it is refused by
	// the server.
	tooBig := make([]byte, MaxCaptureBytes+1)
	if err := cl.UploadCapture(ctx, &xdsv1.UploadCaptureRequest{CaptureId: captureID, Pcap: tooBig}); err == nil {
		t.Fatal("client sent a capture above the limit")
	}
	raw := xdsv1.NewConfigDiscoveryClient(cc)
	_, err := raw.UploadCapture(ctx, &xdsv1.UploadCaptureRequest{Namespace: "shop", Workload: "web-0", CaptureId: captureID, Pcap: tooBig},
		grpc.MaxCallSendMsgSize(MaxMessageSize))
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("upload above the limit: %v, want InvalidArgument", err)
	}
	// A capture ID that is not one (it becomes a file name on the controller).
	if err := cl.UploadCapture(ctx, &xdsv1.UploadCaptureRequest{CaptureId: "../../etc/passwd", Pcap: []byte("x")}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad capture id: %v, want InvalidArgument", err)
	}
	sink.mu.Lock()
	if len(sink.reqs) != 1 {
		t.Fatalf("refused uploads reached the sink: %d", len(sink.reqs))
	}
	sink.mu.Unlock()

	// No sink: refused.
	none := startServer(t, "127.0.0.1:0", newWorld("x"), nil)
	cl2 := newTestClient(t, ClientConfig{Conn: dial(t, none.Addr, nil), SpiffeID: webID(0), Namespace: "shop", Workload: "web-0"})
	if err := cl2.UploadCapture(ctx, &xdsv1.UploadCaptureRequest{CaptureId: captureID}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("upload without a sink: %v, want Unimplemented", err)
	}
}

// sendWhenConnected sends cmd as soon as the workload's command stream is registered.
func sendWhenConnected(t *testing.T, s *Server, ns, wl string, cmd *xdsv1.Command) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		ch := s.Changed()
		err := s.SendCommand(ns, wl, cmd)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrNoCommandStream) {
			t.Fatal(err)
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("no command stream for %s/%s within 10s", ns, wl)
		}
	}
}

// waitNoCommandStream waits until SendCommand says the workload has no stream.
func waitNoCommandStream(t *testing.T, s *Server, ns, wl string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		ch := s.Changed()
		s.mu.Lock()
		_, open := s.commands[ns+"/"+wl]
		s.mu.Unlock()
		if !open {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("command stream of %s/%s still registered after 10s", ns, wl)
		}
	}
}

func recvCommand(t *testing.T, ch <-chan *xdsv1.Command) *xdsv1.Command {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no command within 10s")
		return nil
	}
}

func TestCommandsReachTheSidecarAcrossReconnects(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", newWorld("x"), nil)
	addr := srv.Addr
	if err := srv.SendCommand("shop", "web-0", &xdsv1.Command{Id: "early"}); !errors.Is(err, ErrNoCommandStream) {
		t.Fatalf("send without a stream: %v, want ErrNoCommandStream", err)
	}
	clk := clockwork.NewFakeClock()
	cl := newTestClient(t, ClientConfig{Conn: dial(t, addr, nil), Clock: clk, SpiffeID: webID(0), Namespace: "shop", Workload: "web-0",
		BackoffMin: time.Second, BackoffMax: 4 * time.Second})
	got := make(chan *xdsv1.Command, 10)
	handleCtx := make(chan context.Context, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- cl.RunCommands(ctx, func(hctx context.Context, c *xdsv1.Command) { handleCtx <- hctx; got <- c })
	}()
	defer func() { cancel(); <-done }()

	sendWhenConnected(t, srv.Server, "shop", "web-0", &xdsv1.Command{Id: "c1", Cmd: &xdsv1.Command_Capture{Capture: &xdsv1.CaptureCommand{DurationMillis: 30000}}})
	if c := recvCommand(t, got); c.GetId() != "c1" || c.GetCapture().GetDurationMillis() != 30000 {
		t.Fatalf("handler got %v", c)
	}
	firstCtx := <-handleCtx

	// The controller restarts: the client waits on its backoff (the injected clock), then
	// reconnects to the new server, which reaches it.
	srv.stop()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := clk.BlockUntilContext(wctx, 1); err != nil {
		t.Fatalf("client did not back off on its clock: %v", err)
	}
	srv2 := startServer(t, addr, newWorld("x"), nil)
	advance := make(chan struct{})
	go func() {
		defer close(advance)
		for clk.BlockUntilContext(wctx, 1) == nil {
			clk.Advance(4 * time.Second)
		}
	}()
	sendWhenConnected(t, srv2.Server, "shop", "web-0", &xdsv1.Command{Id: "c2"})
	if c := recvCommand(t, got); c.GetId() != "c2" {
		t.Fatalf("after reconnect handler got %v", c)
	}
	if firstCtx.Err() != nil { // a capture started by c1 must not end with the old stream
		t.Fatal("the ctx given to the handler ended with the stream it came on")
	}
	wcancel()
	<-advance

	// The sidecar goes away: RunCommands returns nil and the stream is cleaned up.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunCommands: %v", err)
		}
		done <- nil // for the deferred wait
	case <-time.After(10 * time.Second):
		t.Fatal("RunCommands did not return after ctx ended")
	}
	waitNoCommandStream(t, srv2.Server, "shop", "web-0")
	if err := srv2.SendCommand("shop", "web-0", &xdsv1.Command{Id: "late"}); !errors.Is(err, ErrNoCommandStream) {
		t.Fatalf("send after the sidecar left: %v, want ErrNoCommandStream", err)
	}
}

func TestNewerCommandStreamReplacesOlder(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", newWorld("x"), nil)
	raw := xdsv1.NewConfigDiscoveryClient(dial(t, srv.Addr, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func() grpc.ServerStreamingClient[xdsv1.Command] {
		st, err := raw.Commands(ctx, &xdsv1.CommandsRequest{SpiffeId: webID(0), Namespace: "shop", Workload: "web-0"}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatal(err)
		}
		if md, err := st.Header(); err != nil || md == nil { // registered
			t.Fatalf("stream not accepted: %v", err)
		}
		return st
	}
	old := open()
	cur := open()
	if _, err := old.Recv(); status.Code(err) != codes.Aborted {
		t.Fatalf("older stream: %v, want Aborted", err)
	}
	if err := srv.SendCommand("shop", "web-0", &xdsv1.Command{Id: "x"}); err != nil {
		t.Fatal(err)
	}
	if c, err := cur.Recv(); err != nil || c.GetId() != "x" {
		t.Fatalf("newer stream got %v, %v", c, err)
	}
}

func TestSendCommandRefusesWhenTheStreamIsBackedUp(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", newWorld("x"), nil)
	// A registered stream whose sender is stuck: nothing drains its buffer.
	srv.mu.Lock()
	srv.commands["shop/web-0"] = &commandStream{ch: make(chan *xdsv1.Command, commandBuffer), replaced: make(chan struct{})}
	srv.mu.Unlock()
	for i := 0; i < commandBuffer; i++ {
		if err := srv.SendCommand("shop", "web-0", &xdsv1.Command{}); err != nil {
			t.Fatalf("command %d refused with room: %v", i, err)
		}
	}
	if err := srv.SendCommand("shop", "web-0", &xdsv1.Command{}); err == nil || errors.Is(err, ErrNoCommandStream) {
		t.Fatalf("send to a full stream: %v, want a backed-up error", err)
	}
}

// fakeThreatSender records batches; gate (if set) holds each send until a value arrives,
// which says whether the send fails.
type fakeThreatSender struct {
	mu      sync.Mutex
	batches [][]*xdsv1.ThreatEvent
	dropped []uint64
	sent    chan int
	gate    chan error
}

func (f *fakeThreatSender) ReportThreats(ctx context.Context, ev []*xdsv1.ThreatEvent, dropped uint64) error {
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
	f.batches = append(f.batches, ev)
	f.dropped = append(f.dropped, dropped)
	f.mu.Unlock()
	f.sent <- len(ev)
	return nil
}

func startThreatBatcher(t *testing.T, cfg ThreatBatcherConfig) *ThreatBatcher {
	t.Helper()
	cfg.Log = discardLog()
	b, err := NewThreatBatcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return b
}

// tick waits until the batcher's ticker exists, then moves the fake clock past d.
func tick(t *testing.T, clk *clockwork.FakeClock, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(d)
}

func TestThreatBatcherNeverBlocksAndCountsDrops(t *testing.T) {
	clk := clockwork.NewFakeClock()
	snd := &fakeThreatSender{sent: make(chan int, 10), gate: make(chan error)}
	reg := prometheus.NewRegistry()
	b := startThreatBatcher(t, ThreatBatcherConfig{Sender: snd, Clock: clk, Queue: 8, Metrics: reg})
	// 8 fill the queue and go out as a batch that hangs in the sender (a stuck controller).
	for i := 0; i < 8; i++ {
		b.Add(&xdsv1.ThreatEvent{Name: "sqli"})
	}
	waitFor(t, func() bool { return b.Stats().Queued == 0 })
	// Meanwhile the data path keeps adding: nothing blocks, 8 wait, the rest is dropped.
	added := make(chan struct{})
	go func() {
		for i := 0; i < 100; i++ {
			b.Add(&xdsv1.ThreatEvent{Name: "xss"})
		}
		close(added)
	}()
	select {
	case <-added:
	case <-time.After(10 * time.Second):
		t.Fatal("Add blocked while the sender was stuck")
	}
	if s := b.Stats(); s.Queued != 8 || s.Dropped != 92 {
		t.Fatalf("stats %+v, want 8 queued and 92 dropped", s)
	}
	if n := gatherValue(t, reg, "meshguard_sidecar_threats_dropped_total"); n != 92 {
		t.Fatalf("dropped metric %v, want 92", n)
	}
	// The controller recovers: the stuck batch completes, the next carries the drop count.
	snd.gate <- nil
	if n := recv(t, snd.sent); n != 8 {
		t.Fatalf("first batch %d, want 8", n)
	}
	go func() { snd.gate <- nil }()
	tick(t, clk, time.Second)
	if n := recv(t, snd.sent); n != 8 {
		t.Fatalf("second batch %d, want 8", n)
	}
	snd.mu.Lock()
	defer snd.mu.Unlock()
	if snd.dropped[0] != 0 || snd.dropped[1] != 92 || snd.batches[1][0].GetName() != "xss" {
		t.Fatalf("dropped counts told to the controller %v, want [0 92]", snd.dropped)
	}
}

func TestThreatBatcherGivesUpAfterBoundedRetries(t *testing.T) {
	clk := clockwork.NewFakeClock()
	snd := &fakeThreatSender{sent: make(chan int, 10), gate: make(chan error, 1)}
	b := startThreatBatcher(t, ThreatBatcherConfig{Sender: snd, Clock: clk, Attempts: 2})
	for i := 0; i < 3; i++ {
		b.Add(&xdsv1.ThreatEvent{Name: "sqli"})
	}
	snd.gate <- errors.New("unavailable")
	tick(t, clk, time.Second)
	waitFor(t, func() bool { return b.Stats().Failed == 1 })
	if s := b.Stats(); s.Queued != 3 || s.Dropped != 0 {
		t.Fatalf("after one failure %+v, want the 3 kept", s)
	}
	snd.gate <- errors.New("unavailable")
	tick(t, clk, time.Minute) // past the retry backoff
	waitFor(t, func() bool { return b.Stats().Failed == 2 })
	if s := b.Stats(); s.Queued != 0 || s.Dropped != 3 {
		t.Fatalf("after the last attempt %+v, want the 3 dropped", s)
	}
	// The controller is back: it learns how many were lost.
	snd.gate <- nil
	tick(t, clk, time.Minute)
	if n := recv(t, snd.sent); n != 0 {
		t.Fatalf("batch of %d, want only the drop count", n)
	}
	snd.mu.Lock()
	defer snd.mu.Unlock()
	if snd.dropped[0] != 3 {
		t.Fatalf("dropped told %v, want 3", snd.dropped)
	}
}
