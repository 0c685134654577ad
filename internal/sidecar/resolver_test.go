package sidecar

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	"github.com/meshguard/meshguard/internal/xds"
)

func testIndex(t *testing.T, egress xdsv1.EgressMode, mtls xdsv1.MTLSMode) *xds.Index {
	t.Helper()
	web := "spiffe://cluster.local/ns/shop/sa/web"
	x, err := xds.NewIndex(&xdsv1.Snapshot{
		Self: &xdsv1.Workload{Namespace: "shop", Name: "client", Ips: []string{"10.0.0.1"}, TunnelPort: 15008, SpiffeId: "spiffe://cluster.local/ns/shop/sa/client"},
		Peers: []*xdsv1.Workload{
			{Namespace: "shop", Name: "web-0", Ips: []string{"10.0.0.2"}, TunnelPort: 15008, SpiffeId: web},
			{Namespace: "legacy", Name: "db", Ips: []string{"10.0.0.9"}},
		},
		Services: []*xdsv1.Service{{
			Namespace: "shop", Name: "web", Vips: []string{"10.96.0.10"},
			Ports: []*xdsv1.ServicePort{{Port: 80, TargetPort: 8080}},
			Endpoints: []*xdsv1.Endpoint{
				{Ip: "10.0.0.2", SpiffeId: web, TunnelPort: 15008, Workload: "shop/web-0"},
				{Ip: "10.0.0.3", SpiffeId: web, TunnelPort: 15008, Workload: "shop/web-1"},
				{Ip: "10.0.0.4", Workload: "shop/web-legacy"},
			},
		}},
		Externals:     []*xdsv1.External{{Namespace: "shop", Name: "payments", Cidrs: []string{"203.0.113.0/24"}, Ports: []uint32{443}}},
		EgressMode:    egress,
		NamespaceMtls: map[string]xdsv1.MTLSMode{"shop": mtls},
	})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestIndexResolver(t *testing.T) {
	var cur atomic.Pointer[xds.Index]
	ready := make(chan struct{})
	var events []EgressEvent
	r, err := NewIndexResolver(IndexResolverConfig{
		Current: cur.Load, Ready: ready, OnEgress: func(e EgressEvent) { events = append(events, e) },
	})
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddrPort("10.0.0.1:40000")

	// Not ready: the app's connection waits, bounded.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, err = r.Resolve(ctx, src, netip.MustParseAddrPort("10.96.0.10:80"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("before ready: %v", err)
	}
	cur.Store(testIndex(t, xdsv1.EgressMode_EGRESS_MODE_REGISTRY_ONLY, xdsv1.MTLSMode_MTLS_MODE_PERMISSIVE))
	close(ready)
	if InboundMode(cur.Load()) != Permissive {
		t.Fatal("shop is PERMISSIVE in the snapshot")
	}

	// Service VIP: round robin over the endpoints, meshed ones through their tunnel.
	seen := map[string]int{}
	for range 6 {
		rt, err := r.Resolve(context.Background(), src, netip.MustParseAddrPort("10.96.0.10:80"))
		if err != nil {
			t.Fatal(err)
		}
		switch rt.Kind {
		case RouteTunnel:
			if rt.Authority != ":8080" || rt.Peer.ID.String() != "spiffe://cluster.local/ns/shop/sa/web" {
				t.Fatalf("tunnel route %+v", rt)
			}
			seen[rt.Peer.Addr]++
		case RoutePassthrough:
			seen[rt.Dest.String()]++
		}
	}
	if seen["10.0.0.2:15008"] != 2 || seen["10.0.0.3:15008"] != 2 || seen["10.0.0.4:8080"] != 2 {
		t.Fatalf("round robin: %v", seen)
	}

	// Pod IP of a meshed workload: its sidecar, same port; of an unmeshed one: direct.
	rt, err := r.Resolve(context.Background(), src, netip.MustParseAddrPort("10.0.0.2:9000"))
	if err != nil || rt.Kind != RouteTunnel || rt.Peer.Addr != "10.0.0.2:15008" || rt.Authority != ":9000" {
		t.Fatalf("pod IP route %+v, %v", rt, err)
	}
	if rt, err := r.Resolve(context.Background(), src, netip.MustParseAddrPort("10.0.0.9:5432")); err != nil || rt.Kind != RoutePassthrough {
		t.Fatalf("unmeshed workload route %+v, %v", rt, err)
	}

	// Egress: registered external allowed, anything else denied under REGISTRY_ONLY; both evented.
	if rt, err := r.Resolve(context.Background(), src, netip.MustParseAddrPort("203.0.113.7:443")); err != nil || rt.Kind != RoutePassthrough {
		t.Fatalf("registered external: %+v, %v", rt, err)
	}
	if _, err := r.Resolve(context.Background(), src, netip.MustParseAddrPort("198.51.100.1:443")); !errors.Is(err, ErrEgressDenied) {
		t.Fatalf("unregistered egress: %v", err)
	}
	if len(events) != 2 || !events[0].Allowed || events[0].External != "shop/payments" || events[1].Allowed {
		t.Fatalf("egress events %+v", events)
	}

	cur.Store(testIndex(t, xdsv1.EgressMode_EGRESS_MODE_ALLOW_ANY, xdsv1.MTLSMode_MTLS_MODE_STRICT))
	if rt, err := r.Resolve(context.Background(), src, netip.MustParseAddrPort("198.51.100.1:443")); err != nil || rt.Kind != RoutePassthrough {
		t.Fatalf("ALLOW_ANY egress: %+v, %v", rt, err)
	}
	if len(events) != 3 || !events[2].Allowed || InboundMode(cur.Load()) != Strict {
		t.Fatalf("ALLOW_ANY event %+v", events)
	}
}

func TestConnReportProto(t *testing.T) {
	start := time.Unix(1700000000, 5)
	r := ConnReport{
		Direction: Inbound, Authenticated: true,
		SourceAddr: netip.MustParseAddrPort("10.0.0.1:40000"), DestAddr: netip.MustParseAddrPort("127.0.0.1:8080"),
		BytesSent: 10, BytesReceived: 20, Start: start, Duration: time.Second, Reason: ReasonClosed,
	}
	p := r.Proto()
	if p.GetDirection() != "inbound" || p.GetDestinationPort() != 8080 || p.GetDestinationAddr() != "127.0.0.1" ||
		p.GetSourceAddr() != "10.0.0.1:40000" || p.GetBytesReceived() != 20 || p.GetStartUnixNano() != start.UnixNano() ||
		p.GetDurationNanos() != int64(time.Second) || p.GetCloseReason() != "closed" || p.GetSourceSpiffeId() != "" {
		t.Fatalf("proto %v", p)
	}
}

func TestMetrics(t *testing.T) {
	m := newMesh(t)
	reg := prometheus.NewRegistry()
	met, err := NewMetrics(reg, m.in)
	if err != nil {
		t.Fatal(err)
	}
	met.Observe(ConnReport{Direction: Inbound, Authenticated: true, Reason: ReasonClosed, BytesSent: 3, BytesReceived: 5, Duration: time.Millisecond})
	met.Observe(ConnReport{Direction: Inbound, Reason: ReasonStrictRefuse})
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, f := range fams {
		for _, mt := range f.GetMetric() {
			key := f.GetName()
			for _, l := range mt.GetLabel() {
				key += "," + l.GetValue()
			}
			values[key] = mt.GetCounter().GetValue()
		}
	}
	if values["meshguard_sidecar_connections_total,true,inbound,closed"] != 1 ||
		values["meshguard_sidecar_connections_total,false,inbound,strict-refuse"] != 1 ||
		values["meshguard_sidecar_bytes_total,inbound,received"] != 5 {
		t.Fatalf("metrics %v", values)
	}
	if _, ok := values["meshguard_sidecar_tunnel_handshake_failures_total"]; !ok {
		t.Fatalf("inbound counters missing: %v", values)
	}
}
