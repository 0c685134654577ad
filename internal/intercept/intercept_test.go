package intercept_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/intercept"
	"github.com/meshguard/meshguard/internal/intercept/nstest"
	"golang.org/x/sys/unix"
)

const (
	appPort      = 8080
	excludedPort = 9090
	outPort      = 15001
	inPort       = 15006
	tunnelPort   = 15008
	dnsPort      = 15053
)

// hit is what a listener saw: its name and the original destination of the connection.
type hit struct {
	name string
	dst  netip.AddrPort
	err  error
}

// listen opens a TCP listener inside ns that reports every accepted connection on hits and
// answers with its name.
func listen(t *testing.T, ns, name string, port int, hits chan<- hit) {
	t.Helper()
	listenOn(t, ns, "0.0.0.0", name, port, hits)
}

func listenOn(t *testing.T, ns, host, name string, port int, hits chan<- hit) {
	t.Helper()
	var ln net.Listener
	err := intercept.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", name, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dst, derr := intercept.OriginalDst(c.(*net.TCPConn))
			hits <- hit{name: name, dst: dst, err: derr}
			_, _ = c.Write([]byte(name + "\n"))
			c.Close()
		}
	}()
}

// dial connects from inside ns, optionally with SO_MARK, and returns the first line answered.
func dial(t *testing.T, ns string, to netip.AddrPort, mark int) (string, error) {
	t.Helper()
	var (
		c   net.Conn
		err error
	)
	d := net.Dialer{Timeout: 2 * time.Second, Control: intercept.MarkControl(mark)}
	if derr := intercept.Do(ns, func() error {
		c, err = d.Dial("tcp", to.String())
		return nil
	}); derr != nil {
		t.Fatal(derr)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func expectHit(t *testing.T, hits <-chan hit, name string, dst netip.AddrPort) {
	t.Helper()
	select {
	case h := <-hits:
		if h.name != name {
			t.Fatalf("connection landed on %q, want %q", h.name, name)
		}
		if dst.IsValid() && h.err != nil {
			t.Fatalf("original destination on %s: %v", name, h.err)
		}
		if dst.IsValid() && h.dst != dst {
			t.Fatalf("original destination on %s = %v, want %v", name, h.dst, dst)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("no connection on %s", name)
	}
}

func baseConfig(ns string) intercept.Config {
	return intercept.Config{
		NetNSPath: ns, OutboundPort: outPort, InboundPort: inPort, TunnelPort: tunnelPort, DNSPort: dnsPort,
		ExcludeUIDs: []uint32{12345}, ExcludeMark: 0x539,
		ExcludeInboundPorts: []uint16{excludedPort}, ExcludeOutboundPorts: []uint16{excludedPort},
	}
}

func install(t *testing.T, cfg intercept.Config) *intercept.Rules {
	t.Helper()
	r, err := intercept.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Install(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Remove() })
	return r
}

func TestRedirect(t *testing.T) {
	p := nstest.NewPair(t)
	hits := make(chan hit, 16)
	// A is the client pod with a sidecar for outbound; B the server pod with inbound capture.
	listen(t, p.A, "outbound", outPort, hits)
	listen(t, p.B, "app", appPort, hits)
	listen(t, p.B, "excluded-app", excludedPort, hits)
	listen(t, p.B, "inbound", inPort, hits)
	listen(t, p.B, "tunnel", tunnelPort, hits)
	app := netip.AddrPortFrom(p.BIP, appPort)

	// Before any rule the app answers directly.
	if got, err := dial(t, p.A, app, 0); err != nil || got != "app" {
		t.Fatalf("without rules got %q, %v; want app", got, err)
	}
	expectHit(t, hits, "app", netip.AddrPort{})

	rulesA := install(t, baseConfig(p.A))
	install(t, baseConfig(p.B))

	t.Run("outbound lands on the outbound listener with the original destination", func(t *testing.T) {
		if got, err := dial(t, p.A, app, 0); err != nil || got != "outbound" {
			t.Fatalf("got %q, %v; want outbound", got, err)
		}
		expectHit(t, hits, "outbound", app)
	})
	t.Run("marked sidecar traffic bypasses outbound and reaches the tunnel port directly", func(t *testing.T) {
		if got, err := dial(t, p.A, netip.AddrPortFrom(p.BIP, tunnelPort), 0x539); err != nil || got != "tunnel" {
			t.Fatalf("got %q, %v; want tunnel", got, err)
		}
		expectHit(t, hits, "tunnel", netip.AddrPortFrom(p.BIP, tunnelPort))
	})
	t.Run("inbound to an app port lands on the inbound listener", func(t *testing.T) {
		// Marked, so A's outbound rule leaves it alone and B's inbound rule is what acts.
		if got, err := dial(t, p.A, app, 0x539); err != nil || got != "inbound" {
			t.Fatalf("got %q, %v; want inbound", got, err)
		}
		expectHit(t, hits, "inbound", app)
	})
	t.Run("excluded port is neither redirected out nor in", func(t *testing.T) {
		if got, err := dial(t, p.A, netip.AddrPortFrom(p.BIP, excludedPort), 0); err != nil || got != "excluded-app" {
			t.Fatalf("got %q, %v; want excluded-app", got, err)
		}
		expectHit(t, hits, "excluded-app", netip.AddrPort{})
	})
	t.Run("loopback is not redirected", func(t *testing.T) {
		listen(t, p.A, "local", appPort, hits)
		if got, err := dial(t, p.A, netip.MustParseAddrPort("127.0.0.1:8080"), 0); err != nil || got != "local" {
			t.Fatalf("got %q, %v; want local", got, err)
		}
		expectHit(t, hits, "local", netip.AddrPort{})
	})
	t.Run("dns is redirected to the dns port and answered through conntrack", func(t *testing.T) {
		var pc *net.UDPConn
		if err := intercept.Do(p.A, func() (err error) {
			// On loopback: the redirect delivers to 127.0.0.1 and the answer must leave
			// from there for conntrack to map it back to the resolver's address.
			pc, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: dnsPort})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		var c net.Conn
		if err := intercept.Do(p.A, func() (err error) { c, err = net.Dial("udp", netip.AddrPortFrom(p.BIP, 53).String()); return err }); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("query")); err != nil {
			t.Fatal(err)
		}
		_ = pc.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		n, src, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != "query" {
			t.Fatalf("dns listener got %q, %v", buf[:n], err)
		}
		// The answer goes back through conntrack and reaches the app as if from the resolver.
		if _, err := pc.WriteToUDPAddrPort([]byte("answer"), src); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err = c.Read(buf)
		if err != nil || string(buf[:n]) != "answer" {
			t.Fatalf("app got %q, %v; want the answer", buf[:n], err)
		}
	})
	t.Run("excluded uid bypasses", func(t *testing.T) {
		cfg := baseConfig(p.A)
		cfg.ExcludeUIDs = []uint32{uint32(unix.Geteuid())} // this test process is the "sidecar"
		install(t, cfg)
		if got, err := dial(t, p.A, app, 0); err != nil || got != "inbound" {
			t.Fatalf("got %q, %v; want inbound (A's outbound rule bypassed, B's inbound rule applied)", got, err)
		}
		expectHit(t, hits, "inbound", app)
	})
	t.Run("remove leaves no table", func(t *testing.T) {
		if err := rulesA.Remove(); err != nil {
			t.Fatal(err)
		}
		if err := rulesA.Remove(); err != nil {
			t.Fatalf("second remove: %v", err)
		}
		ok, err := intercept.TableExists(p.A, intercept.TableName)
		if err != nil || ok {
			t.Fatalf("table still present (%v, %v)", ok, err)
		}
	})
}

// TestRedirectIPv6 covers IPv6 and dual-stack listeners: the original destination must come
// back right for IPv6 and for IPv4 arriving on a [::] socket as a v4-mapped address.
func TestRedirectIPv6(t *testing.T) {
	p := nstest.NewPair(t)
	hits := make(chan hit, 8)
	listenOn(t, p.A, "::", "outbound", outPort, hits)
	listenOn(t, p.B, "::", "inbound", inPort, hits)
	install(t, baseConfig(p.A))
	install(t, baseConfig(p.B))
	for _, ip := range []netip.Addr{p.BIP6, p.BIP} {
		app := netip.AddrPortFrom(ip, appPort)
		if got, err := dial(t, p.A, app, 0); err != nil || got != "outbound" {
			t.Fatalf("%v: got %q, %v; want outbound", app, got, err)
		}
		expectHit(t, hits, "outbound", app)
		if got, err := dial(t, p.A, app, 0x539); err != nil || got != "inbound" {
			t.Fatalf("%v marked: got %q, %v; want inbound", app, got, err)
		}
		expectHit(t, hits, "inbound", app)
	}
}

func TestQuarantine(t *testing.T) {
	p := nstest.NewPair(t)
	// An echo server in B that keeps connections open.
	var ln net.Listener
	if err := intercept.Do(p.B, func() (err error) { ln, err = net.Listen("tcp", "[::]:7000"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1024)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	// One established flow per address family.
	var conns []net.Conn
	for _, ip := range []netip.Addr{p.BIP, p.BIP6} {
		var c net.Conn
		if err := intercept.Do(p.A, func() (err error) {
			c, err = net.DialTimeout("tcp", netip.AddrPortFrom(ip, 7000).String(), 2*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	echo := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		_, err := c.Read(make([]byte, 1))
		return err
	}
	for _, c := range conns {
		if err := echo(c); err != nil {
			t.Fatalf("echo before quarantine on %v: %v", c.RemoteAddr(), err)
		}
	}

	res, err := intercept.Quarantine(p.A)
	if err != nil {
		t.Fatalf("quarantine: %v", err)
	}
	t.Cleanup(func() { _ = intercept.Release(p.A) })
	if res.SocketsKilled != 2 {
		t.Errorf("sockets killed = %d, want the two established client sockets (IPv4 and IPv6)", res.SocketsKilled)
	}
	for _, c := range conns {
		if err := echo(c); err == nil || isTimeoutErr(err) {
			t.Fatalf("established flow to %v after quarantine: %v, want it cut at once", c.RemoteAddr(), err)
		}
	}
	if _, err := dial(t, p.A, netip.AddrPortFrom(p.BIP, 7000), 0); err == nil {
		t.Fatal("new outbound connection succeeded from a quarantined pod")
	}
	var d net.Dialer
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var derr error
	_ = intercept.Do(p.B, func() error {
		var cc net.Conn
		cc, derr = d.DialContext(ctx, "tcp", netip.AddrPortFrom(p.AIP, 22).String())
		if cc != nil {
			cc.Close()
		}
		return nil
	})
	if !errors.Is(derr, context.DeadlineExceeded) && !strings.Contains(derr.Error(), "timeout") {
		t.Fatalf("inbound to quarantined pod: %v, want a timeout (dropped, not refused)", derr)
	}
	// Loopback inside the quarantined pod keeps working, for forensics tools.
	hits := make(chan hit, 1)
	listen(t, p.A, "local", 7001, hits)
	if got, err := dial(t, p.A, netip.MustParseAddrPort("127.0.0.1:7001"), 0); err != nil || got != "local" {
		t.Fatalf("loopback in quarantine: %q, %v", got, err)
	}
	if err := intercept.Release(p.A); err != nil {
		t.Fatal(err)
	}
	if ok, err := intercept.TableExists(p.A, intercept.QuarantineTable); err != nil || ok {
		t.Fatalf("quarantine table after release: %v, %v", ok, err)
	}
	if err := intercept.Do(p.A, func() (err error) {
		c2, err := net.DialTimeout("tcp", netip.AddrPortFrom(p.BIP, 7000).String(), 2*time.Second)
		if err == nil {
			c2.Close()
		}
		return err
	}); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	for name, cfg := range map[string]intercept.Config{
		"missing ports":   {ExcludeUIDs: []uint32{1}},
		"no exclusion":    {OutboundPort: 1, InboundPort: 2, TunnelPort: 3},
		"duplicate ports": {OutboundPort: 1, InboundPort: 1, TunnelPort: 3, ExcludeUIDs: []uint32{1}},
	} {
		if _, err := intercept.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
