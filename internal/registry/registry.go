// Package registry knows the mesh: workloads (pods) with their addresses, identities and
// labels, services with their virtual IPs and endpoints, and which groups every workload is in.
//
// Feeders (the lab now, Kubernetes later) push workloads and services through the Sink
// interface; the policy store pushes Group documents with SetGroups. Membership follows from
// the groups' criteria, and every workload is also in its automatic group (named after its
// `app` label, else its service account, within its namespace) so there is always a group to
// learn about. Reads are safe concurrently with writes.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/meshguard/meshguard/internal/policy"
)

// Workload is one pod (or lab pod).
type Workload struct {
	Namespace      string            `json:"namespace"`
	Name           string            `json:"name"`
	IP             netip.Addr        `json:"ip"`
	ServiceAccount string            `json:"serviceAccount"`
	SPIFFEID       string            `json:"spiffeId"`
	Labels         map[string]string `json:"labels,omitempty"` // read-only once stored
	Node           string            `json:"node,omitempty"`
	// Sidecar says the workload runs a meshguard sidecar: peers reach it through the mTLS
	// tunnel; without one it is a plaintext endpoint that sidecars call directly.
	Sidecar bool `json:"sidecar"`
}

// Key is "namespace/name".
func (w *Workload) Key() string { return w.Namespace + "/" + w.Name }

// ServicePort is one port of a service.
type ServicePort struct {
	Name       string `json:"name,omitempty"`
	Protocol   string `json:"protocol"` // tcp or udp
	Port       uint16 `json:"port"`
	TargetPort uint16 `json:"targetPort"` // 0 means Port
}

// Service is a virtual IP in front of workloads.
type Service struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	VIP       netip.Addr        `json:"vip"`
	Ports     []ServicePort     `json:"ports"`
	Selector  map[string]string `json:"selector,omitempty"` // endpoints: workloads of the namespace matching it
	// Endpoints are workload keys ("ns/name"). Computed from Selector when it is set;
	// otherwise whatever the feeder gave.
	Endpoints []string `json:"endpoints,omitempty"`
}

// Key is "namespace/name".
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// Sink is what feeders write to. Registry implements it.
type Sink interface {
	UpsertWorkload(w Workload) error
	DeleteWorkload(namespace, name string)
	UpsertService(s Service) error
	DeleteService(namespace, name string)
}

// Feeder is a source of workloads and services (the lab, Kubernetes): it writes its current
// state and then changes to the sink until ctx ends.
type Feeder interface {
	Run(ctx context.Context, sink Sink) error
}

// AutoLabel marks Group documents the registry generated for automatic groups.
const AutoLabel = "meshguard.io/auto"

// Config configures a Registry.
type Config struct {
	Log *slog.Logger
	// TrustDomain derives SPIFFE IDs (spiffe://TD/ns/NS/sa/SA) for workloads that come
	// without one; empty means workloads must carry their SPIFFE ID.
	TrustDomain string
	// AutoGroupMode is the mode of generated automatic groups; empty means discover.
	AutoGroupMode policy.Mode
}

func (c *Config) validate() error {
	if c.Log == nil {
		return errors.New("registry: config: Log is required")
	}
	if c.AutoGroupMode == "" {
		c.AutoGroupMode = policy.ModeDiscover
	}
	switch c.AutoGroupMode {
	case policy.ModeDiscover, policy.ModeMonitor, policy.ModeProtect:
	default:
		return fmt.Errorf("registry: config: AutoGroupMode %q is not a mode (allowed: discover, monitor, protect)", c.AutoGroupMode)
	}
	if strings.ContainsAny(c.TrustDomain, "/:") {
		return fmt.Errorf("registry: config: TrustDomain %q must be a bare domain like example.org", c.TrustDomain)
	}
	return nil
}

// Registry holds workloads, services and group membership.
type Registry struct {
	cfg Config

	mu        sync.RWMutex
	workloads map[string]*entry // by workload key
	byIP      map[netip.Addr]*entry
	bySPIFFE  map[string]*entry
	services  map[string]*Service
	byVIP     map[netip.Addr]string
	groups    []policy.Group             // current Group documents
	byNS      map[string][]*policy.Group // namespaced groups by namespace
	cluster   []*policy.Group            // cluster-scoped workload groups
	external  []extGroup
	members   map[string]map[string]struct{} // group key -> workload keys
	version   uint64
	changed   chan struct{}
}

type entry struct {
	w      Workload
	groups []string // sorted group keys, automatic group included
}

type extGroup struct {
	key   string
	cidrs []netip.Prefix
	names []string // lower-case, "*.x" kept as is
}

// New builds an empty registry.
func New(cfg Config) (*Registry, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Registry{
		cfg:       cfg,
		workloads: map[string]*entry{},
		byIP:      map[netip.Addr]*entry{},
		bySPIFFE:  map[string]*entry{},
		services:  map[string]*Service{},
		byVIP:     map[netip.Addr]string{},
		byNS:      map[string][]*policy.Group{},
		members:   map[string]map[string]struct{}{},
		changed:   make(chan struct{}),
	}, nil
}

// Run drives feeders until ctx ends; it returns the first feeder error.
func (r *Registry) Run(ctx context.Context, feeders ...Feeder) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(feeders))
	for _, f := range feeders {
		go func() { errc <- f.Run(ctx, r) }()
	}
	var first error
	for range feeders {
		if err := <-errc; err != nil && first == nil && ctx.Err() == nil {
			first = err
			cancel()
		}
	}
	return first
}

var (
	autoNameRE   = regexp.MustCompile(`[^a-z0-9-]+`)
	labelValueRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
)

// AutoGroupName is the automatic group of a workload: its `app` label, else its service
// account, made a valid name; "default" if neither gives one.
func AutoGroupName(w *Workload) string {
	for _, cand := range []string{w.Labels["app"], w.ServiceAccount} {
		if n := sanitize(cand); n != "" {
			return n
		}
	}
	return "default"
}

func sanitize(s string) string {
	n := strings.Trim(autoNameRE.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if len(n) > 63 {
		n = strings.TrimRight(n[:63], "-")
	}
	return n
}

// AutoGroupKey is "namespace/AutoGroupName".
func AutoGroupKey(w *Workload) string { return w.Namespace + "/" + AutoGroupName(w) }

// UpsertWorkload adds or replaces a workload.
func (r *Registry) UpsertWorkload(w Workload) error {
	if w.Namespace == "" || w.Name == "" {
		return errors.New("registry: workload needs namespace and name")
	}
	if !w.IP.IsValid() {
		return fmt.Errorf("registry: workload %s: IP is required", w.Key())
	}
	if w.SPIFFEID == "" {
		if r.cfg.TrustDomain == "" {
			return fmt.Errorf("registry: workload %s: SPIFFE ID is required (or configure TrustDomain)", w.Key())
		}
		sa := w.ServiceAccount
		if sa == "" {
			sa = "default"
		}
		w.SPIFFEID = "spiffe://" + r.cfg.TrustDomain + "/ns/" + w.Namespace + "/sa/" + sa
	}
	w.IP = w.IP.Unmap()
	w.Labels = cloneMap(w.Labels)
	key := w.Key()
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.workloads[key]; ok {
		r.unindexLocked(key, old)
	}
	if other, ok := r.byIP[w.IP]; ok && other.w.Key() != key {
		// Addresses get reused; the newest owner wins and the stale one loses its address.
		r.cfg.Log.Warn("registry: address taken over", "ip", w.IP, "old", other.w.Key(), "new", key)
	}
	e := &entry{w: w}
	r.workloads[key] = e
	r.byIP[w.IP] = e
	r.bySPIFFE[w.SPIFFEID] = e
	r.computeLocked(e)
	r.refreshEndpointsLocked(w.Namespace)
	r.bumpLocked()
	return nil
}

// DeleteWorkload removes a workload; unknown ones are ignored.
func (r *Registry) DeleteWorkload(namespace, name string) {
	key := namespace + "/" + name
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.workloads[key]
	if !ok {
		return
	}
	r.unindexLocked(key, e)
	delete(r.workloads, key)
	r.refreshEndpointsLocked(namespace)
	r.bumpLocked()
}

func (r *Registry) unindexLocked(key string, e *entry) {
	if r.byIP[e.w.IP] == e {
		delete(r.byIP, e.w.IP)
	}
	if r.bySPIFFE[e.w.SPIFFEID] == e {
		delete(r.bySPIFFE, e.w.SPIFFEID)
	}
	for _, g := range e.groups {
		if m := r.members[g]; m != nil {
			delete(m, key)
			if len(m) == 0 {
				delete(r.members, g)
			}
		}
	}
}

// UpsertService adds or replaces a service.
func (r *Registry) UpsertService(s Service) error {
	if s.Namespace == "" || s.Name == "" {
		return errors.New("registry: service needs namespace and name")
	}
	for i, p := range s.Ports {
		if p.Protocol != "tcp" && p.Protocol != "udp" {
			return fmt.Errorf("registry: service %s: ports[%d].protocol %q (allowed: tcp, udp)", s.Key(), i, p.Protocol)
		}
		if p.Port == 0 {
			return fmt.Errorf("registry: service %s: ports[%d].port is required", s.Key(), i)
		}
		if p.TargetPort == 0 {
			s.Ports[i].TargetPort = p.Port
		}
	}
	s.VIP = s.VIP.Unmap()
	s.Ports = append([]ServicePort(nil), s.Ports...)
	s.Selector = cloneMap(s.Selector)
	s.Endpoints = append([]string(nil), s.Endpoints...)
	key := s.Key()
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.services[key]; ok && old.VIP.IsValid() && r.byVIP[old.VIP] == key {
		delete(r.byVIP, old.VIP)
	}
	r.services[key] = &s
	if s.VIP.IsValid() {
		r.byVIP[s.VIP] = key
	}
	r.refreshEndpointsLocked(s.Namespace)
	r.bumpLocked()
	return nil
}

// DeleteService removes a service.
func (r *Registry) DeleteService(namespace, name string) {
	key := namespace + "/" + name
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.services[key]
	if !ok {
		return
	}
	if r.byVIP[s.VIP] == key {
		delete(r.byVIP, s.VIP)
	}
	delete(r.services, key)
	r.bumpLocked()
}

func (r *Registry) refreshEndpointsLocked(ns string) {
	for _, s := range r.services {
		if s.Namespace != ns || s.Selector == nil {
			continue
		}
		sel := &policy.LabelSelector{MatchLabels: s.Selector}
		var eps []string
		for k, e := range r.workloads {
			if e.w.Namespace == ns && sel.Matches(e.w.Labels) {
				eps = append(eps, k)
			}
		}
		sort.Strings(eps)
		s.Endpoints = eps
	}
}

// SetGroups replaces the Group documents membership is computed from (call it whenever the
// policy changes) and recomputes every workload's groups.
func (r *Registry) SetGroups(groups []policy.Group) {
	gs := append([]policy.Group(nil), groups...)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.groups = gs
	r.byNS = map[string][]*policy.Group{}
	r.cluster, r.external = nil, nil
	for i := range gs {
		g := &gs[i]
		if ex := g.Spec.External; ex != nil {
			eg := extGroup{key: g.Metadata.Key()}
			for _, c := range ex.CIDRs {
				if p, err := policy.ParseCIDR(c); err == nil {
					eg.cidrs = append(eg.cidrs, p)
				}
			}
			for _, n := range ex.DNSNames {
				eg.names = append(eg.names, strings.TrimSuffix(strings.ToLower(n), "."))
			}
			r.external = append(r.external, eg)
			continue
		}
		if g.Metadata.Namespace != "" {
			r.byNS[g.Metadata.Namespace] = append(r.byNS[g.Metadata.Namespace], g)
		} else {
			r.cluster = append(r.cluster, g)
		}
	}
	r.members = map[string]map[string]struct{}{}
	for _, e := range r.workloads {
		r.computeLocked(e)
	}
	r.bumpLocked()
}

// matches evaluates a workload group's criteria (all must hold).
func matches(g *policy.Group, w *Workload) bool {
	if g.Metadata.Namespace != "" && g.Metadata.Namespace != w.Namespace {
		return false
	}
	if g.Spec.Namespace != "" && g.Spec.Namespace != w.Namespace {
		return false
	}
	if g.Spec.ServiceAccount != "" && g.Spec.ServiceAccount != w.ServiceAccount {
		return false
	}
	return g.Spec.Selector.Matches(w.Labels)
}

func (r *Registry) computeLocked(e *entry) {
	key := e.w.Key()
	set := map[string]struct{}{AutoGroupKey(&e.w): {}}
	for _, g := range r.byNS[e.w.Namespace] {
		if matches(g, &e.w) {
			set[g.Metadata.Key()] = struct{}{}
		}
	}
	for _, g := range r.cluster {
		if matches(g, &e.w) {
			set[g.Metadata.Key()] = struct{}{}
		}
	}
	// A fresh slice: readers may still hold the previous one (GroupsOf shares it).
	e.groups = make([]string, 0, len(set))
	for g := range set {
		e.groups = append(e.groups, g)
		m := r.members[g]
		if m == nil {
			m = map[string]struct{}{}
			r.members[g] = m
		}
		m[key] = struct{}{}
	}
	sort.Strings(e.groups)
}

func (r *Registry) bumpLocked() {
	r.version++
	close(r.changed)
	r.changed = make(chan struct{})
}

// Version increases on every change.
func (r *Registry) Version() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.version
}

// Changed returns a channel closed at the next change (take it, then read state, then wait).
func (r *Registry) Changed() <-chan struct{} {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.changed
}

// Workload returns a workload by namespace and name.
func (r *Registry) Workload(namespace, name string) (Workload, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.workloads[namespace+"/"+name]
	if !ok {
		return Workload{}, false
	}
	return e.w, true
}

// ByIP returns the workload with that address.
func (r *Registry) ByIP(ip netip.Addr) (Workload, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.byIP[ip.Unmap()]
	if !ok {
		return Workload{}, false
	}
	return e.w, true
}

// BySPIFFEID returns the workload with that identity.
func (r *Registry) BySPIFFEID(id string) (Workload, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.bySPIFFE[id]
	if !ok {
		return Workload{}, false
	}
	return e.w, true
}

// Workloads returns every workload, sorted by key.
func (r *Registry) Workloads() []Workload {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Workload, 0, len(r.workloads))
	for _, e := range r.workloads {
		out = append(out, e.w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Services returns every service, sorted by key.
func (r *Registry) Services() []Service {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Service, 0, len(r.services))
	for _, s := range r.services {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// ServiceByVIP returns the service with that virtual IP.
func (r *Registry) ServiceByVIP(ip netip.Addr) (Service, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s, ok := r.services[r.byVIP[ip.Unmap()]]
	if !ok {
		return Service{}, false
	}
	return *s, true
}

// GroupsOf returns the sorted group keys of a workload (its automatic group included), or
// nil if the workload is unknown. The slice is shared: do not modify it.
func (r *Registry) GroupsOf(namespace, name string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e, ok := r.workloads[namespace+"/"+name]; ok {
		return e.groups
	}
	return nil
}

// GroupsOfIP returns the groups of the workload at ip, or else the external groups whose
// CIDRs contain ip.
func (r *Registry) GroupsOfIP(ip netip.Addr) []string {
	ip = ip.Unmap()
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e, ok := r.byIP[ip]; ok {
		return e.groups
	}
	var out []string
	for _, g := range r.external {
		for _, p := range g.cidrs {
			if p.Contains(ip) {
				out = append(out, g.key)
				break
			}
		}
	}
	return out
}

// GroupsOfName returns the external groups whose dnsNames match host (exact or *.suffix).
func (r *Registry) GroupsOfName(host string) []string {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for _, g := range r.external {
		for _, n := range g.names {
			if n == host || (strings.HasPrefix(n, "*.") && len(host) > len(n)-1 && strings.HasSuffix(host, n[1:])) {
				out = append(out, g.key)
				break
			}
		}
	}
	return out
}

// Members returns the sorted workload keys in a group.
func (r *Registry) Members(groupKey string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.members[groupKey]))
	for k := range r.members[groupKey] {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// MissingAutoGroups returns Group documents for automatic groups of current workloads that
// have no Group document yet (the controller applies them, so users can see them, set their
// mode and attach sensors). Each selects by `app` label, or by service account.
func (r *Registry) MissingAutoGroups() []policy.Group {
	r.mu.RLock()
	defer r.mu.RUnlock()
	have := map[string]bool{}
	for _, g := range r.groups {
		have[g.Metadata.Key()] = true
	}
	var out []policy.Group
	for _, e := range r.workloads {
		key := AutoGroupKey(&e.w)
		if have[key] {
			continue
		}
		have[key] = true
		g := policy.Group{
			TypeMeta: policy.TypeMeta{APIVersion: policy.APIVersion, Kind: policy.KindGroup},
			Metadata: policy.ObjectMeta{Name: AutoGroupName(&e.w), Namespace: e.w.Namespace, Labels: map[string]string{AutoLabel: "true"}},
			Spec:     policy.GroupSpec{Mode: r.cfg.AutoGroupMode},
		}
		if app := e.w.Labels["app"]; sanitize(app) != "" && len(app) <= 63 && labelValueRE.MatchString(app) {
			g.Spec.Selector = &policy.LabelSelector{MatchLabels: map[string]string{"app": app}}
		} else if e.w.ServiceAccount != "" {
			g.Spec.ServiceAccount = e.w.ServiceAccount
		}
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Metadata.Key() < out[j].Metadata.Key() })
	return out
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
