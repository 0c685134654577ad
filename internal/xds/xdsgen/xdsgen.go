// Package xdsgen builds each sidecar's config snapshot from the controller's registry and
// policy: the xds.Generator the controller hands to xds.Server. The parts every sidecar shares
// (services with their endpoints, peer workloads, externals) are built once per registry
// version and policy set and reused; the policy is cut down to what the sidecar's groups need
// (the network rules from or to them and the groups those rules name) and cached per set of
// groups, so replicas share it and a version bump costs O(sidecars), not O(sidecars × rules).
package xdsgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

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
	Members(groupKey string) []string
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
	// FullPolicy sends every sidecar the whole policy instead of its part (debugging).
	FullPolicy bool
	// AllPeers sends every sidecar every workload as a peer. By default a sidecar whose groups
	// are all in protect mode gets only the workloads its rules admit as sources (anyone else
	// is denied whatever its groups), which keeps snapshots small at scale; discover and
	// monitor sidecars always get every workload, to name the groups of any source they see.
	AllPeers bool
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
	modes      map[string]policy.Mode       // group key -> mode
	groupDoc   map[string]int               // group key -> index in set.Groups
	rulesOf    map[string][]int             // group key -> indices of network rules from or to it
	respOf     map[string][]int             // group key -> indices of response rules for it
	respAll    []int                        // response rules for any group
	policyOf   map[string][]byte            // joined group keys -> exported policy part
	peersOf    map[string][]*xdsv1.Workload // joined group keys -> peers of protect-only sidecars
	// The previous cache's parts, reused when equal so unchanged snapshots stay identical.
	oldPolicyOf map[string][]byte
	oldPeersOf  map[string][]*xdsv1.Workload
	byKey       map[string]*xdsv1.Workload // workload key -> peer entry
	full        []byte                     // the whole policy, for FullPolicy
	// Documents encoded once per policy set, on first use (guarded by Generator.mu).
	groupJSON, ruleJSON, respJSON [][]byte
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
	pol, err := g.policyFor(sh, self.GetGroups())
	if err != nil {
		return nil, err
	}
	peers := sh.peers
	if !g.cfg.AllPeers && self.GetMode() == xdsv1.PolicyMode_POLICY_MODE_PROTECT && g.allProtect(sh, self.GetGroups()) {
		peers = g.sourcesOf(sh, self.GetGroups())
	}
	return &xdsv1.Snapshot{
		Self: self, Services: sh.services, Peers: peers,
		NamespaceMtls: g.cfg.NamespaceMTLS, DefaultMtls: g.cfg.DefaultMTLS, EgressMode: g.cfg.Egress,
		Externals: sh.externals, Policy: pol, PolicyFormat: "yaml", TrustDomain: g.cfg.TrustDomain,
	}, nil
}

// policyFor returns the policy documents a sidecar whose workload is in groups needs: the
// network rules from or to those groups (inbound decisions, and egress decisions made at the
// source), the groups they name (the sidecar compiles them), and the response rules for those
// groups or for any group. Process and file rules are the agent's.
func (g *Generator) policyFor(sh *shared, groups []string) ([]byte, error) {
	if sh.set == nil {
		return nil, nil
	}
	if g.cfg.FullPolicy {
		return sh.full, nil
	}
	key := strings.Join(groups, ",")
	g.mu.Lock()
	defer g.mu.Unlock()
	if b, ok := sh.policyOf[key]; ok {
		return b, nil
	}
	set := sh.set
	var groupIdx, ruleIdx []int
	wantGroups := map[string]bool{}
	seenRule := map[int]bool{}
	for _, gk := range groups {
		wantGroups[gk] = true
		for _, i := range sh.rulesOf[gk] {
			if seenRule[i] {
				continue
			}
			seenRule[i] = true
			ruleIdx = append(ruleIdx, i)
			nr := &set.NetworkRules[i]
			wantGroups[resolve(sh.groupDoc, nr.Metadata.Namespace, nr.Spec.From)] = true
			wantGroups[resolve(sh.groupDoc, nr.Metadata.Namespace, nr.Spec.To)] = true
		}
	}
	respIdx := append([]int(nil), sh.respAll...)
	for _, gk := range groups {
		respIdx = append(respIdx, sh.respOf[gk]...)
	}
	slices.Sort(respIdx)
	respIdx = slices.Compact(respIdx)
	for _, i := range respIdx {
		if rr := &set.ResponseRules[i]; rr.Spec.Match.Group != nil {
			wantGroups[resolve(sh.groupDoc, rr.Metadata.Namespace, *rr.Spec.Match.Group)] = true
		}
	}
	for gk := range wantGroups {
		if i, ok := sh.groupDoc[gk]; ok {
			groupIdx = append(groupIdx, i)
		}
	}
	// Documents in the order Export uses (kind, then key), so the bytes are deterministic.
	byKey := func(key func(int) string) func(a, b int) int {
		return func(a, b int) int { return strings.Compare(key(a), key(b)) }
	}
	slices.SortFunc(groupIdx, byKey(func(i int) string { return set.Groups[i].Metadata.Key() }))
	slices.SortFunc(ruleIdx, byKey(func(i int) string { return set.NetworkRules[i].Metadata.Key() }))
	slices.SortFunc(respIdx, byKey(func(i int) string { return set.ResponseRules[i].Metadata.Key() }))

	// JSON documents in a YAML stream: policy.Parse reads them like the YAML export, and
	// encoding/json is an order of magnitude faster than the YAML encoder at 1,000 sidecars.
	if sh.groupJSON == nil {
		sh.groupJSON = make([][]byte, len(set.Groups))
		sh.ruleJSON = make([][]byte, len(set.NetworkRules))
		sh.respJSON = make([][]byte, len(set.ResponseRules))
	}
	var buf []byte
	for _, part := range [...]struct {
		kind  string
		idx   []int
		cache [][]byte
	}{{policy.KindGroup, groupIdx, sh.groupJSON}, {policy.KindNetworkRule, ruleIdx, sh.ruleJSON}, {policy.KindResponseRule, respIdx, sh.respJSON}} {
		for _, i := range part.idx {
			if part.cache[i] == nil {
				b, err := json.Marshal(set.Document(part.kind, i))
				if err != nil {
					return nil, fmt.Errorf("encode policy for groups %s: %w", key, err)
				}
				part.cache[i] = b
			}
			if len(buf) > 0 {
				buf = append(buf, "\n---\n"...)
			}
			buf = append(buf, part.cache[i]...)
		}
	}
	if len(buf) > 0 {
		buf = append(buf, '\n')
	}
	if prev, ok := sh.oldPolicyOf[key]; ok && bytes.Equal(prev, buf) {
		buf = prev
	}
	sh.policyOf[key] = buf
	return buf, nil
}

func (g *Generator) allProtect(sh *shared, groups []string) bool {
	for _, k := range groups {
		m, ok := sh.modes[k]
		if !ok {
			m = g.cfg.DefaultMode
		}
		if m != policy.ModeProtect {
			return false
		}
	}
	return len(groups) > 0
}

// sourcesOf returns the workloads in the from-groups of the rules into groups: the only
// sources a protect-mode sidecar can admit (deny rules name theirs too).
func (g *Generator) sourcesOf(sh *shared, groups []string) []*xdsv1.Workload {
	key := strings.Join(groups, ",")
	g.mu.Lock()
	defer g.mu.Unlock()
	if p, ok := sh.peersOf[key]; ok {
		return p
	}
	in := map[string]bool{}
	for _, k := range groups {
		in[k] = true
	}
	seen := map[string]bool{}
	var out []*xdsv1.Workload
	for _, k := range groups {
		for _, i := range sh.rulesOf[k] {
			nr := &sh.set.NetworkRules[i]
			if !in[resolve(sh.groupDoc, nr.Metadata.Namespace, nr.Spec.To)] {
				continue // a rule from this group to elsewhere: not about inbound sources
			}
			from := resolve(sh.groupDoc, nr.Metadata.Namespace, nr.Spec.From)
			if seen[from] {
				continue
			}
			seen[from] = true
			for _, wk := range g.cfg.Registry.Members(from) {
				if pw, ok := sh.byKey[wk]; ok && !seen["w:"+wk] {
					seen["w:"+wk] = true
					out = append(out, pw)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b *xdsv1.Workload) int {
		return strings.Compare(a.GetNamespace()+"/"+a.GetName(), b.GetNamespace()+"/"+b.GetName())
	})
	if prev, ok := sh.oldPeersOf[key]; ok && slices.Equal(prev, out) { // same *Workload entries
		out = prev
	}
	sh.peersOf[key] = out
	return out
}

// resolve names the group a reference means, seen from namespace ns, the way the policy
// library does: the namespace's own group first, then a cluster-scoped one.
func resolve(groups map[string]int, ns string, ref policy.GroupRef) string {
	if ref.Namespace != "" {
		return policy.Key(ref.Namespace, ref.Group)
	}
	if ns != "" {
		if _, ok := groups[policy.Key(ns, ref.Group)]; ok {
			return policy.Key(ns, ref.Group)
		}
	}
	return ref.Group
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
	sh := &shared{regVersion: v, set: set, modes: map[string]policy.Mode{}, groupDoc: map[string]int{},
		rulesOf: map[string][]int{}, respOf: map[string][]int{}, policyOf: map[string][]byte{},
		peersOf: map[string][]*xdsv1.Workload{}, byKey: map[string]*xdsv1.Workload{}}
	if set != nil {
		for i, gr := range set.Groups {
			sh.groupDoc[gr.Metadata.Key()] = i
		}
		for i := range set.NetworkRules {
			nr := &set.NetworkRules[i]
			from := resolve(sh.groupDoc, nr.Metadata.Namespace, nr.Spec.From)
			to := resolve(sh.groupDoc, nr.Metadata.Namespace, nr.Spec.To)
			sh.rulesOf[from] = append(sh.rulesOf[from], i)
			if to != from {
				sh.rulesOf[to] = append(sh.rulesOf[to], i)
			}
		}
		for i := range set.ResponseRules {
			rr := &set.ResponseRules[i]
			if rr.Spec.Match.Group == nil {
				sh.respAll = append(sh.respAll, i)
				continue
			}
			k := resolve(sh.groupDoc, rr.Metadata.Namespace, *rr.Spec.Match.Group)
			sh.respOf[k] = append(sh.respOf[k], i)
		}
		for _, gr := range set.Groups {
			sh.modes[gr.Metadata.Key()] = gr.Spec.Mode
			if e := gr.Spec.External; e != nil {
				sh.externals = append(sh.externals, &xdsv1.External{
					Namespace: gr.Metadata.Namespace, Name: gr.Metadata.Name,
					Cidrs: canonicalCIDRs(e.CIDRs), DnsNames: e.DNSNames,
				})
			}
		}
		if g.cfg.FullPolicy {
			b, err := set.Export()
			if err != nil {
				return nil, fmt.Errorf("export policy: %w", err)
			}
			sh.full = b
		}
	}
	// Keep what did not change identical (same slices), so xds.Server sees that a sidecar's
	// snapshot is unchanged and sends it nothing: a rule change then reaches only the sidecars
	// whose part of the policy it touches.
	old := g.cache
	if old != nil {
		sh.oldPolicyOf, sh.oldPeersOf = old.policyOf, old.peersOf
		if ext := sh.externals; len(ext) == len(old.externals) && slices.EqualFunc(ext, old.externals, func(a, b *xdsv1.External) bool { return proto.Equal(a, b) }) {
			sh.externals = old.externals
		}
	}
	if old != nil && old.regVersion == v && maps.Equal(old.modes, sh.modes) {
		sh.byKey, sh.peers, sh.services = old.byKey, old.peers, old.services
		g.cache = sh
		return sh, nil
	}
	byKey := sh.byKey
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

// canonicalCIDRs puts every external address in prefix form: policy accepts a bare IP
// ("192.0.2.7") where sidecars parse prefixes, and one unparsable entry would make every
// sidecar refuse its whole config. Validation has already refused what does not parse.
func canonicalCIDRs(in []string) []string {
	out := make([]string, 0, len(in))
	for _, c := range in {
		if p, err := policy.ParseCIDR(c); err == nil {
			out = append(out, p.String())
		}
	}
	return out
}
