package xds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

var testTD = spiffeid.RequireTrustDomainFromString("test.local")

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testCA issues SVIDs from a throwaway root for real mTLS between client and server.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	bundle *x509bundle.Bundle
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{testTD.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, bundle: x509bundle.FromX509Authorities(testTD, []*x509.Certificate{cert})}
}

func (ca *testCA) svid(t testing.TB, id string) *x509svid.SVID {
	t.Helper()
	sid := spiffeid.RequireFromString(id)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{sid.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: sid, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

var controllerID = spiffeid.RequireFromString("spiffe://test.local/meshguard/controller")

func (ca *testCA) serverCreds(t testing.TB) credentials.TransportCredentials {
	return credentials.NewTLS(tlsconfig.MTLSServerConfig(ca.svid(t, controllerID.String()), ca.bundle, tlsconfig.AuthorizeMemberOf(testTD)))
}

func (ca *testCA) clientCreds(t testing.TB, id string) credentials.TransportCredentials {
	return credentials.NewTLS(tlsconfig.MTLSClientConfig(ca.svid(t, id), ca.bundle, tlsconfig.AuthorizeID(controllerID)))
}

// world is a fake Generator: every sidecar gets its own workload and the shared policy text.
type world struct {
	mu     sync.Mutex
	policy string
	fail   error
	calls  map[string]int
}

func newWorld(policy string) *world { return &world{policy: policy, calls: map[string]int{}} }

func (w *world) set(policy string) {
	w.mu.Lock()
	w.policy = policy
	w.mu.Unlock()
}

func (w *world) Generate(_ context.Context, n Node) (*xdsv1.Snapshot, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls[n.Key()]++
	if w.fail != nil {
		return nil, w.fail
	}
	return &xdsv1.Snapshot{
		Self: &xdsv1.Workload{Namespace: n.Namespace, Name: n.Workload, SpiffeId: n.ID.String(), Ips: []string{"10.0.0.2"}, TunnelPort: 15008},
		Services: []*xdsv1.Service{{
			Namespace: "shop", Name: "cache", Vips: []string{"10.96.0.10"},
			Ports:     []*xdsv1.ServicePort{{Port: 6379}},
			Endpoints: []*xdsv1.Endpoint{{Ip: "10.0.0.3", SpiffeId: "spiffe://test.local/ns/shop/sa/cache", Workload: "shop/cache-0", TunnelPort: 15008}},
		}},
		NamespaceMtls: map[string]xdsv1.MTLSMode{"legacy": xdsv1.MTLSMode_MTLS_MODE_PERMISSIVE},
		EgressMode:    xdsv1.EgressMode_EGRESS_MODE_REGISTRY_ONLY,
		Policy:        []byte(w.policy), PolicyFormat: "yaml",
	}, nil
}

func (w *world) callsFor(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls[key]
}

// applier records applied snapshots; a policy starting with "bad" is rejected, and gate (if
// set) holds Apply until it is closed.
type applier struct {
	mu      sync.Mutex
	applied []uint64
	policy  string
	changed chan struct{}
	entered chan uint64
	gate    chan struct{}
}

func newApplier() *applier { return &applier{changed: make(chan struct{})} }

func (a *applier) Apply(v uint64, s *xdsv1.Snapshot) error {
	if a.entered != nil {
		a.entered <- v
	}
	if a.gate != nil {
		<-a.gate
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := string(s.GetPolicy()); len(p) >= 3 && p[:3] == "bad" {
		close(a.changed)
		a.changed = make(chan struct{})
		return errors.New("policy: line 1: unknown field \"bad\"")
	}
	a.applied = append(a.applied, v)
	a.policy = string(s.GetPolicy())
	close(a.changed)
	a.changed = make(chan struct{})
	return nil
}

func (a *applier) state() ([]uint64, string, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]uint64(nil), a.applied...), a.policy, a.changed
}

// waitApplied waits until the applier's last applied version is v.
func (a *applier) waitApplied(t testing.TB, v uint64) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		got, _, ch := a.state()
		if len(got) > 0 && got[len(got)-1] == v {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("version %d not applied within 10s; applied %v", v, got)
		}
	}
}

// waitServer waits until cond holds for the server's sidecars.
func waitServer(t testing.TB, s *Server, what string, cond func([]SidecarStatus) bool) []SidecarStatus {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		ch := s.Changed()
		st := s.Sidecars()
		if cond(st) {
			return st
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("server: %s: not within 10s; sidecars %+v", what, st)
		}
	}
}

type testServer struct {
	*Server
	Addr   string
	Reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// startServer runs a Server on addr ("127.0.0.1:0" for any port) until stop or the test end.
func startServer(t testing.TB, addr string, gen Generator, mut func(*ServerConfig)) *testServer {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // a just-closed port can take a moment to be reusable
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		<-time.After(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := ServerConfig{Generator: gen, Clock: clockwork.NewRealClock(), Log: discardLog(), Metrics: reg, Listener: ln, AllowInsecure: true}
	if mut != nil {
		mut(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, Addr: ln.Addr().String(), Reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Run(ctx) }()
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) stop() {
	if ts.cancel == nil {
		return
	}
	ts.cancel()
	<-ts.done
	ts.cancel = nil
}

// metric returns the value of a counter or gauge without labels, or of the sample count of a
// histogram.
func (ts *testServer) metric(t testing.TB, name string) float64 {
	t.Helper()
	return gatherValue(t, ts.Reg, name)
}

func gatherValue(t testing.TB, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// dial connects to addr with creds (nil: insecure) and reconnects quickly after failures; a
// connect attempt may take long (TLS handshakes under -race on a loaded machine).
func dial(t testing.TB, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	bc := backoff.DefaultConfig
	bc.BaseDelay, bc.MaxDelay = 20*time.Millisecond, 100*time.Millisecond
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: 10 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

type runningClient struct {
	*Client
	cancel context.CancelFunc
	done   chan error
}

func startClient(t testing.TB, cfg ClientConfig) *runningClient {
	t.Helper()
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Log == nil {
		cfg.Log = discardLog()
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runningClient{Client: c, cancel: cancel, done: make(chan error, 1)}
	go func() { rc.done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-rc.done; err != nil {
			t.Errorf("client: %v", err)
		}
	})
	return rc
}

func waitReady(t testing.TB, c *Client) {
	t.Helper()
	select {
	case <-c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("client not ready within 10s")
	}
}

func webID(i int) string { return fmt.Sprintf("spiffe://test.local/ns/shop/sa/web%d", i) }

func grpcCreds(c credentials.TransportCredentials) grpc.ServerOption { return grpc.Creds(c) }
