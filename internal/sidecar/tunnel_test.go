package sidecar

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func openCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// roundTrip writes payload, half-closes and reads everything back.
func roundTrip(s *TunnelStream, payload []byte) ([]byte, error) {
	werr := make(chan error, 1)
	go func() {
		_, err := s.Write(payload)
		if err == nil {
			err = s.CloseWrite()
		}
		werr <- err
	}()
	got, rerr := io.ReadAll(s)
	if err := <-werr; err != nil {
		return got, err
	}
	return got, rerr
}

func TestManyStreamsShareOneTLSConnection(t *testing.T) {
	m := newMesh(t)
	app := echoServer(t)
	const streams = 64
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := make([]byte, 32<<10+i*997) // odd sizes cross frame and buffer edges
			_, _ = rand.Read(payload)
			s, err := m.client.Open(openCtx(t), m.peer, fmt.Sprintf(":%d", app.Port))
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			got, err := roundTrip(s, payload)
			if err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
				return
			}
			if !bytes.Equal(got, payload) {
				errs <- fmt.Errorf("stream %d: echoed %d bytes, want the %d sent", i, len(got), len(payload))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := m.in.Stats()
	if st.TLSConns != 1 || st.Streams != streams {
		t.Fatalf("server saw %d TLS connections and %d streams, want 1 and %d", st.TLSConns, st.Streams, streams)
	}
	for range streams {
		r := m.reports.next(t)
		if r.Reason != ReasonClosed || !r.Authenticated || r.Source.String() != "spiffe://example.org/ns/shop/sa/web" {
			t.Fatalf("report %+v: want closed, authenticated from web", r)
		}
		if r.BytesSent != r.BytesReceived || r.BytesSent < 32<<10 || r.DestAddr.Port() != uint16(app.Port) {
			t.Fatalf("report bytes %d/%d dest %v", r.BytesSent, r.BytesReceived, r.DestAddr)
		}
	}
}

func TestServerClosesFirst(t *testing.T) {
	m := newMesh(t)
	// An app that greets, then closes (like a server answering QUIT): the client must get
	// every byte and then EOF without having closed its own side.
	ln := listenLocal(t)
	banner := bytes.Repeat([]byte("hello "), 20000)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write(banner)
		c.Close()
	}()
	s, err := m.client.Open(openCtx(t), m.peer, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, banner) {
		t.Fatalf("read %d bytes (%v), want %d", len(got), err, len(banner))
	}
	if r := m.reports.next(t); r.Reason != ReasonClosed || r.BytesReceived != int64(len(banner)) {
		t.Fatalf("report %+v: want closed with %d bytes received", r, len(banner))
	}
}

func TestWrongPeerIdentityRefused(t *testing.T) {
	m := newMesh(t)
	app := echoServer(t)
	wrong := Peer{Addr: m.peer.Addr, ID: spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/postgres")}
	_, err := m.client.Open(openCtx(t), wrong, fmt.Sprintf(":%d", app.Port))
	if !errors.Is(err, ErrWrongPeer) {
		t.Fatalf("open to a peer with the wrong identity: %v, want ErrWrongPeer", err)
	}
	if st := m.in.Stats(); st.Streams != 0 {
		t.Fatalf("server delivered %d streams", st.Streams)
	}
	// A peer from another trust domain with the right-looking path is refused too.
	other := newCA(t, "evil.org")
	m.serverSVID.p.Store(other.svid(t, "/ns/shop/sa/redis"))
	_, err = m.client.Open(openCtx(t), Peer{Addr: m.peer.Addr, ID: spiffeid.RequireFromString("spiffe://evil.org/ns/shop/sa/redis")}, fmt.Sprintf(":%d", app.Port))
	if err == nil {
		t.Fatal("peer from an untrusted domain accepted")
	}
}

func TestTunnelRequiresClientCertificate(t *testing.T) {
	m := newMesh(t)
	c, err := tls.Dial("tcp", m.peer.Addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // testing the server's refusal
	if err == nil {
		// TLS 1.3: the client finishes before the server checks; the refusal shows on read.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil || isTimeout(err) {
		t.Fatalf("tunnel accepted a client without a certificate (%v)", err)
	}
	// A certificate from another trust domain is refused as well.
	other := newCA(t, "evil.org")
	cert, _, _ := tlsCertificate(newRotating(other.svid(t, "/ns/shop/sa/web")))
	c, err = tls.Dial("tcp", m.peer.Addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}, Certificates: []tls.Certificate{*cert}}) //nolint:gosec // testing the server's refusal
	if err == nil {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil || isTimeout(err) {
		t.Fatalf("tunnel accepted a client from an untrusted domain (%v)", err)
	}
	if st := m.in.Stats(); st.TLSConns != 0 || st.Streams != 0 {
		t.Fatalf("stats %+v: want no established tunnel", st)
	}
}

func TestPlaintextStrictAndPermissive(t *testing.T) {
	app := echoServer(t)
	orig := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.9"), uint16(app.Port))
	m := newMesh(t, func(c *InboundConfig) {
		c.OriginalDst = func(*net.TCPConn) (netip.AddrPort, error) { return orig, nil }
	})
	dialPlain := func() ([]byte, error) {
		c, err := net.Dial("tcp", m.plain.Addr().String())
		if err != nil {
			return nil, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return nil, err
		}
		_ = c.(*net.TCPConn).CloseWrite()
		return io.ReadAll(c)
	}

	got, err := dialPlain()
	if err == nil && len(got) > 0 {
		t.Fatalf("STRICT delivered plaintext: got %q", got)
	}
	r := m.reports.next(t)
	if r.Reason != ReasonStrictRefuse || r.Authenticated {
		t.Fatalf("strict report %+v", r)
	}

	m.in.SetMode(Permissive)
	got, err = dialPlain()
	if err != nil || string(got) != "PING\r\n" {
		t.Fatalf("PERMISSIVE: got %q, %v; want the echo", got, err)
	}
	r = m.reports.next(t)
	if r.Reason != ReasonClosed || r.Authenticated || !r.Source.IsZero() || r.BytesSent != 6 || r.BytesReceived != 6 {
		t.Fatalf("permissive report %+v: want closed, unauthenticated, 6 bytes each way", r)
	}
	if r.DestAddr != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(app.Port)) {
		t.Fatalf("delivered to %v, want the app's port on loopback", r.DestAddr)
	}
}

func TestAdmitHookSeesSourceAndCanDeny(t *testing.T) {
	app := echoServer(t)
	seen := make(chan StreamInfo, 2)
	m := newMesh(t, func(c *InboundConfig) {
		c.Admit = func(_ context.Context, s StreamInfo) error {
			seen <- s
			if s.DestPort == 1 {
				return errors.New("rule deny-all-to-1")
			}
			return nil
		}
	})
	s, err := m.client.Open(openCtx(t), m.peer, fmt.Sprintf(":%d", app.Port))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if got := <-seen; got.Source.String() != "spiffe://example.org/ns/shop/sa/web" || !got.Authenticated || got.DestPort != uint16(app.Port) {
		t.Fatalf("admit saw %+v", got)
	}
	_, err = m.client.Open(openCtx(t), m.peer, ":1")
	var re *RefusedError
	if !errors.As(err, &re) || re.Status != 403 || re.Reason != "rule deny-all-to-1" {
		t.Fatalf("denied open: %v", err)
	}
}

func TestRotationKeepsOldStreamsAndUsesNewCertificate(t *testing.T) {
	serials := make(chan *big.Int, 4)
	app := echoServer(t)
	m := newMesh(t, func(c *InboundConfig) {
		c.Admit = func(ctx context.Context, s StreamInfo) error { return nil }
	})
	// Record the client certificate serial of each tunnel connection through the TLS state.
	m.in.tlsCfg.VerifyConnection = wrapVerify(m.in.tlsCfg.VerifyConnection, serials)

	long, err := m.client.Open(openCtx(t), m.peer, fmt.Sprintf(":%d", app.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	echo := func(s *TunnelStream, msg string) {
		t.Helper()
		if _, err := s.Write([]byte(msg)); err != nil {
			t.Fatalf("write %q: %v", msg, err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(s, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q: got %q, %v", msg, buf, err)
		}
	}
	echo(long, "before rotation")
	first := <-serials

	rotated := m.ca.svid(t, "/ns/shop/sa/web")
	m.clientSVID.p.Store(rotated)
	fresh, err := m.client.Open(openCtx(t), m.peer, fmt.Sprintf(":%d", app.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	echo(fresh, "new stream")
	second := <-serials
	if second.Cmp(rotated.Certificates[0].SerialNumber) != 0 || second.Cmp(first) == 0 {
		t.Fatalf("new stream presented serial %v, want the rotated %v (old %v)", second, rotated.Certificates[0].SerialNumber, first)
	}
	echo(long, "old stream still flows")
	if got := m.in.Stats().TLSConns; got != 2 {
		t.Fatalf("TLS connections = %d, want 2 (old one kept for its stream)", got)
	}
	got, err := roundTrip(long, []byte("bye"))
	if err != nil || string(got) != "bye" {
		t.Fatalf("closing old stream: %q, %v", got, err)
	}
}

func wrapVerify(next func(tls.ConnectionState) error, serials chan<- *big.Int) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if err := next(cs); err != nil {
			return err
		}
		serials <- cs.PeerCertificates[0].SerialNumber
		return nil
	}
}

func TestOutboundProxyEndToEnd(t *testing.T) {
	m := newMesh(t)
	app := echoServer(t)
	vip := netip.MustParseAddrPort("10.96.0.10:80")
	outRep := newReports()
	ln := listenLocal(t)
	out, err := NewOutbound(OutboundConfig{
		Clock: clockwork.NewRealClock(), Log: quietLog(), Listener: ln,
		OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) { return vip, nil },
		Resolver: resolverFunc(func(_ context.Context, _, dst netip.AddrPort) (Route, error) {
			if dst != vip {
				return Route{}, fmt.Errorf("no route to %v", dst)
			}
			return Route{Kind: RouteTunnel, Peer: m.peer, Authority: fmt.Sprintf(":%d", app.Port)}, nil
		}),
		Tunnel: m.client, Report: outRep.add, Self: m.clientSVID.p.Load().ID,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- out.Run(ctx) }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("GET / HTTP/1.1\r\n"), 5000)
	go func() {
		_, _ = c.Write(payload)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("through outbound+tunnel+inbound: %d bytes, %v; want %d", len(got), err, len(payload))
	}
	r := outRep.next(t)
	if r.Reason != ReasonClosed || r.DestAddr != vip || r.Destination != m.peer.ID || r.BytesSent != int64(len(payload)) || r.BytesReceived != int64(len(payload)) {
		t.Fatalf("outbound report %+v", r)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type resolverFunc func(ctx context.Context, src, dst netip.AddrPort) (Route, error)

func (f resolverFunc) Resolve(ctx context.Context, src, dst netip.AddrPort) (Route, error) {
	return f(ctx, src, dst)
}

func TestDrainWaitsForStreamsThenCuts(t *testing.T) {
	clock := clockwork.NewFakeClock()
	app := echoServer(t)
	m := newMesh(t, func(c *InboundConfig) { c.Clock = clock; c.DrainTimeout = time.Minute })
	s, err := m.client.Open(openCtx(t), m.peer, fmt.Sprintf(":%d", app.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m.cancel()
	// Draining: the open stream still works while Run waits for it.
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		t.Fatalf("stream during drain: %v", err)
	}
	select {
	case <-m.done:
		t.Fatal("Run returned while a stream was open")
	default:
	}
	// New streams are refused during the drain (GOAWAY or 503).
	if _, err := m.client.Open(openCtx(t), m.peer, fmt.Sprintf(":%d", app.Port)); err == nil {
		t.Fatal("new stream accepted while draining")
	}
	if err := clock.BlockUntilContext(openCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	select {
	case err := <-m.done:
		close(m.done)
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the drain timeout")
	}
	if _, err := io.ReadAll(s); err == nil {
		// Cut streams end with an error, or with EOF after the app connection closed.
		t.Log("stream ended with EOF after the cut")
	}
	// A stream refused during the drain may be reported first (as denied); the cut one must be
	// reported as drained.
	for r := m.reports.next(t); r.Reason != ReasonDrained; r = m.reports.next(t) {
		if r.Reason != ReasonDenied {
			t.Fatalf("report reason %q, want drained", r.Reason)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A pooled connection is not reused past the expiry of the peer's SVID it was verified with:
// the next stream gets a new handshake (with the peer's renewed SVID).
func TestPooledConnectionRetiredWhenPeerSVIDExpires(t *testing.T) {
	m := newMesh(t)
	app := echoServer(t)
	clock := clockwork.NewFakeClockAt(time.Now())
	m.clientSVID.p.Store(m.ca.svidUntil(t, "/ns/shop/sa/web", time.Now().Add(24*time.Hour)))
	client, err := NewTunnelClient(TunnelClientConfig{
		Creds: Credentials{SVID: m.clientSVID, Bundle: m.ca.bundle()}, Clock: clock, Log: quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close(context.Background())
	open := func() {
		t.Helper()
		s, err := client.Open(openCtx(t), m.peer, fmt.Sprintf(":%d", app.Port))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := roundTrip(s, []byte("x")); err != nil || string(got) != "x" {
			t.Fatalf("echo: %q, %v", got, err)
		}
		s.Close()
	}
	open()
	open()
	if got := m.in.Stats().TLSConns; got != 1 {
		t.Fatalf("TLS connections = %d, want 1 while the peer SVID is valid", got)
	}
	// The server renews (valid for a day); the client's clock passes the old SVID's expiry.
	m.serverSVID.p.Store(m.ca.svidUntil(t, "/ns/shop/sa/redis", time.Now().Add(24*time.Hour)))
	clock.Advance(2 * time.Hour)
	open()
	if got := m.in.Stats().TLSConns; got != 2 {
		t.Fatalf("TLS connections = %d, want a new one after the peer SVID expired", got)
	}
	// Past every SVID's expiry: Open fails (no endless redialling).
	clock.Advance(48 * time.Hour)
	if _, err := client.Open(openCtx(t), m.peer, fmt.Sprintf(":%d", app.Port)); err == nil {
		t.Fatal("stream opened with expired credentials")
	}
}
