// Package xdsgen builds each sidecar's config snapshot from the controller's registry and
// policy: the xds.Generator the controller hands to xds.Server. The parts every sidecar shares
// (services with their endpoints, peer workloads, externals, the exported policy) are built
// once per registry version and policy set and reused; only the sidecar's own workload is
// built per call, so a version bump costs O(sidecars), not O(sidecars × workloads).
package xdsgen

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/registry"
	"github.com/meshguard/meshguard/internal/xds"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// Registry is what the generator reads from the registry; *registry.Registry implements it.
type Registry interface {
	Version() uint64
	Workload(namespace, name string) (registry.Workload, bool)
	Workloads() []registry.Workload
	Services() []registry.Service
	GroupsOf(namespace, name string) []string
}

// PolicySource returns the current policy set. A changed policy must be a new *Set (sets are
// treated as immutable once returned): the generator caches by pointer.
type PolicySource interface {
	PolicySet() *policy.Set
}

// Config configures a Generator; the zero value is not valid.
type Config struct {
	Registry Registry
	Policy   PolicySource
	// TunnelPort is the port every sidecar's mTLS tunnel listens on.
	TunnelPort uint32
	// HasSidecar says whether a workload runs a sidecar (reached through the tunnel); nil
	// means every workload does. Workloads without one are plaintext endpoints.
	HasSidecar func(registry.Workload) bool
	// NamespaceMTLS overrides DefaultMTLS per namespace (PERMISSIVE for migrating ones).
	NamespaceMTLS map[string]xdsv1.MTLSMode
	DefaultMTLS   xdsv1.MTLSMode // unspecified means STRICT
	Egress        xdsv1.EgressMode
	// DefaultMode is the mode of a group without a Group document (automatic groups the
	// registry made up); empty means discover, the registry's default.
	DefaultMode policy.Mode
	// TrustDomain is sent to sidecars, e.g. "cluster.local".
	TrustDomain string
}

func (c *Config) validate() error {
	if c.Registry == nil || c.Policy == nil {
		return errors.New("xdsgen: Registry and Policy are required")
	}
	if c.TunnelPort == 0 || c.TunnelPort > 65535 {
		return fmt.Errorf("xdsgen: TunnelPort %d out of range 1-65535 (the sidecars' tunnel listener port)", c.TunnelPort)
	}
	if c.DefaultMode == "" {
		c.DefaultMode = policy.ModeDiscover
	}
	if modeOf(c.DefaultMode) == xdsv1.PolicyMode_POLICY_MODE_UNSPECIFIED {
		return fmt.Errorf("xdsgen: DefaultMode %q is not a mode (allowed: discover, monitor, protect)", c.DefaultMode)
	}
	return nil
}

// Generator implements xds.Generator.
type Generator struct {
	cfg Config

	mu    sync.Mutex
	cache *shared
}

// shared is what every sidecar's snapshot has in common at one registry version and policy.
type shared struct {
	regVersion uint64
	set        *policy.Set
	services   []*xdsv1.Service
	peers      []*xdsv1.Workload
	externals  []*xdsv1.External
	modes      map[string]policy.Mode // group key -> mode
	policy     []byte
}

// New validates cfg.
func New(cfg Config) (*Generator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Generator{cfg: cfg}, nil
}

var _ xds.Generator = (*Generator)(nil)

// Generate builds the snapshot of the sidecar n. It refuses sidecars whose workload is not
// registered or runs under another identity than the one the sidecar authenticated with.
func (g *Generator) Generate(_ context.Context, n xds.Node) (*xdsv1.Snapshot, error) {
	w, ok := g.cfg.Registry.Workload(n.Namespace, n.Workload)
	if !ok {
		return nil, fmt.Errorf("workload %s is not registered (yet)", n.Key())
	}
	if w.SPIFFEID != n.ID.String() {
		return nil, fmt.Errorf("workload %s runs as %q, the sidecar is %q", n.Key(), w.SPIFFEID, n.ID)
	}
	sh, err := g.shared()
	if err != nil {
		return nil, err
	}
	self := g.workload(w, sh)
	return &xdsv1.Snapshot{
		Self: self, Services: sh.services, Peers: sh.peers,
		NamespaceMtls: g.cfg.NamespaceMTLS, DefaultMtls: g.cfg.DefaultMTLS, EgressMode: g.cfg.Egress,
		Externals: sh.externals, Policy: sh.policy, PolicyFormat: "yaml", TrustDomain: g.cfg.TrustDomain,
	}, nil
}

func (g *Generator) shared() (*shared, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	// Version first, then the data: if the registry changes in between, the cache carries an
	// older version than its data and is rebuilt on the next call.
	v := g.cfg.Registry.Version()
	set := g.cfg.Policy.PolicySet()
	if c := g.cache; c != nil && c.regVersion == v && c.set == set {
		return c, nil
	}
	sh := &shared{regVersion: v, set: set, modes: map[string]policy.Mode{}}
	if set != nil {
		for _, gr := range set.Groups {
			sh.modes[gr.Metadata.Key()] = gr.Spec.Mode
			if e := gr.Spec.External; e != nil {
				sh.externals = append(sh.externals, &xdsv1.External{
					Namespace: gr.Metadata.Namespace, Name: gr.Metadata.Name,
					Cidrs: e.CIDRs, DnsNames: e.DNSNames,
				})
			}
		}
		b, err := set.Export()
		if err != nil {
			return nil, fmt.Errorf("export policy: %w", err)
		}
		sh.policy = b
	}
	byKey := map[string]*xdsv1.Workload{}
	for _, w := range g.cfg.Registry.Workloads() {
		pw := g.workload(w, sh)
		byKey[w.Key()] = pw
		sh.peers = append(sh.peers, pw)
	}
	for _, s := range g.cfg.Registry.Services() {
		svc := &xdsv1.Service{Namespace: s.Namespace, Name: s.Name}
		if s.VIP.IsValid() {
			svc.Vips = []string{s.VIP.String()}
		}
		if td := g.cfg.TrustDomain; td != "" {
			svc.Hostnames = []string{fmt.Sprintf("%s.%s.svc.%s", s.Name, s.Namespace, td)}
		}
		for _, p := range s.Ports {
			svc.Ports = append(svc.Ports, &xdsv1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: uint32(p.Port), TargetPort: uint32(p.TargetPort)})
		}
		for _, key := range s.Endpoints {
			pw, ok := byKey[key]
			if !ok || len(pw.GetIps()) == 0 {
				continue // endpoint not registered (yet) or without an address
			}
			svc.Endpoints = append(svc.Endpoints, &xdsv1.Endpoint{
				Ip: pw.GetIps()[0], SpiffeId: pw.GetSpiffeId(), Workload: key, TunnelPort: pw.GetTunnelPort(),
			})
		}
		sh.services = append(sh.services, svc)
	}
	g.cache = sh
	return sh, nil
}

// workload converts a registry workload; its mode is the strictest of its groups' modes.
func (g *Generator) workload(w registry.Workload, sh *shared) *xdsv1.Workload {
	groups := g.cfg.Registry.GroupsOf(w.Namespace, w.Name)
	pw := &xdsv1.Workload{
		Namespace: w.Namespace, Name: w.Name, SpiffeId: w.SPIFFEID, Labels: w.Labels,
		Groups: groups, Node: w.Node, ServiceAccount: w.ServiceAccount,
		Mode: modeOf(g.cfg.DefaultMode),
	}
	if w.IP.IsValid() {
		pw.Ips = []string{w.IP.String()}
	}
	if g.cfg.HasSidecar == nil || g.cfg.HasSidecar(w) {
		pw.TunnelPort = g.cfg.TunnelPort
	}
	if len(groups) > 0 {
		pw.Mode = xdsv1.PolicyMode_POLICY_MODE_UNSPECIFIED
		for _, k := range groups {
			m, ok := sh.modes[k]
			if !ok {
				m = g.cfg.DefaultMode
			}
			if pm := modeOf(m); pm > pw.Mode { // enum order is discover < monitor < protect
				pw.Mode = pm
			}
		}
	}
	return pw
}

func modeOf(m policy.Mode) xdsv1.PolicyMode {
	switch m {
	case policy.ModeDiscover:
		return xdsv1.PolicyMode_POLICY_MODE_DISCOVER
	case policy.ModeMonitor:
		return xdsv1.PolicyMode_POLICY_MODE_MONITOR
	case policy.ModeProtect:
		return xdsv1.PolicyMode_POLICY_MODE_PROTECT
	}
	return xdsv1.PolicyMode_POLICY_MODE_UNSPECIFIED
}
