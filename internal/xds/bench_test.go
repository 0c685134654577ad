package xds

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// benchWorld returns snapshots of a realistic size: 20 services of 3 endpoints, 50 peers and
// 4 KiB of policy, shared between sidecars (only Self differs), as a controller's generator
// would share its compiled view.
//
// change() gives the first `affected` sidecars (web-0 .. web-<affected-1>) a new policy; the
// others keep theirs, as when one rule changes.
func benchWorld(affected int) (Generator, func()) {
	var services []*xdsv1.Service
	for i := 0; i < 20; i++ {
		svc := &xdsv1.Service{Namespace: "shop", Name: fmt.Sprintf("svc%d", i), Vips: []string{fmt.Sprintf("10.96.0.%d", i+1)},
			Ports: []*xdsv1.ServicePort{{Port: 80, TargetPort: 8080, Protocol: "tcp"}}}
		for j := 0; j < 3; j++ {
			svc.Endpoints = append(svc.Endpoints, &xdsv1.Endpoint{Ip: fmt.Sprintf("10.0.%d.%d", i, j+2),
				SpiffeId: fmt.Sprintf("spiffe://test.local/ns/shop/sa/svc%d", i), Workload: fmt.Sprintf("shop/svc%d-%d", i, j), TunnelPort: 15008})
		}
		services = append(services, svc)
	}
	var peers []*xdsv1.Workload
	for i := 0; i < 50; i++ {
		peers = append(peers, &xdsv1.Workload{Namespace: "shop", Name: fmt.Sprintf("peer-%d", i), SpiffeId: fmt.Sprintf("spiffe://test.local/ns/shop/sa/peer%d", i),
			Ips: []string{fmt.Sprintf("10.1.0.%d", i+2)}, Groups: []string{"shop/peers"}, TunnelPort: 15008})
	}
	var policy atomic.Pointer[[]byte]
	mk := func(rev int) []byte {
		p := make([]byte, 4096)
		for i := range p {
			p[i] = 'a' + byte((i+rev)%26)
		}
		return p
	}
	unaffected := mk(0)
	rev := 0
	change := func() {
		rev++
		p := mk(rev)
		policy.Store(&p)
	}
	change()
	return GeneratorFunc(func(_ context.Context, n Node) (*xdsv1.Snapshot, error) {
		pol := unaffected
		var i int
		if _, err := fmt.Sscanf(n.Workload, "web-%d", &i); err == nil && i < affected {
			pol = *policy.Load()
		}
		return &xdsv1.Snapshot{
			Self:     &xdsv1.Workload{Namespace: n.Namespace, Name: n.Workload, SpiffeId: n.ID.String(), Ips: []string{"10.2.0.2"}, Mode: xdsv1.PolicyMode_POLICY_MODE_PROTECT},
			Services: services, Peers: peers, EgressMode: xdsv1.EgressMode_EGRESS_MODE_REGISTRY_ONLY,
			Policy: pol, PolicyFormat: "yaml",
		}, nil
	}), change
}

// BenchmarkPushTo1000Sidecars measures one version bump until all 1,000 simulated sidecars
// (each its own gRPC connection over loopback, validating and applying) have ACKed it.
//
// all: every sidecar's snapshot changes (worst case, e.g. a new service). one-rule: 10 of the
// 1,000 change (one rule between two groups); the rest are up to date without a push.
func BenchmarkPushTo1000Sidecars(b *testing.B) {
	b.Run("all", func(b *testing.B) { benchPush(b, 1000) })
	b.Run("one-rule", func(b *testing.B) { benchPush(b, 10) })
}

func benchPush(b *testing.B, affected int) {
	const sidecars = 1000
	gen, change := benchWorld(affected)
	srv := startServer(b, "127.0.0.1:0", gen, nil)
	for i := 0; i < sidecars; i++ {
		startClient(b, ClientConfig{
			Conn: dial(b, srv.Addr, nil), Applier: ApplierFunc(func(uint64, *xdsv1.Snapshot) error { return nil }),
			Clock: clockwork.NewRealClock(), Log: discardLog(),
			SpiffeID: fmt.Sprintf("spiffe://test.local/ns/shop/sa/web%d", i), Namespace: "shop", Workload: fmt.Sprintf("web-%d", i),
		})
	}
	waitAllAcked(b, srv.Server, sidecars, srv.Version())
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	var lat []time.Duration
	for i := 0; i < b.N; i++ {
		change()
		start := time.Now()
		v := srv.Bump()
		waitAllAcked(b, srv.Server, sidecars, v)
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	// CPU time (server and all 1,000 clients) is the load-independent cost: on a shared
	// machine wall time mostly measures the other tenants.
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/bump")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms-p50-all-acked")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "ms-max-all-acked")
	b.ReportMetric(sidecars, "sidecars")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func waitAllAcked(b *testing.B, s *Server, n int, v uint64) {
	timeout := time.After(60 * time.Second)
	for {
		ch := s.Changed()
		if cur, conn, ok := s.Progress(); cur == v && conn == n && ok == n {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			_, conn, ok := s.Progress()
			b.Fatalf("version %d: %d of %d connected, %d acked within 60s", v, conn, n, ok)
		}
	}
}
