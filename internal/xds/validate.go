package xds

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// Validate checks a snapshot's transport-level shape before a sidecar applies it: addresses
// parse, identities are SPIFFE IDs, ports are in range, enums are known. The policy bytes are
// opaque here; the Applier validates them. Errors name the field, so a NACK tells the
// operator what the controller sent wrong.
func Validate(s *xdsv1.Snapshot) error {
	if s == nil {
		return errors.New("snapshot: missing")
	}
	if s.GetSelf() == nil {
		return errors.New("snapshot: self: missing (the sidecar's own workload)")
	}
	if err := validateWorkload(s.GetSelf()); err != nil {
		return fmt.Errorf("snapshot: self: %w", err)
	}
	for i, w := range s.GetPeers() {
		if err := validateWorkload(w); err != nil {
			return fmt.Errorf("snapshot: peers[%d]: %w", i, err)
		}
	}
	for i, svc := range s.GetServices() {
		if err := validateService(svc); err != nil {
			return fmt.Errorf("snapshot: services[%d] %s/%s: %w", i, svc.GetNamespace(), svc.GetName(), err)
		}
	}
	for ns, m := range s.GetNamespaceMtls() {
		if _, ok := xdsv1.MTLSMode_name[int32(m)]; !ok {
			return fmt.Errorf("snapshot: namespace_mtls[%q]: unknown mode %d", ns, m)
		}
	}
	if _, ok := xdsv1.MTLSMode_name[int32(s.GetDefaultMtls())]; !ok {
		return fmt.Errorf("snapshot: default_mtls: unknown mode %d", s.GetDefaultMtls())
	}
	if _, ok := xdsv1.EgressMode_name[int32(s.GetEgressMode())]; !ok {
		return fmt.Errorf("snapshot: egress_mode: unknown mode %d", s.GetEgressMode())
	}
	for i, e := range s.GetExternals() {
		for _, c := range e.GetCidrs() {
			if _, err := netip.ParsePrefix(c); err != nil {
				return fmt.Errorf("snapshot: externals[%d] %s: cidr %q: %w", i, e.GetName(), c, err)
			}
		}
		for _, p := range e.GetPorts() {
			if p == 0 || p > 65535 {
				return fmt.Errorf("snapshot: externals[%d] %s: port %d out of range 1-65535", i, e.GetName(), p)
			}
		}
	}
	if f := s.GetPolicyFormat(); len(s.GetPolicy()) > 0 && f == "" {
		return errors.New("snapshot: policy_format: required with a policy (e.g. \"yaml\" or \"json\")")
	}
	return nil
}

func validateWorkload(w *xdsv1.Workload) error {
	if w.GetNamespace() == "" || w.GetName() == "" {
		return errors.New("namespace and name are required")
	}
	if w.GetSpiffeId() != "" {
		if _, err := spiffeid.FromString(w.GetSpiffeId()); err != nil {
			return fmt.Errorf("spiffe_id %q: %w", w.GetSpiffeId(), err)
		}
	}
	for _, ip := range w.GetIps() {
		if _, err := netip.ParseAddr(ip); err != nil {
			return fmt.Errorf("ips: %q: %w", ip, err)
		}
	}
	if w.GetTunnelPort() > 65535 {
		return fmt.Errorf("tunnel_port %d out of range 0-65535", w.GetTunnelPort())
	}
	if _, ok := xdsv1.PolicyMode_name[int32(w.GetMode())]; !ok {
		return fmt.Errorf("mode: unknown mode %d", w.GetMode())
	}
	return nil
}

func validateService(s *xdsv1.Service) error {
	if s.GetNamespace() == "" || s.GetName() == "" {
		return errors.New("namespace and name are required")
	}
	for _, v := range s.GetVips() {
		if _, err := netip.ParseAddr(v); err != nil {
			return fmt.Errorf("vips: %q: %w", v, err)
		}
	}
	for _, p := range s.GetPorts() {
		if p.GetPort() == 0 || p.GetPort() > 65535 {
			return fmt.Errorf("ports: port %d out of range 1-65535", p.GetPort())
		}
		if p.GetTargetPort() > 65535 {
			return fmt.Errorf("ports: target_port %d out of range 0-65535", p.GetTargetPort())
		}
		switch p.GetProtocol() {
		case "", "tcp", "udp":
		default:
			return fmt.Errorf("ports: protocol %q: want tcp or udp", p.GetProtocol())
		}
	}
	for i, e := range s.GetEndpoints() {
		if _, err := netip.ParseAddr(e.GetIp()); err != nil {
			return fmt.Errorf("endpoints[%d]: ip %q: %w", i, e.GetIp(), err)
		}
		if e.GetTunnelPort() > 65535 {
			return fmt.Errorf("endpoints[%d]: tunnel_port %d out of range 0-65535", i, e.GetTunnelPort())
		}
		if e.GetTunnelPort() != 0 {
			// A meshed endpoint is only reachable if the sidecar knows whom to expect.
			if _, err := spiffeid.FromString(e.GetSpiffeId()); err != nil {
				return fmt.Errorf("endpoints[%d]: spiffe_id %q: %w (required when tunnel_port is set)", i, e.GetSpiffeId(), err)
			}
		}
	}
	return nil
}
