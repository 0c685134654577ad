package xds

import (
	"fmt"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// Index is a read-only lookup view of one applied snapshot for the sidecar's data path:
// original destination -> service backends, pod IP -> workload, namespace -> mTLS mode. Build
// it in the Applier (an error there NACKs) and swap it atomically; lookups do not allocate.
type Index struct {
	snap      *xdsv1.Snapshot
	services  map[netip.AddrPort]*ServiceRoute
	workloads map[netip.Addr]*xdsv1.Workload
	endpoints map[netip.Addr]*xdsv1.Endpoint
	externals []external
}

// ServiceRoute is one service port and where connections to it go.
type ServiceRoute struct {
	Service  *xdsv1.Service
	Port     *xdsv1.ServicePort
	Backends []Backend
}

// Backend is one endpoint of a service port.
type Backend struct {
	Addr     netip.AddrPort // endpoint IP : target port (what the app ends up talking to)
	Tunnel   netip.AddrPort // endpoint IP : its sidecar's tunnel port; invalid if unmeshed
	ID       spiffeid.ID    // identity the endpoint's sidecar must present; zero if unmeshed
	Workload string         // "namespace/name"
}

// Meshed says whether the backend is reached through its sidecar's mTLS tunnel.
func (b Backend) Meshed() bool { return b.Tunnel.IsValid() }

type external struct {
	e        *xdsv1.External
	prefixes []netip.Prefix
}

// NewIndex builds the lookup tables; it validates s first.
func NewIndex(s *xdsv1.Snapshot) (*Index, error) {
	if err := Validate(s); err != nil {
		return nil, err
	}
	x := &Index{snap: s, services: map[netip.AddrPort]*ServiceRoute{}, workloads: map[netip.Addr]*xdsv1.Workload{},
		endpoints: map[netip.Addr]*xdsv1.Endpoint{}}
	for _, w := range append([]*xdsv1.Workload{s.GetSelf()}, s.GetPeers()...) {
		for _, ip := range w.GetIps() {
			x.workloads[netip.MustParseAddr(ip)] = w // validated
		}
	}
	for _, svc := range s.GetServices() {
		for _, e := range svc.GetEndpoints() {
			x.endpoints[netip.MustParseAddr(e.GetIp())] = e
		}
		for _, p := range svc.GetPorts() {
			if p.GetProtocol() == "udp" {
				continue // the sidecar intercepts TCP
			}
			target := p.GetTargetPort()
			if target == 0 {
				target = p.GetPort()
			}
			r := &ServiceRoute{Service: svc, Port: p}
			for _, e := range svc.GetEndpoints() {
				ip := netip.MustParseAddr(e.GetIp())
				b := Backend{Addr: netip.AddrPortFrom(ip, uint16(target)), Workload: e.GetWorkload()}
				if e.GetTunnelPort() != 0 {
					b.Tunnel = netip.AddrPortFrom(ip, uint16(e.GetTunnelPort()))
					b.ID = spiffeid.RequireFromString(e.GetSpiffeId()) // validated
				}
				r.Backends = append(r.Backends, b)
			}
			for _, vip := range svc.GetVips() {
				k := netip.AddrPortFrom(netip.MustParseAddr(vip), uint16(p.GetPort()))
				if prev, ok := x.services[k]; ok {
					return nil, fmt.Errorf("snapshot: services %s/%s and %s/%s both claim %s",
						prev.Service.GetNamespace(), prev.Service.GetName(), svc.GetNamespace(), svc.GetName(), k)
				}
				x.services[k] = r
			}
		}
	}
	for _, e := range s.GetExternals() {
		ex := external{e: e}
		for _, c := range e.GetCidrs() {
			ex.prefixes = append(ex.prefixes, netip.MustParsePrefix(c).Masked())
		}
		x.externals = append(x.externals, ex)
	}
	return x, nil
}

// Snapshot returns the snapshot the index was built from.
func (x *Index) Snapshot() *xdsv1.Snapshot { return x.snap }

// Self returns the sidecar's own workload.
func (x *Index) Self() *xdsv1.Workload { return x.snap.GetSelf() }

// Service returns the route for a service VIP:port.
func (x *Index) Service(dst netip.AddrPort) (*ServiceRoute, bool) {
	r, ok := x.services[netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())]
	return r, ok
}

// Workload returns the workload (self or a peer) that owns ip.
func (x *Index) Workload(ip netip.Addr) (*xdsv1.Workload, bool) {
	w, ok := x.workloads[ip.Unmap()]
	return w, ok
}

// Endpoint returns the service endpoint at ip, for connections addressed to a pod IP (e.g.
// through a headless service) whose workload is not among the peers: its identity and tunnel.
func (x *Index) Endpoint(ip netip.Addr) (*xdsv1.Endpoint, bool) {
	e, ok := x.endpoints[ip.Unmap()]
	return e, ok
}

// External returns the registered external destination covering dst (by CIDR and port).
// Destinations registered by DNS name only are matched by the caller, which knows the name.
func (x *Index) External(dst netip.AddrPort) (*xdsv1.External, bool) {
	ip := dst.Addr().Unmap()
	for i := range x.externals {
		ex := &x.externals[i]
		if !portListed(ex.e.GetPorts(), dst.Port()) {
			continue
		}
		for _, p := range ex.prefixes {
			if p.Contains(ip) {
				return ex.e, true
			}
		}
	}
	return nil, false
}

func portListed(ports []uint32, p uint16) bool {
	if len(ports) == 0 {
		return true
	}
	for _, q := range ports {
		if q == uint32(p) {
			return true
		}
	}
	return false
}

// MTLS returns the mTLS mode of a namespace; unspecified means STRICT.
func (x *Index) MTLS(namespace string) xdsv1.MTLSMode {
	m, ok := x.snap.GetNamespaceMtls()[namespace]
	if !ok || m == xdsv1.MTLSMode_MTLS_MODE_UNSPECIFIED {
		m = x.snap.GetDefaultMtls()
	}
	if m == xdsv1.MTLSMode_MTLS_MODE_UNSPECIFIED {
		return xdsv1.MTLSMode_MTLS_MODE_STRICT
	}
	return m
}

// Egress returns the egress mode; unspecified means REGISTRY_ONLY.
func (x *Index) Egress() xdsv1.EgressMode {
	if m := x.snap.GetEgressMode(); m != xdsv1.EgressMode_EGRESS_MODE_UNSPECIFIED {
		return m
	}
	return xdsv1.EgressMode_EGRESS_MODE_REGISTRY_ONLY
}
