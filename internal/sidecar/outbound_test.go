package sidecar

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestOutboundRoutes covers passthrough egress, a resolver refusal and an unreachable peer:
// each ends as the app would see it and is reported with the right reason.
func TestOutboundRoutes(t *testing.T) {
	m := newMesh(t)
	echo := echoServer(t)
	dead := listenLocal(t)
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there any more
	routes := map[netip.AddrPort]func() (Route, error){
		netip.MustParseAddrPort("203.0.113.7:443"): func() (Route, error) {
			return Route{Kind: RoutePassthrough, Dest: echo.AddrPort()}, nil
		},
		netip.MustParseAddrPort("198.51.100.1:443"): func() (Route, error) { return Route{}, ErrEgressDenied },
		netip.MustParseAddrPort("10.0.0.5:80"): func() (Route, error) {
			return Route{Kind: RouteTunnel, Peer: Peer{Addr: deadAddr, ID: spiffeid.RequireFromString("spiffe://example.org/ns/x/sa/y")}}, nil
		},
	}
	var next netip.AddrPort
	dsts := make(chan netip.AddrPort, 1)
	ln := listenLocal(t)
	rep := newReports()
	out, err := NewOutbound(OutboundConfig{
		Clock: clockwork.NewRealClock(), Log: quietLog(), Listener: ln,
		OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) { return <-dsts, nil },
		Resolver: resolverFunc(func(_ context.Context, _, dst netip.AddrPort) (Route, error) {
			return routes[dst]()
		}),
		Tunnel: m.client, Report: rep.add, DialTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- out.Run(ctx) }()
	defer func() { cancel(); <-done }()

	conn := func(dst netip.AddrPort) ([]byte, error) {
		next = dst
		dsts <- next
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		// A reset is reported once, to whichever call meets it first: when it arrives before
		// the write, the write fails and the read then sees a plain EOF.
		_, werr := c.Write([]byte("ping"))
		cerr := c.(*net.TCPConn).CloseWrite()
		got, rerr := io.ReadAll(c)
		return got, errors.Join(werr, cerr, rerr)
	}

	got, err := conn(netip.MustParseAddrPort("203.0.113.7:443"))
	if err != nil || string(got) != "ping" {
		t.Fatalf("passthrough: %q, %v", got, err)
	}
	if r := rep.next(t); r.Reason != ReasonClosed || r.PeerAddr != "" || !r.Destination.IsZero() || r.Authenticated || r.BytesSent != 4 {
		t.Fatalf("passthrough report %+v", r)
	}

	if _, err := conn(netip.MustParseAddrPort("198.51.100.1:443")); err == nil || isTimeout(err) {
		t.Fatalf("denied egress: %v, want a reset", err)
	}
	if r := rep.next(t); r.Reason != ReasonDenied || r.Err == "" || r.Authenticated {
		t.Fatalf("denied report %+v", r)
	}

	if _, err := conn(netip.MustParseAddrPort("10.0.0.5:80")); err == nil || isTimeout(err) {
		t.Fatalf("unreachable peer: %v, want a reset", err)
	}
	if r := rep.next(t); r.Reason != ReasonTunnelFailed || r.PeerAddr != deadAddr {
		t.Fatalf("tunnel failure report %+v", r)
	}
}

// fakeListener returns the queued results from Accept.
type fakeListener struct {
	net.Listener
	results chan acceptResult
}

type acceptResult struct {
	c   net.Conn
	err error
}

func (f *fakeListener) Accept() (net.Conn, error) { r := <-f.results; return r.c, r.err }
func (f *fakeListener) Addr() net.Addr            { return &net.TCPAddr{} }

func TestAcceptLoopBacksOffOnExhaustion(t *testing.T) {
	clock := clockwork.NewFakeClock()
	ln := &fakeListener{results: make(chan acceptResult, 4)}
	served := make(chan net.Conn, 1)
	done := make(chan error, 1)
	go func() {
		done <- acceptLoop(ln, clock, quietLog(), func(c net.Conn) { served <- c })
	}()
	ln.results <- acceptResult{err: &net.OpError{Op: "accept", Err: syscall.EMFILE}}
	if err := clock.BlockUntilContext(openCtx(t), 1); err != nil {
		t.Fatalf("no backoff after EMFILE: %v", err)
	}
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	ln.results <- acceptResult{c: c1}
	clock.Advance(time.Second)
	select {
	case c := <-served:
		if c != c1 {
			t.Fatal("served another connection")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("connection after the backoff not served")
	}
	ln.results <- acceptResult{err: errors.New("listener broken")}
	if err := <-done; err == nil {
		t.Fatal("a non-retryable accept error must end the loop")
	}
}

func TestOutboundDrain(t *testing.T) {
	m := newMesh(t)
	echo := echoServer(t)
	clock := clockwork.NewFakeClock()
	ln := listenLocal(t)
	rep := newReports()
	out, err := NewOutbound(OutboundConfig{
		Clock: clock, Log: quietLog(), Listener: ln,
		OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) { return netip.MustParseAddrPort("10.96.0.1:80"), nil },
		Resolver: resolverFunc(func(context.Context, netip.AddrPort, netip.AddrPort) (Route, error) {
			return Route{Kind: RouteTunnel, Peer: m.peer, Authority: echo.String()}, nil
		}),
		Tunnel: m.client, Report: rep.add, DrainTimeout: time.Minute,
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
	defer c.Close()
	roundtrip := func() error {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 1))
		return err
	}
	if err := roundtrip(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := clock.BlockUntilContext(openCtx(t), 1); err != nil { // Run is waiting on the drain timer
		t.Fatal(err)
	}
	if err := roundtrip(); err != nil {
		t.Fatalf("open connection during drain: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("new connection accepted while draining")
	}
	clock.Advance(time.Minute)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the drain timeout")
	}
	if r := rep.next(t); r.Reason != ReasonDrained {
		t.Fatalf("report %+v, want drained", r)
	}
}
