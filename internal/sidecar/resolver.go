package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	"github.com/meshguard/meshguard/internal/xds"
)

// ErrEgressDenied is the resolver refusing an unregistered destination under REGISTRY_ONLY.
var ErrEgressDenied = errors.New("egress to an unregistered destination denied (egress mode REGISTRY_ONLY; register it as an External)")

// EgressEvent is one connection to a destination outside the mesh, allowed or not; the sidecar
// turns it into an event either way.
type EgressEvent struct {
	Source, Dest netip.AddrPort
	Allowed      bool
	External     string // "namespace/name" of the registered External that allowed it, if any
	Mode         xdsv1.EgressMode
}

// IndexResolverConfig configures the Resolver backed by the sidecar's config snapshots.
type IndexResolverConfig struct {
	// Current returns the index of the last applied snapshot; nil before the first one.
	Current func() *xds.Index
	// Ready is closed once the sidecar has identity and config. Until then the app's outbound
	// connections wait (bounded by OutboundConfig.ResolveTimeout).
	Ready <-chan struct{}
	// OnEgress gets every egress decision; nil drops them. It must not block.
	OnEgress func(EgressEvent)
}

// IndexResolver maps original destinations with the current xds.Index: a service VIP to one
// of its endpoints (round robin), a pod IP to its workload's sidecar, anything else to egress.
type IndexResolver struct {
	cfg IndexResolverConfig
	rr  atomic.Uint64
}

// NewIndexResolver validates cfg.
func NewIndexResolver(cfg IndexResolverConfig) (*IndexResolver, error) {
	if cfg.Current == nil || cfg.Ready == nil {
		return nil, errors.New("index resolver: Current and Ready are required")
	}
	return &IndexResolver{cfg: cfg}, nil
}

// Resolve implements Resolver.
func (r *IndexResolver) Resolve(ctx context.Context, src, dst netip.AddrPort) (Route, error) {
	select {
	case <-r.cfg.Ready:
	default:
		select {
		case <-r.cfg.Ready:
		case <-ctx.Done():
			return Route{}, fmt.Errorf("sidecar not ready (no identity or config yet) after waiting: %w", ctx.Err())
		}
	}
	x := r.cfg.Current()
	if x == nil {
		return Route{}, errors.New("sidecar ready but has no config index")
	}
	if svc, ok := x.Service(dst); ok {
		if len(svc.Backends) == 0 {
			return Route{}, fmt.Errorf("service %s/%s port %d has no endpoints", svc.Service.GetNamespace(), svc.Service.GetName(), dst.Port())
		}
		b := svc.Backends[r.rr.Add(1)%uint64(len(svc.Backends))]
		if !b.Meshed() {
			return Route{Kind: RoutePassthrough, Dest: b.Addr}, nil
		}
		return Route{Kind: RouteTunnel, Peer: Peer{Addr: b.Tunnel.String(), ID: b.ID}, Authority: ":" + strconv.Itoa(int(b.Addr.Port()))}, nil
	}
	if w, ok := x.Workload(dst.Addr()); ok {
		if w.GetTunnelPort() == 0 || w == x.Self() {
			return Route{Kind: RoutePassthrough}, nil
		}
		id, err := spiffeid.FromString(w.GetSpiffeId())
		if err != nil {
			return Route{}, fmt.Errorf("workload %s/%s: spiffe_id %q: %w", w.GetNamespace(), w.GetName(), w.GetSpiffeId(), err)
		}
		tunnel := netip.AddrPortFrom(dst.Addr().Unmap(), uint16(w.GetTunnelPort()))
		return Route{Kind: RouteTunnel, Peer: Peer{Addr: tunnel.String(), ID: id}, Authority: ":" + strconv.Itoa(int(dst.Port()))}, nil
	}
	ev := EgressEvent{Source: src, Dest: dst, Mode: x.Egress()}
	if ext, ok := x.External(dst); ok {
		ev.Allowed, ev.External = true, ext.GetNamespace()+"/"+ext.GetName()
	} else {
		ev.Allowed = ev.Mode == xdsv1.EgressMode_EGRESS_MODE_ALLOW_ANY
	}
	if r.cfg.OnEgress != nil {
		r.cfg.OnEgress(ev)
	}
	if !ev.Allowed {
		return Route{}, fmt.Errorf("%v: %w", dst, ErrEgressDenied)
	}
	return Route{Kind: RoutePassthrough}, nil
}

// InboundMode is the inbound proxy's mode for the sidecar's own namespace in x; call SetMode
// with it after each applied snapshot.
func InboundMode(x *xds.Index) Mode {
	if x.MTLS(x.Self().GetNamespace()) == xdsv1.MTLSMode_MTLS_MODE_PERMISSIVE {
		return Permissive
	}
	return Strict
}
