package sidecar

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// testCA is a SPIFFE trust domain's root, generated per test.
type testCA struct {
	td     spiffeid.TrustDomain
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	serial atomic.Int64
}

func newCA(t testing.TB, td string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tdom := spiffeid.RequireTrustDomainFromString(td)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test root " + td},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{tdom.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{td: tdom, cert: cert, key: key}
	ca.serial.Store(1)
	return ca
}

func (ca *testCA) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

// svid issues a leaf for path (e.g. "/ns/shop/sa/web") with a fresh serial, valid for an hour.
func (ca *testCA) svid(t testing.TB, path string) *x509svid.SVID {
	t.Helper()
	return ca.svidUntil(t, path, time.Now().Add(time.Hour))
}

func (ca *testCA) svidUntil(t testing.TB, path string, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := spiffeid.FromPath(ca.td, path)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial.Add(1)),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// rotatingSVID is a fake SVID source whose SVID can be swapped, like a workload client after
// rotation.
type rotatingSVID struct{ p atomic.Pointer[x509svid.SVID] }

func newRotating(s *x509svid.SVID) *rotatingSVID {
	r := &rotatingSVID{}
	r.p.Store(s)
	return r
}

func (r *rotatingSVID) GetX509SVID() (*x509svid.SVID, error) { return r.p.Load(), nil }

// reports collects connection reports.
type reports struct {
	mu  sync.Mutex
	all []ConnReport
	ch  chan ConnReport
}

func newReports() *reports { return &reports{ch: make(chan ConnReport, 1024)} }

func (r *reports) add(c ConnReport) {
	r.mu.Lock()
	r.all = append(r.all, c)
	r.mu.Unlock()
	select {
	case r.ch <- c:
	default:
	}
}

func (r *reports) next(t testing.TB) ConnReport {
	t.Helper()
	select {
	case c := <-r.ch:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection report")
		return ConnReport{}
	}
}

func listenLocal(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveLocal accepts on a loopback port for the test's life, running handle on each
// connection in a goroutine of its own and closing the connection after it: a stand-in app.
func serveLocal(t testing.TB, handle func(net.Conn)) *net.TCPAddr {
	t.Helper()
	ln := listenLocal(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// echoServer echoes until the client half-closes, then closes. It stands in for the app.
func echoServer(t testing.TB) *net.TCPAddr {
	t.Helper()
	return serveLocal(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// mesh is one inbound proxy (the server pod's sidecar) and one tunnel client (the client
// pod's sidecar), sharing one trust domain.
type mesh struct {
	ca         *testCA
	serverSVID *rotatingSVID
	clientSVID *rotatingSVID
	in         *InboundProxy
	client     *TunnelClient
	peer       Peer
	reports    *reports
	plain      net.Listener
	cancel     context.CancelFunc
	done       chan error
}

type meshOpt func(*InboundConfig)

func newMesh(t testing.TB, opts ...meshOpt) *mesh {
	t.Helper()
	ca := newCA(t, "example.org")
	m := &mesh{
		ca:         ca,
		serverSVID: newRotating(ca.svid(t, "/ns/shop/sa/redis")),
		clientSVID: newRotating(ca.svid(t, "/ns/shop/sa/web")),
		reports:    newReports(),
		plain:      listenLocal(t),
	}
	tl := listenLocal(t)
	cfg := InboundConfig{
		Creds:          Credentials{SVID: m.serverSVID, Bundle: ca.bundle()},
		Clock:          clockwork.NewRealClock(),
		Log:            quietLog(),
		TunnelListener: tl,
		PlainListener:  m.plain,
		OriginalDst:    func(*net.TCPConn) (netip.AddrPort, error) { return netip.AddrPort{}, errors.New("not redirected") },
		Report:         m.reports.add,
		DrainTimeout:   5 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	in, err := NewInbound(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.in = in
	client, err := NewTunnelClient(TunnelClientConfig{
		Creds: Credentials{SVID: m.clientSVID, Bundle: ca.bundle()},
		Clock: clockwork.NewRealClock(),
		Log:   quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	m.client = client
	m.peer = Peer{Addr: tl.Addr().String(), ID: m.serverSVID.p.Load().ID}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan error, 1)
	go func() { m.done <- in.Run(ctx) }()
	t.Cleanup(func() {
		_ = client.Close(context.Background())
		m.stop(t)
	})
	return m
}

func (m *mesh) stop(t testing.TB) {
	m.cancel()
	select {
	case err, ok := <-m.done:
		if ok && err != nil {
			t.Errorf("inbound Run: %v", err)
		}
		if ok && m.in.track.cut.Load() {
			t.Error("inbound had to cut streams at shutdown: a stream handler did not finish")
		}
		if ok {
			close(m.done)
		}
	case <-time.After(10 * time.Second):
		t.Error("inbound did not drain")
	}
}

// fromWeb opens insp's observer for an authenticated inbound stream from shop/web to port.
func fromWeb(insp Inspector, port uint16) StreamObserver {
	return insp(context.Background(), StreamInfo{Direction: Inbound, Authenticated: true,
		Source: spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web"), DestPort: port})
}
