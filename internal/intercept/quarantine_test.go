package intercept_test

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/intercept"
	"github.com/meshguard/meshguard/internal/intercept/nstest"
)

// echoServer serves an echo on ns:port (all addresses) until the test ends.
func echoServer(t *testing.T, ns string, port int) {
	t.Helper()
	var ln net.Listener
	if err := intercept.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort("::", itoa(port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
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
}

func itoa(n int) string { return strconv.Itoa(n) }

// dialMarked opens a TCP connection from inside ns carrying SO_MARK mark (0: none).
func dialMarked(ns string, to netip.AddrPort, mark int) (net.Conn, error) {
	var c net.Conn
	err := intercept.Do(ns, func() (err error) {
		d := net.Dialer{Timeout: 400 * time.Millisecond, Control: intercept.MarkControl(mark)}
		c, err = d.Dial("tcp", to.String())
		return err
	})
	return c, err
}

func echoOnce(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("x")); err != nil {
		return err
	}
	_, err := c.Read(make([]byte, 1))
	return err
}

// TestQuarantineAllowsSidecarChannel: the sidecar's marked connection to the controller
// survives quarantine and new ones can be opened; unmarked traffic to the controller, any
// traffic elsewhere, and established flows elsewhere are cut.
func TestQuarantineAllowsSidecarChannel(t *testing.T) {
	p := nstest.NewPair(t)
	const mark = 0x539
	ctl, ctl6, other := netip.AddrPortFrom(p.BIP, 7000), netip.AddrPortFrom(p.BIP6, 7000), netip.AddrPortFrom(p.BIP, 7002)
	echoServer(t, p.B, 7000)
	echoServer(t, p.B, 7002)

	marked, err := dialMarked(p.A, ctl, mark)
	if err != nil {
		t.Fatal(err)
	}
	defer marked.Close()
	elsewhere, err := dialMarked(p.A, other, mark)
	if err != nil {
		t.Fatal(err)
	}
	defer elsewhere.Close()
	for _, c := range []net.Conn{marked, elsewhere} {
		if err := echoOnce(c); err != nil {
			t.Fatalf("before quarantine %v: %v", c.RemoteAddr(), err)
		}
	}

	res, err := intercept.QuarantineWith(p.A, intercept.QuarantineOptions{AllowMark: mark, AllowTo: []netip.AddrPort{ctl, ctl6}})
	if err != nil {
		t.Fatalf("quarantine: %v", err)
	}
	t.Cleanup(func() { _ = intercept.Release(p.A) })
	if res.SocketsKilled != 1 {
		t.Errorf("sockets killed = %d, want 1 (the flow to %v; the controller channel kept)", res.SocketsKilled, other)
	}
	for i := range 3 { // several round trips: the kept conntrack entry carries the replies
		if err := echoOnce(marked); err != nil {
			t.Fatalf("marked controller channel after quarantine (round %d): %v", i, err)
		}
	}
	if err := echoOnce(elsewhere); err == nil || isTimeoutErr(err) {
		t.Fatalf("established flow to %v after quarantine: %v, want it cut at once", other, err)
	}
	for _, to := range []netip.AddrPort{ctl, ctl6} {
		c, err := dialMarked(p.A, to, mark)
		if err != nil {
			t.Fatalf("new marked connection to %v in quarantine: %v", to, err)
		}
		if err := echoOnce(c); err != nil {
			t.Fatalf("new marked connection to %v in quarantine: echo: %v", to, err)
		}
		c.Close()
	}
	if c, err := dialMarked(p.A, ctl, 0); err == nil {
		c.Close()
		t.Fatalf("unmarked connection to the controller %v succeeded from a quarantined pod", ctl)
	}
	if c, err := dialMarked(p.A, other, mark); err == nil {
		c.Close()
		t.Fatalf("marked connection to %v (not allowed) succeeded from a quarantined pod", other)
	}
	if c, err := dialMarked(p.A, netip.AddrPortFrom(p.BIP, 7001), mark); err == nil {
		c.Close()
		t.Fatal("marked connection to another port of the controller's address succeeded")
	}
	// The controller cannot open a connection into the pod from its allowed port's address.
	var in net.Conn
	derr := intercept.Do(p.B, func() (err error) {
		d := net.Dialer{Timeout: 300 * time.Millisecond}
		in, err = d.Dial("tcp", netip.AddrPortFrom(p.AIP, 22).String())
		return err
	})
	if derr == nil {
		in.Close()
		t.Fatal("inbound connection into a quarantined pod succeeded")
	}
}

func TestQuarantineOptionsValidation(t *testing.T) {
	if _, err := intercept.QuarantineWith("", intercept.QuarantineOptions{AllowTo: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:1")}}); err == nil {
		t.Error("AllowTo without AllowMark accepted")
	}
	if _, err := intercept.QuarantineWith("", intercept.QuarantineOptions{AllowMark: 1, AllowTo: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:1")}}); err == nil {
		t.Error("unspecified AllowTo address accepted")
	}
}
