package xds

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

func TestDeliveryAndAckOverMTLS(t *testing.T) {
	ca := newTestCA(t)
	w := newWorld("rules: v1")
	srv := startServer(t, "127.0.0.1:0", w, func(c *ServerConfig) {
		c.AllowInsecure = false
		c.TrustDomain = testTD
		c.ServerOptions = append(c.ServerOptions, grpcCreds(ca.serverCreds(t)))
	})
	id := "spiffe://test.local/ns/shop/sa/web"
	app := newApplier()
	cl := startClient(t, ClientConfig{
		Conn: dial(t, srv.Addr, ca.clientCreds(t, id)), Applier: app,
		SpiffeID: id, Namespace: "shop", Workload: "web-0", Node: "node-1", BuildVersion: "test",
	})
	waitReady(t, cl.Client)
	v := srv.Version()
	app.waitApplied(t, v)
	st := waitServer(t, srv.Server, "acked", func(s []SidecarStatus) bool { return len(s) == 1 && s[0].AckedVersion == v })
	if got := st[0]; !got.Node.Authenticated || got.Node.ID.String() != id || got.Node.Key() != "shop/web-0" || got.Node.Node != "node-1" || got.BuildVersion != "test" {
		t.Fatalf("sidecar status %+v: want authenticated %s shop/web-0 on node-1", got, id)
	}
	gotV, snap := cl.Current()
	if gotV != v || snap.GetSelf().GetSpiffeId() != id || string(snap.GetPolicy()) != "rules: v1" {
		t.Fatalf("client holds version %d %v, want %d for %s", gotV, snap, v, id)
	}
	if !cl.Connected() {
		t.Fatal("client says it is not connected")
	}

	// A bump reaches the sidecar and is measured.
	w.set("rules: v2")
	v2 := srv.Bump()
	app.waitApplied(t, v2)
	waitServer(t, srv.Server, "acked v2", func(s []SidecarStatus) bool { return s[0].AckedVersion == v2 && s[0].UpToDate(v2) })
	if _, p, _ := app.state(); p != "rules: v2" {
		t.Fatalf("applied policy %q, want rules: v2", p)
	}
	if n := srv.metric(t, "meshguard_xds_push_latency_seconds"); n != 2 {
		t.Fatalf("push latency samples %v, want 2", n)
	}
	if n := srv.metric(t, "meshguard_xds_sidecars_connected"); n != 1 {
		t.Fatalf("sidecars connected %v, want 1", n)
	}
	if n := srv.metric(t, "meshguard_xds_sidecars_out_of_date"); n != 0 {
		t.Fatalf("out of date %v, want 0", n)
	}
	mfs, err := srv.Reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "meshguard_xds_sidecar_config_version" {
			m := mf.GetMetric()[0]
			found = m.GetLabel()[0].GetValue() == "shop/web-0" && m.GetGauge().GetValue() == float64(v2)
		}
	}
	if !found {
		t.Fatal("per-sidecar config version metric missing or wrong")
	}
}

func TestIdentityIsTheCertificateNotTheHello(t *testing.T) {
	ca := newTestCA(t)
	srv := startServer(t, "127.0.0.1:0", newWorld("x"), func(c *ServerConfig) {
		c.AllowInsecure = false
		c.ServerOptions = append(c.ServerOptions, grpcCreds(ca.serverCreds(t)))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Certificate for shop/web, hello claims shop/admin: refused.
	cc := dial(t, srv.Addr, ca.clientCreds(t, "spiffe://test.local/ns/shop/sa/web"))
	code := helloCode(ctx, t, xdsv1.NewConfigDiscoveryClient(cc), &xdsv1.Hello{SpiffeId: "spiffe://test.local/ns/shop/sa/admin", Namespace: "shop", Workload: "web-0"})
	if code != codes.PermissionDenied {
		t.Fatalf("hello with a foreign id: %v, want PermissionDenied", code)
	}
	// Namespace other than the certificate's: refused.
	code = helloCode(ctx, t, xdsv1.NewConfigDiscoveryClient(cc), &xdsv1.Hello{Namespace: "bank", Workload: "vault-0"})
	if code != codes.PermissionDenied {
		t.Fatalf("hello for another namespace: %v, want PermissionDenied", code)
	}
	// Without TLS and without AllowInsecure: refused.
	plain := startServer(t, "127.0.0.1:0", newWorld("x"), func(c *ServerConfig) { c.AllowInsecure = false })
	code = helloCode(ctx, t, xdsv1.NewConfigDiscoveryClient(dial(t, plain.Addr, nil)), &xdsv1.Hello{SpiffeId: webID(0), Namespace: "shop", Workload: "web-0"})
	if code != codes.Unauthenticated {
		t.Fatalf("insecure hello: %v, want Unauthenticated", code)
	}
	if n := len(srv.Sidecars()) + len(plain.Sidecars()); n != 0 {
		t.Fatalf("%d refused sidecars are listed as connected", n)
	}
}

func helloCode(ctx context.Context, t *testing.T, c xdsv1.ConfigDiscoveryClient, h *xdsv1.Hello) codes.Code {
	t.Helper()
	st, err := c.StreamConfig(ctx, grpc.WaitForReady(true)) // a slow handshake is not the answer
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&xdsv1.SidecarMessage{Msg: &xdsv1.SidecarMessage_Hello{Hello: h}}); err != nil {
		t.Fatal(err)
	}
	_, err = st.Recv()
	return status.Code(err)
}

func TestNackKeepsPreviousConfigAndIsVisible(t *testing.T) {
	w := newWorld("rules: good")
	srv := startServer(t, "127.0.0.1:0", w, nil)
	app := newApplier()
	creg := prometheus.NewRegistry()
	cl := startClient(t, ClientConfig{Conn: dial(t, srv.Addr, nil), Applier: app, SpiffeID: webID(0), Namespace: "shop", Workload: "web-0", Metrics: creg})
	waitReady(t, cl.Client)
	v1 := srv.Version()
	app.waitApplied(t, v1)

	w.set("bad: field")
	v2 := srv.Bump()
	st := waitServer(t, srv.Server, "nacked", func(s []SidecarStatus) bool { return len(s) == 1 && s[0].NackedVersion == v2 })
	if st[0].AckedVersion != v1 || !strings.Contains(st[0].NackError, `unknown field "bad"`) || st[0].UpToDate(v2) {
		t.Fatalf("after NACK server sees %+v, want acked %d and the error", st[0], v1)
	}
	if v, snap := cl.Current(); v != v1 || string(snap.GetPolicy()) != "rules: good" {
		t.Fatalf("client holds %d %q after NACK, want %d with the good policy", v, snap.GetPolicy(), v1)
	}
	if !strings.Contains(cl.LastError(), "unknown field") {
		t.Fatalf("client last error %q", cl.LastError())
	}
	if n := gatherValue(t, creg, "meshguard_sidecar_config_rejected_total"); n != 1 {
		t.Fatalf("sidecar rejected metric %v, want 1", n)
	}
	if v := gatherValue(t, creg, "meshguard_sidecar_config_version"); v != float64(v1) {
		t.Fatalf("sidecar version metric %v, want %d", v, v1)
	}
	if n := srv.metric(t, "meshguard_xds_nacks_total"); n != 1 {
		t.Fatalf("nacks %v, want 1", n)
	}
	if n := srv.metric(t, "meshguard_xds_sidecars_out_of_date"); n != 1 {
		t.Fatalf("out of date %v, want 1", n)
	}

	// A fixed config is ACKed and clears the NACK.
	w.set("rules: fixed")
	v3 := srv.Bump()
	app.waitApplied(t, v3)
	st = waitServer(t, srv.Server, "acked fix", func(s []SidecarStatus) bool { return s[0].AckedVersion == v3 })
	if st[0].NackError != "" || st[0].NackedVersion != 0 {
		t.Fatalf("NACK not cleared by a later ACK: %+v", st[0])
	}
}

func TestInvalidSnapshotIsNacked(t *testing.T) {
	gen := GeneratorFunc(func(_ context.Context, n Node) (*xdsv1.Snapshot, error) {
		return &xdsv1.Snapshot{Self: &xdsv1.Workload{Namespace: n.Namespace, Name: n.Workload, Ips: []string{"10.0.0.300"}}}, nil
	})
	srv := startServer(t, "127.0.0.1:0", gen, nil)
	app := newApplier()
	startClient(t, ClientConfig{Conn: dial(t, srv.Addr, nil), Applier: app, SpiffeID: webID(0), Namespace: "shop", Workload: "web-0"})
	st := waitServer(t, srv.Server, "nacked", func(s []SidecarStatus) bool { return len(s) == 1 && s[0].NackedVersion != 0 })
	if !strings.Contains(st[0].NackError, "self: ips") {
		t.Fatalf("nack error %q should name the field", st[0].NackError)
	}
	if got, _, _ := app.state(); len(got) != 0 {
		t.Fatalf("invalid snapshot reached the applier: %v", got)
	}
}

func TestBurstOfBumpsCoalesces(t *testing.T) {
	w := newWorld("rules: 0")
	srv := startServer(t, "127.0.0.1:0", w, nil)
	app := newApplier()
	app.entered = make(chan uint64, 1)
	app.gate = make(chan struct{})
	startClient(t, ClientConfig{Conn: dial(t, srv.Addr, nil), Applier: app, SpiffeID: webID(0), Namespace: "shop", Workload: "web-0"})
	first := <-app.entered // the sidecar is busy applying the first push
	app.entered = nil
	var last uint64
	for i := 1; i <= 100; i++ {
		w.set("rules: burst")
		last = srv.Bump()
	}
	close(app.gate)
	app.waitApplied(t, last)
	got, _, _ := app.state()
	if len(got) != 2 || got[0] != first || got[1] != last {
		t.Fatalf("applied %v, want exactly [%d %d]: a burst of 100 bumps must coalesce into one push", got, first, last)
	}
	if n := w.callsFor("shop/web-0"); n != 2 {
		t.Fatalf("generator called %d times, want 2", n)
	}
}

func TestSlowSidecarDoesNotDelayOthers(t *testing.T) {
	w := newWorld("rules: 0")
	srv := startServer(t, "127.0.0.1:0", w, nil)
	slow := newApplier()
	slow.entered = make(chan uint64, 1)
	slow.gate = make(chan struct{})
	startClient(t, ClientConfig{Conn: dial(t, srv.Addr, nil), Applier: slow, SpiffeID: webID(0), Namespace: "shop", Workload: "slow-0"})
	<-slow.entered // stuck in Apply until the end of the test
	defer close(slow.gate)
	fast := newApplier()
	startClient(t, ClientConfig{Conn: dial(t, srv.Addr, nil), Applier: fast, SpiffeID: webID(1), Namespace: "shop", Workload: "fast-0"})
	for i := 0; i < 3; i++ {
		fast.waitApplied(t, srv.Bump())
	}
}

func TestReconnectAfterServerRestartResyncsAndIsFailStatic(t *testing.T) {
	w := newWorld("rules: before")
	srv := startServer(t, "127.0.0.1:0", w, nil)
	addr := srv.Addr
	app := newApplier()
	clk := clockwork.NewFakeClock()
	state := filepath.Join(t.TempDir(), "sidecar", "xds-state.pb")
	cl := startClient(t, ClientConfig{
		Conn: dial(t, addr, nil), Applier: app, Clock: clk, StateFile: state,
		SpiffeID: webID(0), Namespace: "shop", Workload: "web-0",
		BackoffMin: time.Second, BackoffMax: 4 * time.Second,
	})
	waitReady(t, cl.Client)
	v1 := srv.Version()
	app.waitApplied(t, v1)

	srv.stop()
	// The client notices and waits on its backoff timer (fake clock): fail-static meanwhile.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("client did not start backing off: %v", err)
	}
	if cl.Connected() {
		t.Fatal("client says connected while the server is down")
	}
	if v, snap := cl.Current(); v != v1 || string(snap.GetPolicy()) != "rules: before" {
		t.Fatalf("while the controller is down the client holds %d %q, want %d", v, snap.GetPolicy(), v1)
	}
	if got, _, _ := app.state(); len(got) != 1 {
		t.Fatalf("applier called while the controller is down: %v", got)
	}

	// Persisted for a restart: mode 0600 in a 0700 directory.
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	di, _ := os.Stat(filepath.Dir(state))
	if fi.Mode().Perm() != 0o600 || di.Mode().Perm() != 0o700 {
		t.Fatalf("state file %v dir %v, want 0600 and 0700", fi.Mode().Perm(), di.Mode().Perm())
	}

	// The controller comes back with changed config and a new version; the client resyncs.
	w.set("rules: after")
	srv2 := startServer(t, addr, w, nil)
	if srv2.Version() <= v1 {
		t.Fatalf("restarted server version %d not above %d", srv2.Version(), v1)
	}
	advance := make(chan struct{})
	go func() { // move the backoff along whenever the client waits on it
		defer close(advance)
		for clk.BlockUntilContext(ctx, 1) == nil {
			clk.Advance(4 * time.Second)
		}
	}()
	app.waitApplied(t, srv2.Version())
	if _, p, _ := app.state(); p != "rules: after" {
		t.Fatalf("resynced policy %q", p)
	}
	waitServer(t, srv2.Server, "acked after restart", func(s []SidecarStatus) bool { return len(s) == 1 && s[0].AckedVersion == srv2.Version() })
	cancel()
	<-advance
}

func TestRestartedSidecarStartsFromStateFile(t *testing.T) {
	state := filepath.Join(t.TempDir(), "xds-state.pb")
	w := newWorld("rules: persisted")
	srv := startServer(t, "127.0.0.1:0", w, nil)
	app := newApplier()
	cl := startClient(t, ClientConfig{Conn: dial(t, srv.Addr, nil), Applier: app, StateFile: state, SpiffeID: webID(0), Namespace: "shop", Workload: "web-0"})
	waitReady(t, cl.Client)
	v := srv.Version()
	app.waitApplied(t, v)
	cl.cancel()
	<-cl.done
	cl.done <- nil // for the cleanup
	srv.stop()

	// No controller at all: the restarted sidecar is ready from the file.
	dead := dial(t, "127.0.0.1:1", nil)
	app2 := newApplier()
	cl2 := startClient(t, ClientConfig{Conn: dead, Applier: app2, StateFile: state, SpiffeID: webID(0), Namespace: "shop", Workload: "web-0"})
	waitReady(t, cl2.Client)
	if got, p, _ := app2.state(); len(got) != 1 || got[0] != v || p != "rules: persisted" {
		t.Fatalf("restarted sidecar applied %v %q, want [%d] rules: persisted", got, p, v)
	}

	// A file others could have written is not trusted, a corrupt one is ignored: neither is
	// fatal and neither makes the sidecar ready.
	load := func() (*Client, error) {
		c, err := NewClient(ClientConfig{Conn: dead, Applier: newApplier(), Clock: clockwork.NewRealClock(), Log: discardLog(), StateFile: state, Namespace: "shop", Workload: "web-0"})
		if err != nil {
			t.Fatal(err)
		}
		return c, c.loadState()
	}
	if err := os.Chmod(state, 0o666); err != nil {
		t.Fatal(err)
	}
	if c, err := load(); err == nil || !strings.Contains(err.Error(), "writable by group or others") || isReady(c) {
		t.Fatalf("world-writable state file: %v", err)
	}
	if err := os.WriteFile(state, []byte("\xff\xff\xff garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(state, 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := load(); err == nil || !strings.Contains(err.Error(), "decode") || isReady(c) {
		t.Fatalf("corrupt state file: %v", err)
	}
}

func isReady(c *Client) bool {
	select {
	case <-c.Ready():
		return true
	default:
		return false
	}
}

func TestGeneratorErrorIsVisibleAndRetriedOnBump(t *testing.T) {
	w := newWorld("rules: x")
	w.fail = errors.New("workload shop/web-0 is not registered")
	srv := startServer(t, "127.0.0.1:0", w, nil)
	app := newApplier()
	startClient(t, ClientConfig{Conn: dial(t, srv.Addr, nil), Applier: app, SpiffeID: webID(0), Namespace: "shop", Workload: "web-0"})
	waitServer(t, srv.Server, "generate error", func(s []SidecarStatus) bool {
		return len(s) == 1 && strings.Contains(s[0].GenerateError, "not registered")
	})
	w.mu.Lock()
	w.fail = nil
	w.mu.Unlock()
	app.waitApplied(t, srv.Bump())
}

func TestValidateAcceptsGoodAndNamesBadFields(t *testing.T) {
	good := &xdsv1.Snapshot{}
	if err := proto.Unmarshal(mustMarshal(t, goodSnapshot()), good); err != nil {
		t.Fatal(err)
	}
	if err := Validate(good); err != nil {
		t.Fatalf("good snapshot: %v", err)
	}
	cases := map[string]func(s *xdsv1.Snapshot){
		"self: missing":                 func(s *xdsv1.Snapshot) { s.Self = nil },
		"services[0] shop/cache: vips":  func(s *xdsv1.Snapshot) { s.Services[0].Vips = []string{"nope"} },
		"port 70000":                    func(s *xdsv1.Snapshot) { s.Services[0].Ports[0].Port = 70000 },
		"endpoints[0]: spiffe_id":       func(s *xdsv1.Snapshot) { s.Services[0].Endpoints[0].SpiffeId = "" },
		"namespace_mtls[\"legacy\"]":    func(s *xdsv1.Snapshot) { s.NamespaceMtls["legacy"] = 9 },
		"egress_mode":                   func(s *xdsv1.Snapshot) { s.EgressMode = 7 },
		"externals[0] pypi: cidr":       func(s *xdsv1.Snapshot) { s.Externals[0].Cidrs = []string{"10.0.0.0/33"} },
		"policy_format":                 func(s *xdsv1.Snapshot) { s.PolicyFormat = "" },
		"peers[0]: namespace and name":  func(s *xdsv1.Snapshot) { s.Peers[0].Name = "" },
		"protocol \"sctp\"":             func(s *xdsv1.Snapshot) { s.Services[0].Ports[0].Protocol = "sctp" },
		"self: spiffe_id \"not an id\"": func(s *xdsv1.Snapshot) { s.Self.SpiffeId = "not an id" },
	}
	for want, mut := range cases {
		s := goodSnapshot()
		mut(s)
		err := Validate(s)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v", want, err)
		}
	}
}

func goodSnapshot() *xdsv1.Snapshot {
	return &xdsv1.Snapshot{
		Self: &xdsv1.Workload{Namespace: "shop", Name: "web-0", SpiffeId: "spiffe://test.local/ns/shop/sa/web", Ips: []string{"10.0.0.2"}, Mode: xdsv1.PolicyMode_POLICY_MODE_PROTECT},
		Services: []*xdsv1.Service{{
			Namespace: "shop", Name: "cache", Vips: []string{"10.96.0.10"},
			Ports:     []*xdsv1.ServicePort{{Port: 6379, Protocol: "tcp"}},
			Endpoints: []*xdsv1.Endpoint{{Ip: "10.0.0.3", SpiffeId: "spiffe://test.local/ns/shop/sa/cache", TunnelPort: 15008}},
		}},
		Peers:         []*xdsv1.Workload{{Namespace: "shop", Name: "cache-0", Ips: []string{"10.0.0.3"}}},
		NamespaceMtls: map[string]xdsv1.MTLSMode{"legacy": xdsv1.MTLSMode_MTLS_MODE_PERMISSIVE},
		Externals:     []*xdsv1.External{{Namespace: "shop", Name: "pypi", Cidrs: []string{"151.101.0.0/16"}, Ports: []uint32{443}}},
		Policy:        []byte("kind: NetworkRule"), PolicyFormat: "yaml",
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzValidate feeds arbitrary snapshots (as from a hostile state file) to Validate and NewIndex.
func FuzzValidate(f *testing.F) {
	b, _ := proto.Marshal(goodSnapshot())
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte("\x0a\x02\x0a\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s xdsv1.Snapshot
		if proto.Unmarshal(b, &s) != nil {
			return
		}
		if Validate(&s) == nil {
			// NewIndex relies on Validate for its Must* parses: it must not panic.
			_, _ = NewIndex(&s)
		}
	})
}

func TestSnapshotLargerThanGRPCDefaultLimit(t *testing.T) {
	big := strings.Repeat("x", 6<<20) // above gRPC's 4 MiB default receive limit
	srv := startServer(t, "127.0.0.1:0", newWorld(big), nil)
	app := newApplier()
	cl := startClient(t, ClientConfig{Conn: dial(t, srv.Addr, nil), Applier: app, SpiffeID: webID(0), Namespace: "shop", Workload: "web-0"})
	waitReady(t, cl.Client)
	if _, p, _ := app.state(); len(p) != len(big) {
		t.Fatalf("applied policy of %d bytes, want %d", len(p), len(big))
	}
}

func TestPushLatencyCountsFromBumpOrConnect(t *testing.T) {
	clk := clockwork.NewFakeClock()
	w := newWorld("rules: 1")
	srv := startServer(t, "127.0.0.1:0", w, func(c *ServerConfig) { c.Clock = clk })
	srv.Bump()
	clk.Advance(time.Hour) // the version is old when the sidecar connects
	app := newApplier()
	startClient(t, ClientConfig{Conn: dial(t, srv.Addr, nil), Applier: app, SpiffeID: webID(0), Namespace: "shop", Workload: "web-0"})
	v := srv.Version()
	waitServer(t, srv.Server, "acked", func(s []SidecarStatus) bool { return len(s) == 1 && s[0].AckedVersion == v })
	if sum := histogramSum(t, srv); sum != 0 {
		t.Fatalf("connect push latency %vs: must count from the connect, not the hour-old bump", sum)
	}
	js, err := json.Marshal(srv.Sidecars()[0])
	if err != nil || !strings.Contains(string(js), `"spiffeId":"spiffe://test.local/ns/shop/sa/web0"`) || !strings.Contains(string(js), `"workload":"web-0"`) {
		t.Fatalf("status JSON %s %v", js, err)
	}
}

func histogramSum(t *testing.T, ts *testServer) float64 {
	t.Helper()
	mfs, err := ts.Reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "meshguard_xds_push_latency_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	t.Fatal("no push latency histogram")
	return 0
}

// changeSource is a registry-style Changed source.
type changeSource struct {
	mu sync.Mutex
	ch chan struct{}
}

func (c *changeSource) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ch
}

func (c *changeSource) change() {
	c.mu.Lock()
	close(c.ch)
	c.ch = make(chan struct{})
	c.mu.Unlock()
}

func TestBumpOnSourceChange(t *testing.T) {
	w := newWorld("rules: 1")
	srv := startServer(t, "127.0.0.1:0", w, nil)
	src := &changeSource{ch: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.BumpOn(ctx, src.Changed) }()
	defer func() { cancel(); <-done }()
	app := newApplier()
	cl := startClient(t, ClientConfig{Conn: dial(t, srv.Addr, nil), Applier: app, SpiffeID: webID(0), Namespace: "shop", Workload: "web-0"})
	waitReady(t, cl.Client)
	v0 := srv.Version()
	w.set("rules: 2")
	src.change()
	for {
		_, p, ch := app.state()
		if p == "rules: 2" {
			break
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("a source change did not reach the sidecar")
		}
	}
	if srv.Version() <= v0 {
		t.Fatal("version not bumped")
	}
}

func TestUnchangedSnapshotIsNotPushed(t *testing.T) {
	policy := []byte("rules: 1")
	var mu sync.Mutex
	services := []*xdsv1.Service{{Namespace: "shop", Name: "cache", Vips: []string{"10.96.0.10"}, Ports: []*xdsv1.ServicePort{{Port: 6379}}}}
	shared := GeneratorFunc(func(_ context.Context, n Node) (*xdsv1.Snapshot, error) {
		mu.Lock()
		defer mu.Unlock()
		return &xdsv1.Snapshot{Self: &xdsv1.Workload{Namespace: n.Namespace, Name: n.Workload}, Services: services, Policy: policy, PolicyFormat: "yaml"}, nil
	})
	srv := startServer(t, "127.0.0.1:0", shared, nil)
	app := newApplier()
	cl := startClient(t, ClientConfig{Conn: dial(t, srv.Addr, nil), Applier: app, SpiffeID: webID(0), Namespace: "shop", Workload: "web-0"})
	waitReady(t, cl.Client)
	app.waitApplied(t, srv.Version())
	waitServer(t, srv.Server, "acked", func(s []SidecarStatus) bool { return len(s) == 1 && s[0].AckedVersion == srv.Version() })

	// A bump that changes nothing this sidecar sees: up to date without a push.
	v2 := srv.Bump()
	waitServer(t, srv.Server, "skipped", func(s []SidecarStatus) bool { return s[0].AckedVersion == v2 })
	if n := srv.metric(t, "meshguard_xds_pushes_total"); n != 1 {
		t.Fatalf("pushes %v, want 1: an unchanged snapshot must not be sent", n)
	}
	if n := srv.metric(t, "meshguard_xds_pushes_skipped_total"); n != 1 {
		t.Fatalf("skipped %v, want 1", n)
	}
	if got, _, _ := app.state(); len(got) != 1 {
		t.Fatalf("applier called for an unchanged snapshot: %v", got)
	}

	// A real change is pushed.
	mu.Lock()
	policy = []byte("rules: 2")
	mu.Unlock()
	v3 := srv.Bump()
	app.waitApplied(t, v3)
	if _, p, _ := app.state(); p != "rules: 2" {
		t.Fatalf("applied %q after a change", p)
	}
}

func TestSnapshotForAnotherWorkloadIsNacked(t *testing.T) {
	gen := GeneratorFunc(func(_ context.Context, n Node) (*xdsv1.Snapshot, error) {
		return &xdsv1.Snapshot{Self: &xdsv1.Workload{Namespace: n.Namespace, Name: "cache-0"}}, nil
	})
	srv := startServer(t, "127.0.0.1:0", gen, nil)
	app := newApplier()
	startClient(t, ClientConfig{Conn: dial(t, srv.Addr, nil), Applier: app, SpiffeID: webID(0), Namespace: "shop", Workload: "web-0"})
	st := waitServer(t, srv.Server, "nacked", func(s []SidecarStatus) bool { return len(s) == 1 && s[0].NackedVersion != 0 })
	if !strings.Contains(st[0].NackError, "self is shop/cache-0, this sidecar serves shop/web-0") {
		t.Fatalf("nack error %q", st[0].NackError)
	}
	if got, _, _ := app.state(); len(got) != 0 {
		t.Fatalf("another workload's snapshot reached the applier: %v", got)
	}
}
