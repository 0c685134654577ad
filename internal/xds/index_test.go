package xds

import (
	"net/netip"
	"strings"
	"testing"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

func TestIndexLookups(t *testing.T) {
	s := goodSnapshot()
	s.Services[0].Ports = append(s.Services[0].Ports, &xdsv1.ServicePort{Port: 80, TargetPort: 8080})
	s.Services[0].Endpoints = append(s.Services[0].Endpoints, &xdsv1.Endpoint{Ip: "10.0.0.9", Workload: "shop/legacy-0"})
	s.DefaultMtls = xdsv1.MTLSMode_MTLS_MODE_UNSPECIFIED
	x, err := NewIndex(s)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := x.Service(netip.MustParseAddrPort("10.96.0.10:80"))
	if !ok || r.Service.GetName() != "cache" || len(r.Backends) != 2 {
		t.Fatalf("VIP:80 -> %+v %v", r, ok)
	}
	b := r.Backends[0]
	if b.Addr != netip.MustParseAddrPort("10.0.0.3:8080") || b.Tunnel != netip.MustParseAddrPort("10.0.0.3:15008") ||
		b.ID.String() != "spiffe://test.local/ns/shop/sa/cache" || !b.Meshed() {
		t.Fatalf("meshed backend %+v", b)
	}
	if u := r.Backends[1]; u.Meshed() || !u.ID.IsZero() || u.Addr != netip.MustParseAddrPort("10.0.0.9:8080") {
		t.Fatalf("unmeshed backend %+v", u)
	}
	if r, ok := x.Service(netip.MustParseAddrPort("10.96.0.10:6379")); !ok || r.Backends[0].Addr.Port() != 6379 {
		t.Fatal("target port 0 must mean the service port")
	}
	if _, ok := x.Service(netip.MustParseAddrPort("10.96.0.10:81")); ok {
		t.Fatal("unknown port resolved")
	}
	// IPv4-mapped IPv6 (a dual-stack socket's view) resolves like IPv4.
	if _, ok := x.Service(netip.MustParseAddrPort("[::ffff:10.96.0.10]:80")); !ok {
		t.Fatal("mapped address not resolved")
	}
	if w, ok := x.Workload(netip.MustParseAddr("10.0.0.3")); !ok || w.GetName() != "cache-0" {
		t.Fatalf("peer by IP: %v %v", w, ok)
	}
	if e, ok := x.Endpoint(netip.MustParseAddr("10.0.0.3")); !ok || e.GetSpiffeId() != "spiffe://test.local/ns/shop/sa/cache" || e.GetTunnelPort() != 15008 {
		t.Fatalf("endpoint by IP: %v %v", e, ok)
	}
	if w, ok := x.Workload(netip.MustParseAddr("10.0.0.2")); !ok || w != x.Self() {
		t.Fatal("self by IP")
	}
	if e, ok := x.External(netip.MustParseAddrPort("151.101.1.1:443")); !ok || e.GetName() != "pypi" {
		t.Fatal("external by CIDR")
	}
	if _, ok := x.External(netip.MustParseAddrPort("151.101.1.1:80")); ok {
		t.Fatal("external matched an unlisted port")
	}
	if x.MTLS("legacy") != xdsv1.MTLSMode_MTLS_MODE_PERMISSIVE || x.MTLS("shop") != xdsv1.MTLSMode_MTLS_MODE_STRICT {
		t.Fatal("mtls modes: legacy permissive, others strict by default")
	}
	if x.Egress() != xdsv1.EgressMode_EGRESS_MODE_REGISTRY_ONLY {
		t.Fatal("egress default must be REGISTRY_ONLY")
	}
}

func TestIndexRefusesConflictingVIPs(t *testing.T) {
	s := goodSnapshot()
	dup := &xdsv1.Service{Namespace: "shop", Name: "other", Vips: []string{"10.96.0.10"}, Ports: []*xdsv1.ServicePort{{Port: 6379}}}
	s.Services = append(s.Services, dup)
	if _, err := NewIndex(s); err == nil || !strings.Contains(err.Error(), "both claim 10.96.0.10:6379") {
		t.Fatalf("conflicting VIP: %v", err)
	}
}

func BenchmarkIndexService(b *testing.B) {
	x, err := NewIndex(goodSnapshot())
	if err != nil {
		b.Fatal(err)
	}
	dst := netip.MustParseAddrPort("10.96.0.10:6379")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := x.Service(dst); !ok {
			b.Fatal("not found")
		}
	}
}
