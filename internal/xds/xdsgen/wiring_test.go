package xdsgen

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshguard/meshguard/internal/registry"
	"github.com/meshguard/meshguard/internal/xds"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// TestRegistryChangeReachesSidecarIndex is the controller and sidecar wiring in miniature:
// registry -> Generator -> Server (bumped by registry changes) -> Client -> Index.
func TestRegistryChangeReachesSidecarIndex(t *testing.T) {
	reg, _, g := setup(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := xds.NewServer(xds.ServerConfig{Generator: g, Clock: clockwork.NewRealClock(), Log: log,
		Metrics: prometheus.NewRegistry(), Listener: ln, AllowInsecure: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	defer func() {
		cancel()
		for i := 0; i < 3; i++ {
			<-done
		}
	}()
	go func() { srv.Run(ctx); done <- struct{}{} }()
	go func() { srv.BumpOn(ctx, reg.Changed); done <- struct{}{} }()

	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var index atomic.Pointer[xds.Index]
	applied := make(chan struct{}, 100)
	cl, err := xds.NewClient(xds.ClientConfig{Conn: cc, Clock: clockwork.NewRealClock(), Log: log,
		SpiffeID: "spiffe://test.local/ns/shop/sa/web", Namespace: "shop", Workload: "web-0",
		Applier: xds.ApplierFunc(func(_ uint64, s *xdsv1.Snapshot) error {
			x, err := xds.NewIndex(s)
			if err != nil {
				return err // NACK, keep the previous index
			}
			index.Store(x)
			applied <- struct{}{}
			return nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	go func() { cl.Run(ctx); done <- struct{}{} }()

	vip := netip.MustParseAddrPort("10.96.0.10:6379")
	backends := func() int {
		r, _ := index.Load().Service(vip)
		if r == nil {
			return 0
		}
		return len(r.Backends)
	}
	timeout := time.After(10 * time.Second)
	wait := func(n int) {
		for index.Load() == nil || backends() != n {
			select {
			case <-applied:
			case <-timeout:
				t.Fatalf("sidecar index has %d backends for %s, want %d", backends(), vip, n)
			}
		}
	}
	wait(2)
	if err := reg.UpsertWorkload(registry.Workload{Namespace: "shop", Name: "cache-1", IP: netip.MustParseAddr("10.0.0.5"), ServiceAccount: "cache", Labels: map[string]string{"app": "cache"}}); err != nil {
		t.Fatal(err)
	}
	wait(3)
}
