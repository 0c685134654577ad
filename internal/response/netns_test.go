package response

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/intercept"
	"github.com/meshguard/meshguard/internal/intercept/nstest"
	"github.com/meshguard/meshguard/internal/policy"
)

// TestEngineQuarantinesRealNetns drives a dns-tunnel event through the engine with the real
// nftables quarantine in a namespace pair: the established connection from the "pod" is cut,
// new ones fail, release restores them.
func TestEngineQuarantinesRealNetns(t *testing.T) {
	p := nstest.NewPair(t) // skips unless root
	var ln net.Listener
	if err := intercept.Do(p.B, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(p.BIP.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	dial := func() (net.Conn, error) {
		var c net.Conn
		err := intercept.Do(p.A, func() (err error) {
			c, err = net.DialTimeout("tcp", ln.Addr().String(), time.Second)
			return err
		})
		return c, err
	}
	established, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer established.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := make(chanSink, 10)
	eng, err := New(Config{Clock: clockwork.NewRealClock(), Log: slog.New(slog.DiscardHandler), Events: out, Registry: prometheus.NewRegistry(),
		Quarantiner: NetnsQuarantiner{NetnsPath: func(ns, pod string) (string, error) {
			if ns+"/"+pod != "lab/tunnel-client" {
				return "", fmt.Errorf("unknown pod %s/%s", ns, pod)
			}
			return p.A, nil
		}}})
	if err != nil {
		t.Fatal(err)
	}
	eng.SetRules([]policy.ResponseRule{rule("", "tunnel", policy.EventMatch{Kind: "threat", Name: "dns-tunnel"}, "quarantine")})
	go eng.Run(ctx)
	eng.Handle(ctx, Input{Event: events.Event{Kind: events.KindThreat, Name: "dns-tunnel", Severity: events.SeverityHigh,
		Source: events.Endpoint{Workload: "lab/tunnel-client"}}})
	if a := <-out; a.Name != "quarantine.applied" {
		t.Fatalf("audit %+v", a)
	}
	if ev := <-out; ev.Action != "alert,quarantine" {
		t.Fatalf("threat event action %q", ev.Action)
	}
	_ = established.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := established.Write([]byte("x")); err == nil {
		if _, err := established.Read(make([]byte, 1)); err == nil {
			t.Fatal("established connection still works after quarantine")
		}
	}
	if c, err := dial(); err == nil {
		c.Close()
		t.Fatal("new connection from a quarantined pod succeeded")
	}
	if err := eng.Release(ctx, "lab", "tunnel-client"); err != nil {
		t.Fatal(err)
	}
	c, err := dial()
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	c.Close()
	if err := eng.Release(ctx, "lab", "nope"); err == nil {
		t.Fatal("release of an unknown pod must fail")
	}
}
