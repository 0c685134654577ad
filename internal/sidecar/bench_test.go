package sidecar

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	mgcap "github.com/meshguard/meshguard/internal/capture"
	"github.com/meshguard/meshguard/internal/dpi"
)

// sinkServer reads until EOF, then answers one byte and closes: the stream's end proves every
// byte arrived.
func sinkServer(b *testing.B) *net.TCPAddr {
	return serveLocal(b, func(c net.Conn) {
		_, _ = io.Copy(io.Discard, c)
		_, _ = c.Write([]byte{1})
	})
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

// httpApp answers every HTTP/1.1 request on a keep-alive connection with a 1 KB body, like
// fortio's /echo?size=1024 in bench/mesh.sh.
func httpApp(b *testing.B) *net.TCPAddr {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\n\r\n" + strings.Repeat("x", 1024))
	return serveLocal(b, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})
}

// BenchmarkMeshHTTPPaced is bench/mesh.sh in one process: 32 keep-alive HTTP/1.1 connections
// sending GETs for 1 KB at a fixed total rate (2,000/s) through each path, reporting the
// process's CPU time per request (client and app included: subtract direct's for the
// sidecars' share) and latency percentiles. The paced rate matters: at a fixed rate the
// proxies' goroutines park and wake for every request, which a back-to-back loop hides.
// The inspected variants add, layer by layer, what the runtime wires: the policy and DPI,
// the capture recorders, then threat detection (built-in detectors, a protect-mode policy):
// "inspected" is all of it, as in a sidecar.
// Run with a fixed count: -bench MeshHTTPPaced -benchtime 6000x.
func BenchmarkMeshHTTPPaced(b *testing.B) {
	app := httpApp(b)
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		b.Fatal(err)
	}
	view, index := enforceViewOf(b, fmt.Sprintf(threatPolicy, "protect", "", app.Port))
	mgr, err := mgcap.New(mgcap.Config{Dir: b.TempDir(), Clock: clockwork.NewRealClock(), Log: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	th := newTestThreats(b, nil, mgr, nil, nil)
	th.Apply(index().Snapshot(), view.Load().pol.Set())
	record := func(next Inspector) Inspector { return CaptureInspector(mgr, "shop/redis", th.newConnID, nil, next) }
	// Each inspected variant adds one layer of what the runtime wires, to show its share.
	variants := []struct {
		name    string
		in, out Inspector
	}{
		{"sidecar-pair", nil, nil},
		{"sidecar-pair-policy-dpi", ThreatInspector(eng, view, index, nil), DPIInspector(eng)},
		{"sidecar-pair-policy-dpi-capture", record(ThreatInspector(eng, view, index, nil)), record(DPIInspector(eng))},
		{"sidecar-pair-inspected", record(ThreatInspector(eng, view, index, th)), record(DPIInspector(eng))},
	}
	paths := map[string]func() (io.ReadWriteCloser, error){
		"direct": func() (io.ReadWriteCloser, error) { return net.Dial("tcp", app.String()) },
	}
	names := []string{"direct"}
	for _, v := range variants {
		var opts []meshOpt
		if v.in != nil {
			opts = append(opts, func(c *InboundConfig) { c.Inspect = v.in })
		}
		m := newMesh(b, opts...)
		ln := listenLocal(b)
		out, err := NewOutbound(OutboundConfig{
			Clock: clockwork.NewRealClock(), Log: quietLog(), Listener: ln,
			OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) {
				return netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), uint16(app.Port)), nil
			},
			Resolver: resolverFunc(func(context.Context, netip.AddrPort, netip.AddrPort) (Route, error) {
				return Route{Kind: RouteTunnel, Peer: m.peer, Authority: fmt.Sprintf(":%d", app.Port)}, nil
			}),
			Tunnel: m.client, Inspect: v.out,
		})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = out.Run(ctx); close(done) }()
		b.Cleanup(func() { cancel(); <-done })
		paths[v.name] = func() (io.ReadWriteCloser, error) { return net.Dial("tcp", ln.Addr().String()) }
		names = append(names, v.name)
	}
	const conns, rate = 32, 2000
	req := []byte("GET /echo?size=1024 HTTP/1.1\r\nHost: app-mesh.bench.svc.cluster.local:8080\r\nUser-Agent: fortio.org/fortio-1.68.2\r\n\r\n")
	for _, name := range names {
		open := paths[name]
		b.Run(name, func(b *testing.B) {
			ss := make([]io.ReadWriteCloser, conns)
			for i := range ss {
				s, err := open()
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				ss[i] = s
			}
			lat := make([][]time.Duration, conns)
			var ru0, ru1 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.ResetTimer()
			start := time.Now()
			interval := time.Second * conns / rate
			var wg sync.WaitGroup
			errs := make(chan error, conns)
			for i := range conns {
				n := b.N / conns
				if i < b.N%conns {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					br := bufio.NewReader(ss[i])
					next := start.Add(interval * time.Duration(i) / conns)
					for range n {
						if d := time.Until(next); d > 0 {
							time.Sleep(d) // pacing: the fixed request rate under test
						}
						t0 := time.Now()
						if _, err := ss[i].Write(req); err != nil {
							errs <- err
							return
						}
						resp, err := http.ReadResponse(br, nil)
						if err == nil {
							_, err = io.Copy(io.Discard, resp.Body)
						}
						if err != nil {
							errs <- err
							return
						}
						lat[i] = append(lat[i], time.Since(t0))
						next = next.Add(interval)
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			select {
			case err := <-errs:
				b.Fatal(err)
			default:
			}
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			var all []time.Duration
			for _, l := range lat {
				all = append(all, l...)
			}
			slices.Sort(all)
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/req")
			b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
		})
	}
}
