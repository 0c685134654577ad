package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeObserver denies a stream whose client or server bytes contain a marker, counting what it
// saw; with reply set, client denials answer in the app's protocol.
type fakeObserver struct {
	mu             sync.Mutex
	client, server bytes.Buffer
	closed         int
	reply          []byte
}

type replyErr struct{ reply []byte }

func (e replyErr) Error() string { return "rule r1 denies EVIL" }
func (e replyErr) Reply() []byte { return e.reply }

func (o *fakeObserver) FromClient(p []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.client.Write(p)
	if bytes.Contains(o.client.Bytes(), []byte("EVIL")) {
		if o.reply != nil {
			return replyErr{o.reply}
		}
		return errors.New("rule r1 denies EVIL")
	}
	return nil
}

func (o *fakeObserver) FromServer(p []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.server.Write(p)
	if bytes.Contains(o.server.Bytes(), []byte("SECRET")) {
		return errors.New("dlp: SECRET leaving")
	}
	return nil
}

func (o *fakeObserver) Close() { o.mu.Lock(); o.closed++; o.mu.Unlock() }

func TestInspectionOnTunnelStreams(t *testing.T) {
	obs := make(chan *fakeObserver, 4)
	reply := []byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\nrule r1")
	m := newMesh(t, func(c *InboundConfig) {
		c.Inspect = func(_ context.Context, s StreamInfo) StreamObserver {
			if s.Direction != Inbound || !s.Authenticated || s.Source.IsZero() {
				t.Errorf("inspector got %+v", s)
			}
			o := &fakeObserver{reply: reply}
			obs <- o
			return o
		}
	})
	app := echoServer(t)

	// Allowed: the observer sees every byte both ways, and Close once.
	s, err := m.client.Open(openCtx(t), m.peer, fmt.Sprintf(":%d", app.Port))
	if err != nil {
		t.Fatal(err)
	}
	got, err := roundTrip(s, []byte("hello"))
	s.Close()
	if err != nil || string(got) != "hello" {
		t.Fatalf("allowed stream: %q, %v", got, err)
	}
	if r := m.reports.next(t); r.Reason != ReasonClosed {
		t.Fatalf("allowed report %+v", r)
	}
	o := <-obs
	o.mu.Lock()
	if o.client.String() != "hello" || o.server.String() != "hello" || o.closed != 1 {
		t.Errorf("observer saw client %q server %q closed %d", o.client.String(), o.server.String(), o.closed)
	}
	o.mu.Unlock()

	// Denied request: the client gets the protocol reply, the app never sees the bytes.
	s, err = m.client.Open(openCtx(t), m.peer, fmt.Sprintf(":%d", app.Port))
	if err != nil {
		t.Fatal(err)
	}
	got, _ = roundTrip(s, []byte("GET /EVIL HTTP/1.1\r\n\r\n"))
	s.Close()
	if !bytes.Equal(got, reply) {
		t.Fatalf("denied stream answered %q, want the observer's reply (and no echo)", got)
	}
	if r := m.reports.next(t); r.Reason != ReasonDenied || r.Err == "" {
		t.Fatalf("denied report %+v", r)
	}
}

func TestInspectionOnPlaintextAndOutbound(t *testing.T) {
	// An app that leaks a secret in its greeting.
	appPort := uint16(serveLocal(t, func(c net.Conn) {
		_, _ = c.Write([]byte("banner SECRET"))
		_, _ = io.Copy(io.Discard, c)
	}).Port)
	m := newMesh(t, func(c *InboundConfig) {
		c.Mode = Permissive
		c.OriginalDst = func(*net.TCPConn) (netip.AddrPort, error) {
			return netip.AddrPortFrom(netip.MustParseAddr("10.0.0.9"), appPort), nil
		}
		c.Inspect = func(context.Context, StreamInfo) StreamObserver { return &fakeObserver{} }
	})
	c, err := net.Dial("tcp", m.plain.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(c)
	c.Close()
	if bytes.Contains(got, []byte("SECRET")) {
		t.Fatalf("plaintext client received %q despite the denial", got)
	}
	if r := m.reports.next(t); r.Reason != ReasonDenied || r.Authenticated {
		t.Fatalf("plaintext report %+v", r)
	}

	// Outbound: the client-side inspector answers a denied request itself.
	echo := echoServer(t)
	out := listenLocal(t)
	rep := newReports()
	proxy, err := NewOutbound(OutboundConfig{
		Clock: m.in.cfg.Clock, Log: quietLog(), Listener: out,
		OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) { return netip.MustParseAddrPort("10.96.0.1:80"), nil },
		Resolver: resolverFunc(func(context.Context, netip.AddrPort, netip.AddrPort) (Route, error) {
			return Route{Kind: RouteTunnel, Peer: m.peer, Authority: fmt.Sprintf(":%d", echo.Port)}, nil
		}),
		Tunnel: m.client, Report: rep.add,
		Inspect: func(_ context.Context, s StreamInfo) StreamObserver {
			if s.Direction != Outbound || s.Destination != m.peer.ID {
				t.Errorf("outbound inspector got %+v", s)
			}
			return &fakeObserver{reply: []byte("no")}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- proxy.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c, err = net.Dial("tcp", out.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte("EVIL"))
	got, _ = io.ReadAll(c)
	c.Close()
	if string(got) != "no" {
		t.Fatalf("outbound denied request answered %q, want the reply only", got)
	}
	if r := rep.next(t); r.Reason != ReasonDenied {
		t.Fatalf("outbound report %+v", r)
	}
}
