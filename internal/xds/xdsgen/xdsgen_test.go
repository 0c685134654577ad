package xdsgen

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/registry"
	"github.com/meshguard/meshguard/internal/xds"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

const shopPolicy = `apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: cache, namespace: shop}
spec:
  selector: {matchLabels: {app: cache}}
  mode: protect
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: pypi, namespace: shop}
spec:
  external: {cidrs: [151.101.0.0/16, 192.0.2.7], dnsNames: [pypi.org]}
  mode: monitor
---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: web-to-cache, namespace: shop}
spec:
  from: {group: web}
  to: {group: cache}
  ports: ["tcp/6379"]
  applications: [redis]
  action: allow
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: batch, namespace: shop}
spec:
  selector: {matchLabels: {app: batch}}
  mode: protect
---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: batch-to-pypi, namespace: shop}
spec:
  from: {group: batch}
  to: {group: pypi}
  ports: ["tcp/443"]
  action: allow
---
apiVersion: meshguard.io/v1alpha1
kind: ResponseRule
metadata: {name: capture-threats}
spec:
  match: {kind: threat}
  actions: [capture]
`

type policyHolder struct{ p atomic.Pointer[policy.Set] }

func (h *policyHolder) PolicySet() *policy.Set { return h.p.Load() }

func setup(t *testing.T) (*registry.Registry, *policyHolder, *Generator) {
	t.Helper()
	reg, err := registry.New(registry.Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), TrustDomain: "test.local"})
	if err != nil {
		t.Fatal(err)
	}
	set, err := policy.Parse("shop.yaml", []byte(shopPolicy))
	if err != nil {
		t.Fatal(err)
	}
	reg.SetGroups(set.Groups)
	for _, w := range []registry.Workload{
		{Namespace: "shop", Name: "web-0", IP: netip.MustParseAddr("10.0.0.2"), ServiceAccount: "web", Labels: map[string]string{"app": "web"}},
		{Namespace: "shop", Name: "cache-0", IP: netip.MustParseAddr("10.0.0.3"), ServiceAccount: "cache", Labels: map[string]string{"app": "cache"}},
		{Namespace: "shop", Name: "legacy-0", IP: netip.MustParseAddr("10.0.0.4"), ServiceAccount: "legacy", Labels: map[string]string{"app": "cache"}},
	} {
		if err := reg.UpsertWorkload(w); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg.UpsertService(registry.Service{Namespace: "shop", Name: "cache", VIP: netip.MustParseAddr("10.96.0.10"),
		Ports: []registry.ServicePort{{Protocol: "tcp", Port: 6379}}, Selector: map[string]string{"app": "cache"}}); err != nil {
		t.Fatal(err)
	}
	// The controller applies the automatic groups the registry made up, as here.
	set.Groups = append(set.Groups, reg.MissingAutoGroups()...)
	reg.SetGroups(set.Groups)
	ph := &policyHolder{}
	ph.p.Store(set)
	g, err := New(Config{Registry: reg, Policy: ph, TunnelPort: 15008, TrustDomain: "test.local",
		HasSidecar:    func(w registry.Workload) bool { return w.Name != "legacy-0" },
		NamespaceMTLS: map[string]xdsv1.MTLSMode{"legacy": xdsv1.MTLSMode_MTLS_MODE_PERMISSIVE},
		Egress:        xdsv1.EgressMode_EGRESS_MODE_REGISTRY_ONLY})
	if err != nil {
		t.Fatal(err)
	}
	return reg, ph, g
}

func node(ns, name, id string) xds.Node {
	return xds.Node{ID: spiffeid.RequireFromString(id), Namespace: ns, Workload: name, Authenticated: true}
}

func TestSnapshotFromRegistryAndPolicy(t *testing.T) {
	_, _, g := setup(t)
	snap, err := g.Generate(context.Background(), node("shop", "web-0", "spiffe://test.local/ns/shop/sa/web"))
	if err != nil {
		t.Fatal(err)
	}
	x, err := xds.NewIndex(snap) // what the sidecar does with it
	if err != nil {
		t.Fatalf("generated snapshot does not validate: %v", err)
	}
	if s := x.Self(); s.GetName() != "web-0" || s.GetMode() != xdsv1.PolicyMode_POLICY_MODE_DISCOVER || s.GetTunnelPort() != 15008 {
		t.Fatalf("self %v: want web-0 in discover (automatic group only) with a tunnel", s)
	}
	r, ok := x.Service(netip.MustParseAddrPort("10.96.0.10:6379"))
	if !ok || len(r.Backends) != 2 {
		t.Fatalf("cache VIP -> %+v %v, want two backends", r, ok)
	}
	if b := r.Backends[0]; b.Workload != "shop/cache-0" || b.ID.String() != "spiffe://test.local/ns/shop/sa/cache" || b.Tunnel.Port() != 15008 {
		t.Fatalf("meshed backend %+v", b)
	}
	if b := r.Backends[1]; b.Workload != "shop/legacy-0" || b.Meshed() {
		t.Fatalf("sidecar-less backend %+v must be unmeshed", b)
	}
	cache, ok := x.Workload(netip.MustParseAddr("10.0.0.3"))
	if !ok || cache.GetMode() != xdsv1.PolicyMode_POLICY_MODE_PROTECT || !contains(cache.GetGroups(), "shop/cache") {
		t.Fatalf("peer cache-0 %v: want group shop/cache in protect", cache)
	}
	if e, ok := x.External(netip.MustParseAddrPort("151.101.2.3:443")); !ok || e.GetName() != "pypi" || e.GetDnsNames()[0] != "pypi.org" {
		t.Fatal("external group not distributed")
	}
	// A bare IP in policy reaches the sidecar as a prefix it can parse.
	if e, ok := x.External(netip.MustParseAddrPort("192.0.2.7:443")); !ok || e.GetName() != "pypi" {
		t.Fatal("bare-IP external address not distributed as a /32")
	}
	if x.MTLS("legacy") != xdsv1.MTLSMode_MTLS_MODE_PERMISSIVE || x.MTLS("shop") != xdsv1.MTLSMode_MTLS_MODE_STRICT {
		t.Fatal("mtls modes")
	}
	// Only web's part of the policy: its rule, the groups it names, the global response rule;
	// not batch -> pypi. And the part compiles on its own, as the sidecar will compile it.
	back, err := policy.Parse("from-snapshot.yaml", snap.GetPolicy())
	if err != nil {
		t.Fatalf("policy in snapshot does not parse back: %v", err)
	}
	var names []string
	for _, r := range back.NetworkRules {
		names = append(names, r.Metadata.Key())
	}
	for _, gr := range back.Groups {
		names = append(names, "group:"+gr.Metadata.Key())
	}
	for _, r := range back.ResponseRules {
		names = append(names, "response:"+r.Metadata.Key())
	}
	if got, want := strings.Join(names, " "), "shop/web-to-cache group:shop/cache group:shop/web response:capture-threats"; got != want {
		t.Fatalf("web-0's policy part: %s, want %s", got, want)
	}
	if _, err := policy.Compile(back, policy.CompileOptions{}); err != nil {
		t.Fatalf("policy part does not compile on its own: %v", err)
	}
}

func TestReplicasSharePolicyPartAndFullPolicyOption(t *testing.T) {
	reg, ph, g := setup(t)
	ctx := context.Background()
	a, _ := g.Generate(ctx, node("shop", "cache-0", "spiffe://test.local/ns/shop/sa/cache"))
	if err := reg.UpsertWorkload(registry.Workload{Namespace: "shop", Name: "cache-9", IP: netip.MustParseAddr("10.0.0.9"), ServiceAccount: "cache", Labels: map[string]string{"app": "cache"}}); err != nil {
		t.Fatal(err)
	}
	b, _ := g.Generate(ctx, node("shop", "cache-9", "spiffe://test.local/ns/shop/sa/cache"))
	c, _ := g.Generate(ctx, node("shop", "cache-0", "spiffe://test.local/ns/shop/sa/cache"))
	if string(a.Policy) != string(b.Policy) || &b.Policy[0] != &c.Policy[0] {
		t.Fatal("replicas with the same groups must share one policy part")
	}
	if !strings.Contains(string(a.Policy), "web-to-cache") || strings.Contains(string(a.Policy), "batch-to-pypi") {
		t.Fatalf("cache's part:\n%s", a.Policy)
	}
	full, err := New(Config{Registry: reg, Policy: ph, TunnelPort: 15008, FullPolicy: true})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := full.Generate(ctx, node("shop", "cache-0", "spiffe://test.local/ns/shop/sa/cache"))
	if !strings.Contains(string(f.Policy), "batch-to-pypi") {
		t.Fatal("FullPolicy must send everything")
	}
}

func TestRefusesUnknownOrImpersonatingSidecars(t *testing.T) {
	_, _, g := setup(t)
	if _, err := g.Generate(context.Background(), node("shop", "ghost-0", "spiffe://test.local/ns/shop/sa/web")); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("unknown workload: %v", err)
	}
	// The cache's sidecar asking for web-0's config (which would reveal web's view).
	if _, err := g.Generate(context.Background(), node("shop", "web-0", "spiffe://test.local/ns/shop/sa/cache")); err == nil || !strings.Contains(err.Error(), "runs as") {
		t.Fatalf("impersonation: %v", err)
	}
}

func TestSharedPartsAreCachedUntilAChange(t *testing.T) {
	reg, ph, g := setup(t)
	web := node("shop", "web-0", "spiffe://test.local/ns/shop/sa/web")
	a, _ := g.Generate(context.Background(), web)
	b, _ := g.Generate(context.Background(), node("shop", "cache-0", "spiffe://test.local/ns/shop/sa/cache"))
	if &a.Services[0] != &b.Services[0] {
		t.Fatal("shared parts rebuilt for every sidecar")
	}
	if err := reg.UpsertWorkload(registry.Workload{Namespace: "shop", Name: "cache-1", IP: netip.MustParseAddr("10.0.0.5"), ServiceAccount: "cache", Labels: map[string]string{"app": "cache"}}); err != nil {
		t.Fatal(err)
	}
	c, _ := g.Generate(context.Background(), web)
	if len(c.Services[0].Endpoints) != 3 {
		t.Fatalf("registry change not reflected: %d endpoints, want 3", len(c.Services[0].Endpoints))
	}
	set, err := ph.PolicySet().SetMode("shop/cache", policy.ModeMonitor)
	if err != nil {
		t.Fatal(err)
	}
	ph.p.Store(set)
	d, _ := g.Generate(context.Background(), web)
	for _, p := range d.Peers {
		if p.GetName() == "cache-0" && p.GetMode() != xdsv1.PolicyMode_POLICY_MODE_MONITOR {
			t.Fatalf("policy change not reflected: cache-0 mode %v", p.GetMode())
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestProtectSidecarsGetOnlyTheirSources(t *testing.T) {
	_, _, g := setup(t)
	ctx := context.Background()
	peerNames := func(n xds.Node) string {
		s, err := g.Generate(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range s.GetPeers() {
			out = append(out, p.GetName())
		}
		return strings.Join(out, " ")
	}
	// cache is in protect: only web (web-to-cache) can get in.
	if got := peerNames(node("shop", "cache-0", "spiffe://test.local/ns/shop/sa/cache")); got != "web-0" {
		t.Fatalf("protect sidecar's peers %q, want web-0", got)
	}
	// web is in discover: every workload, to name any source's groups.
	if got := peerNames(node("shop", "web-0", "spiffe://test.local/ns/shop/sa/web")); got != "cache-0 legacy-0 web-0" {
		t.Fatalf("discover sidecar's peers %q, want all", got)
	}
}

func TestRuleChangeLeavesOtherSidecarsSnapshotsIdentical(t *testing.T) {
	_, ph, g := setup(t)
	ctx := context.Background()
	web := node("shop", "web-0", "spiffe://test.local/ns/shop/sa/web")
	cache := node("shop", "cache-0", "spiffe://test.local/ns/shop/sa/cache")
	w1, _ := g.Generate(ctx, web)
	c1, _ := g.Generate(ctx, cache)

	// batch -> pypi changes: neither web nor cache is involved.
	next := *ph.PolicySet()
	next.NetworkRules = append([]policy.NetworkRule(nil), next.NetworkRules...)
	for i := range next.NetworkRules {
		if next.NetworkRules[i].Metadata.Name == "batch-to-pypi" {
			next.NetworkRules[i].Spec.Ports = []string{"tcp/8443"}
		}
	}
	ph.p.Store(&next)
	w2, _ := g.Generate(ctx, web)
	c2, _ := g.Generate(ctx, cache)
	same := func(a, b []byte) bool { return len(a) == len(b) && &a[0] == &b[0] }
	if !same(w1.Policy, w2.Policy) || !same(c1.Policy, c2.Policy) || &w1.Services[0] != &w2.Services[0] ||
		&w1.Peers[0] != &w2.Peers[0] || &c1.Peers[0] != &c2.Peers[0] {
		t.Fatal("an unrelated rule change must leave these snapshots identical (so nothing is pushed)")
	}

	// web -> cache changes: both get a new policy part.
	next2 := next
	next2.NetworkRules = append([]policy.NetworkRule(nil), next.NetworkRules...)
	for i := range next2.NetworkRules {
		if next2.NetworkRules[i].Metadata.Name == "web-to-cache" {
			next2.NetworkRules[i].Spec.Ports = []string{"tcp/6380"}
		}
	}
	ph.p.Store(&next2)
	w3, _ := g.Generate(ctx, web)
	c3, _ := g.Generate(ctx, cache)
	if same(w2.Policy, w3.Policy) || same(c2.Policy, c3.Policy) || !strings.Contains(string(c3.Policy), "tcp/6380") {
		t.Fatal("the changed rule must reach both its sides")
	}
}
