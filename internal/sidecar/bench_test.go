package sidecar

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/jonboulle/clockwork"
)

// sinkServer reads until EOF, then answers one byte and closes: the stream's end proves every
// byte arrived.
func sinkServer(b *testing.B) *net.TCPAddr {
	ln := listenLocal(b)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(io.Discard, c)
				_, _ = c.Write([]byte{1})
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// benchPaths are the three ways a byte stream can reach the app in one run: direct TCP, the
// tunnel client API, and the full sidecar pair (app -> outbound proxy -> tunnel -> inbound ->
// app), so their numbers are comparable.
func benchPaths(b *testing.B, app *net.TCPAddr) map[string]func() (io.ReadWriteCloser, error) {
	m := newMesh(b)
	ln := listenLocal(b)
	out, err := NewOutbound(OutboundConfig{
		Clock: clockwork.NewRealClock(), Log: quietLog(), Listener: ln,
		OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) { return netip.MustParseAddrPort("10.96.0.10:80"), nil },
		Resolver: resolverFunc(func(context.Context, netip.AddrPort, netip.AddrPort) (Route, error) {
			return Route{Kind: RouteTunnel, Peer: m.peer, Authority: fmt.Sprintf(":%d", app.Port)}, nil
		}),
		Tunnel: m.client,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = out.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return map[string]func() (io.ReadWriteCloser, error){
		"direct": func() (io.ReadWriteCloser, error) { return net.Dial("tcp", app.String()) },
		"tunnel": func() (io.ReadWriteCloser, error) {
			return m.client.Open(context.Background(), m.peer, fmt.Sprintf(":%d", app.Port))
		},
		"sidecar-pair": func() (io.ReadWriteCloser, error) { return net.Dial("tcp", ln.Addr().String()) },
	}
}

var benchOrder = []string{"direct", "tunnel", "sidecar-pair"}

func BenchmarkStreamThroughput(b *testing.B) {
	paths := benchPaths(b, sinkServer(b))
	chunk := make([]byte, 32<<10)
	for _, name := range benchOrder {
		open := paths[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(chunk)))
			s, err := open()
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			for b.Loop() {
				if _, err := s.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			closeWrite(s)
			if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
				b.Fatalf("sink did not confirm: %v", err)
			}
		})
	}
}

func BenchmarkStreamSetup(b *testing.B) {
	paths := benchPaths(b, echoServer(b))
	one := []byte{42}
	for _, name := range benchOrder {
		open := paths[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 1)
			for b.Loop() {
				s, err := open()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.Write(one); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(s, buf); err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
		})
	}
}

// BenchmarkStreamRoundTrip is the added latency of a request/response on an open connection
// (what a keep-alive HTTP client sees): 1 KiB each way.
func BenchmarkStreamRoundTrip(b *testing.B) {
	paths := benchPaths(b, echoServer(b))
	msg := make([]byte, 1024)
	for _, name := range benchOrder {
		open := paths[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			s, err := open()
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			buf := make([]byte, len(msg))
			for b.Loop() {
				if _, err := s.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(s, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
