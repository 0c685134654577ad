package lab

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/meshguard/meshguard/internal/intercept"
)

// TestDialInReachesListenerInNetns checks the endpoint probe of meshed pods: dialIn connects
// to a listener that exists only on the loopback of the given netns, and leaves the caller in
// the host's netns.
func TestDialInReachesListenerInNetns(t *testing.T) {
	path, ns := testNetns(t, "mgtest-dial-")
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := intercept.Do(path, func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	want, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dialIn(path)(ctx, ln.Addr().String())
	if err != nil {
		t.Fatalf("dialIn: %v", err)
	}
	defer c.Close()
	// Only a connection made inside the netns reaches this listener.
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	sc, err := ln.Accept()
	if err != nil {
		t.Fatalf("the listener in the netns saw no connection: %v", err)
	}
	sc.Close()
	if now, _ := os.Readlink("/proc/self/ns/net"); now != want {
		t.Fatalf("host netns changed: %s → %s", want, now)
	}

	missing := path + "-missing"
	if _, err := dialIn(missing)(ctx, ln.Addr().String()); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("dialIn into a missing netns: err %v, want one naming %s", err, missing)
	}
}
