package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/policy"
)

func newReg(t testing.TB) *Registry {
	t.Helper()
	r, err := New(Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), TrustDomain: "mesh.test"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func wl(ns, name, ip, sa string, labels ...string) Workload {
	l := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		l[labels[i]] = labels[i+1]
	}
	return Workload{Namespace: ns, Name: name, IP: netip.MustParseAddr(ip), ServiceAccount: sa, Labels: l}
}

const groupsYAML = `apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: frontend, namespace: shop}
spec:
  selector:
    matchLabels: {tier: front}
    matchExpressions: [{key: env, operator: In, values: [prod, staging]}]
  mode: protect
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: dbs, namespace: shop}
spec: {serviceAccount: db, mode: monitor}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: shop-all}
spec: {namespace: shop, mode: monitor}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: github}
spec:
  external: {cidrs: [140.82.112.0/20, 192.0.2.7], dnsNames: ["*.github.com"]}
  mode: protect
`

func loadGroups(t *testing.T) *policy.Set {
	t.Helper()
	s, err := policy.Parse("groups.yaml", []byte(groupsYAML))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMembership(t *testing.T) {
	r := newReg(t)
	r.SetGroups(loadGroups(t).Groups)
	must(t, r.UpsertWorkload(wl("shop", "web-1", "10.0.0.1", "web", "app", "web", "tier", "front", "env", "prod")))
	must(t, r.UpsertWorkload(wl("shop", "web-dev", "10.0.0.2", "web", "app", "web", "tier", "front", "env", "dev")))
	must(t, r.UpsertWorkload(wl("shop", "pg-0", "10.0.0.3", "db")))
	must(t, r.UpsertWorkload(wl("other", "web-1", "10.0.1.1", "web", "app", "Web_Server", "tier", "front", "env", "prod")))

	cases := map[string][]string{
		"shop/web-1":   {"shop-all", "shop/frontend", "shop/web"},
		"shop/web-dev": {"shop-all", "shop/web"},
		"shop/pg-0":    {"shop-all", "shop/db", "shop/dbs"},
		"other/web-1":  {"other/web-server"},
	}
	for k, want := range cases {
		ns, name := policy.SplitKey(k)
		if got := r.GroupsOf(ns, name); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: groups %v, want %v", k, got, want)
		}
	}
	if got := r.Members("shop/web"); !reflect.DeepEqual(got, []string{"shop/web-1", "shop/web-dev"}) {
		t.Errorf("members of shop/web: %v", got)
	}
	// Label change moves the workload between groups.
	must(t, r.UpsertWorkload(wl("shop", "web-dev", "10.0.0.2", "web", "app", "web", "tier", "front", "env", "staging")))
	if got := r.Members("shop/frontend"); !reflect.DeepEqual(got, []string{"shop/web-1", "shop/web-dev"}) {
		t.Errorf("members of shop/frontend after relabel: %v", got)
	}
	// Groups change: membership is recomputed.
	s := loadGroups(t)
	s, _ = s.Delete(policy.KindGroup, "shop/frontend")
	r.SetGroups(s.Groups)
	if got := r.GroupsOf("shop", "web-1"); !reflect.DeepEqual(got, []string{"shop-all", "shop/web"}) {
		t.Errorf("after group removal: %v", got)
	}
	if got := r.Members("shop/frontend"); len(got) != 0 {
		t.Errorf("removed group still has members %v", got)
	}
	r.DeleteWorkload("shop", "web-1")
	if got := r.Members("shop/web"); !reflect.DeepEqual(got, []string{"shop/web-dev"}) {
		t.Errorf("after delete: %v", got)
	}
	if r.GroupsOf("shop", "web-1") != nil {
		t.Error("deleted workload still has groups")
	}
}

func TestLookups(t *testing.T) {
	r := newReg(t)
	r.SetGroups(loadGroups(t).Groups)
	w := wl("shop", "web-1", "10.0.0.1", "web", "app", "web")
	must(t, r.UpsertWorkload(w))
	got, ok := r.ByIP(netip.MustParseAddr("::ffff:10.0.0.1"))
	if !ok || got.Name != "web-1" || got.SPIFFEID != "spiffe://mesh.test/ns/shop/sa/web" {
		t.Fatalf("ByIP: %+v %v", got, ok)
	}
	if got, ok := r.BySPIFFEID("spiffe://mesh.test/ns/shop/sa/web"); !ok || got.IP != w.IP {
		t.Fatalf("BySPIFFEID: %+v %v", got, ok)
	}
	// The caller's map is copied: changing it later does not change the registry.
	w.Labels["app"] = "changed"
	if got, _ := r.Workload("shop", "web-1"); got.Labels["app"] != "web" {
		t.Fatal("registry shares the caller's label map")
	}
	// Address reuse: the newest owner wins.
	must(t, r.UpsertWorkload(wl("shop", "web-2", "10.0.0.1", "web2")))
	if got, _ := r.ByIP(netip.MustParseAddr("10.0.0.1")); got.Name != "web-2" {
		t.Fatalf("after takeover ByIP = %s", got.Name)
	}
	r.DeleteWorkload("shop", "web-1") // the stale owner leaving must not drop the new owner's address
	if got, ok := r.ByIP(netip.MustParseAddr("10.0.0.1")); !ok || got.Name != "web-2" {
		t.Fatalf("after stale delete ByIP = %+v %v", got, ok)
	}
	if got := r.GroupsOfIP(netip.MustParseAddr("140.82.113.4")); !reflect.DeepEqual(got, []string{"github"}) {
		t.Errorf("external CIDR: %v", got)
	}
	if got := r.GroupsOfIP(netip.MustParseAddr("192.0.2.7")); !reflect.DeepEqual(got, []string{"github"}) {
		t.Errorf("external address: %v", got)
	}
	if got := r.GroupsOfIP(netip.MustParseAddr("8.8.8.8")); got != nil {
		t.Errorf("unknown address in %v", got)
	}
	if got := r.GroupsOfName("API.GitHub.com."); !reflect.DeepEqual(got, []string{"github"}) {
		t.Errorf("external name: %v", got)
	}
	if got := r.GroupsOfName("github.com"); got != nil {
		t.Errorf("apex matched wildcard: %v", got)
	}
}

func TestServices(t *testing.T) {
	r := newReg(t)
	must(t, r.UpsertService(Service{Namespace: "shop", Name: "cache", VIP: netip.MustParseAddr("10.96.0.10"),
		Ports: []ServicePort{{Protocol: "tcp", Port: 6379}}, Selector: map[string]string{"app": "cache"}}))
	must(t, r.UpsertWorkload(wl("shop", "cache-0", "10.0.0.5", "cache", "app", "cache")))
	must(t, r.UpsertWorkload(wl("shop", "cache-1", "10.0.0.6", "cache", "app", "cache")))
	must(t, r.UpsertWorkload(wl("other", "cache-0", "10.0.1.5", "cache", "app", "cache")))
	s, ok := r.ServiceByVIP(netip.MustParseAddr("10.96.0.10"))
	if !ok || !reflect.DeepEqual(s.Endpoints, []string{"shop/cache-0", "shop/cache-1"}) || s.Ports[0].TargetPort != 6379 {
		t.Fatalf("service: %+v", s)
	}
	r.DeleteWorkload("shop", "cache-1")
	if s, _ := r.ServiceByVIP(netip.MustParseAddr("10.96.0.10")); !reflect.DeepEqual(s.Endpoints, []string{"shop/cache-0"}) {
		t.Fatalf("endpoints after delete: %v", s.Endpoints)
	}
	if err := r.UpsertService(Service{Namespace: "shop", Name: "x", Ports: []ServicePort{{Protocol: "sctp", Port: 1}}}); err == nil {
		t.Fatal("bad protocol accepted")
	}
	r.DeleteService("shop", "cache")
	if _, ok := r.ServiceByVIP(netip.MustParseAddr("10.96.0.10")); ok {
		t.Fatal("deleted service still found")
	}
}

func TestAutoGroupsValidate(t *testing.T) {
	r := newReg(t)
	r.SetGroups(loadGroups(t).Groups)
	must(t, r.UpsertWorkload(wl("shop", "web-1", "10.0.0.1", "web", "app", "web")))
	must(t, r.UpsertWorkload(wl("shop", "web-2", "10.0.0.2", "web", "app", "web")))
	must(t, r.UpsertWorkload(wl("shop", "pg-0", "10.0.0.3", "postgres")))
	must(t, r.UpsertWorkload(wl("shop", "odd", "10.0.0.4", "", "app", "--")))
	auto := r.MissingAutoGroups()
	var keys []string
	for _, g := range auto {
		keys = append(keys, g.Metadata.Key())
	}
	if !reflect.DeepEqual(keys, []string{"shop/default", "shop/postgres", "shop/web"}) {
		t.Fatalf("auto groups: %v", keys)
	}
	s := loadGroups(t).Merge(&policy.Set{Groups: auto})
	if err := s.Validate(); err != nil {
		t.Fatalf("generated groups do not validate: %v", err)
	}
	r.SetGroups(s.Groups)
	if got := r.MissingAutoGroups(); len(got) != 0 {
		t.Fatalf("still missing: %v", got)
	}
	// The generated criteria select the same workloads as the automatic membership.
	if got := r.Members("shop/web"); !reflect.DeepEqual(got, []string{"shop/web-1", "shop/web-2"}) {
		t.Fatalf("shop/web members: %v", got)
	}
	if g, _ := s.Group("shop/postgres"); g.Spec.ServiceAccount != "postgres" || g.Spec.Mode != policy.ModeDiscover {
		t.Fatalf("postgres auto group: %+v", g.Spec)
	}
}

func TestChangedAndRun(t *testing.T) {
	r := newReg(t)
	ch := r.Changed()
	v := r.Version()
	f := feederFunc(func(ctx context.Context, s Sink) error {
		return s.UpsertWorkload(wl("a", "b", "10.1.1.1", "sa"))
	})
	bad := feederFunc(func(ctx context.Context, s Sink) error { return errors.New("boom") })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Run(ctx, f); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatal("no change notification")
	}
	if r.Version() <= v {
		t.Fatal("version did not increase")
	}
	if err := r.Run(ctx, bad); err == nil || err.Error() != "boom" {
		t.Fatalf("feeder error: %v", err)
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("config without logger accepted")
	}
	if err := r.UpsertWorkload(Workload{Namespace: "a", Name: "x"}); err == nil {
		t.Fatal("workload without IP accepted")
	}
}

type feederFunc func(ctx context.Context, s Sink) error

func (f feederFunc) Run(ctx context.Context, s Sink) error { return f(ctx, s) }

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkLookup measures the per-connection lookups at 10,000 workloads.
func BenchmarkLookup(b *testing.B) {
	r := newReg(b)
	ips := make([]netip.Addr, 10000)
	for i := range ips {
		ips[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		must(b, r.UpsertWorkload(Workload{Namespace: fmt.Sprintf("ns%d", i%100), Name: fmt.Sprintf("w%d", i), IP: ips[i], ServiceAccount: "sa", Labels: map[string]string{"app": fmt.Sprintf("a%d", i%20)}}))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := r.ByIP(ips[i%len(ips)]); !ok {
			b.Fatal("miss")
		}
		i++
	}
}

// TestConcurrentReadsAndWrites: lookups while feeders and the policy store write (-race).
func TestConcurrentReadsAndWrites(t *testing.T) {
	r := newReg(t)
	gs := loadGroups(t).Groups
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil && i < 100000; i++ {
			r.ByIP(netip.MustParseAddr("10.0.0.1"))
			for _, g := range r.GroupsOf("shop", "w1") {
				_ = len(g)
			}
			r.Members("shop/web")
		}
	}()
	for i := 0; ctx.Err() == nil && i < 2000; i++ {
		must(t, r.UpsertWorkload(wl("shop", "w1", "10.0.0.1", "web", "app", "web", "tier", "front", "env", "prod")))
		r.SetGroups(gs)
		r.DeleteWorkload("shop", "w1")
	}
	cancel()
	<-done
}

// BenchmarkSetGroups recomputes membership for 10,000 workloads against 2,000 groups in 100
// namespaces (what a policy change costs the controller).
func BenchmarkSetGroups(b *testing.B) {
	r := newReg(b)
	for i := 0; i < 10000; i++ {
		must(b, r.UpsertWorkload(Workload{Namespace: fmt.Sprintf("ns%d", i%100), Name: fmt.Sprintf("w%d", i),
			IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), ServiceAccount: "sa",
			Labels: map[string]string{"app": fmt.Sprintf("a%d", i%20), "tier": fmt.Sprintf("t%d", i%3)}}))
	}
	var gs []policy.Group
	for i := 0; i < 2000; i++ {
		gs = append(gs, policy.Group{Metadata: policy.ObjectMeta{Name: fmt.Sprintf("g%d", i%20), Namespace: fmt.Sprintf("ns%d", i/20)},
			Spec: policy.GroupSpec{Selector: &policy.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", i%20)}}, Mode: policy.ModeProtect}})
	}
	b.ReportAllocs()
	for b.Loop() {
		r.SetGroups(gs)
	}
	if got := r.GroupsOf("ns1", "w1"); len(got) != 2 {
		b.Fatalf("groups of ns1/w1: %v", got)
	}
}
