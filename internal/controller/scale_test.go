package controller

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/registry"
	"github.com/meshguard/meshguard/internal/store"
	"github.com/meshguard/meshguard/internal/xds"
	"github.com/meshguard/meshguard/internal/xds/xdsgen"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// scale is the size of a simulated controller state: apps apps (one group, one service and
// one automatic group each, spread over namespaces), perApp replicas each, rules network rules.
type scale struct{ apps, perApp, namespaces, rules int }

// issueScale is issue 6's: 10,000 workloads, 2,000 groups, 20,000 rules.
var issueScale = scale{apps: 2000, perApp: 5, namespaces: 100, rules: 20000}

// memFigures is the heap in use after a GC at each stage of building the state, in bytes.
type memFigures struct {
	baseline, registry, policy, snapshots uint64 // cumulative HeapInuse after each stage
	liveTotal                             uint64 // HeapAlloc at the end (live objects only)
	sys                                   uint64 // memory obtained from the OS at the end (peaks included)
	storeBytes                            int64  // size of the bbolt file (mapped, not heap)
	snapshotBytes                         int    // marshalled size of one sidecar's snapshot
	sidecars                              int
}

// controllerState holds what a running controller holds for this scale: the registry, the
// policy service (documents + compiled policy, persisted in bbolt like the controller does),
// the snapshot generator and the last snapshot sent to each sidecar (xds.Server keeps one
// per stream to skip identical pushes).
type controllerState struct {
	reg   *registry.Registry
	pol   *PolicyService
	gen   *xdsgen.Generator
	snaps []*xdsv1.Snapshot
	st    *store.Bolt
}

func heapInuse() (inuse, alloc uint64) {
	m := readMem()
	return m.HeapInuse, m.HeapAlloc
}

func readMem() runtime.MemStats {
	runtime.GC()
	runtime.GC() // the second cycle frees what finalizers of the first released
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

// buildControllerState builds the state stage by stage the way Controller.Run wires it
// (registry, policy service over a bbolt store, membership sync, xdsgen), measuring the heap
// after each stage. Groups are in mode; rules mix HTTP and Redis L7 sections and deny rules.
func buildControllerState(tb testing.TB, sc scale, mode policy.Mode) (*controllerState, memFigures) {
	tb.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var m memFigures

	// An empty controller: registry, policy service loaded from an empty store, generator.
	dbPath := filepath.Join(tb.TempDir(), "state.db")
	st, err := store.OpenBolt(dbPath)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	reg, err := registry.New(registry.Config{Log: log, TrustDomain: "cluster.local"})
	if err != nil {
		tb.Fatal(err)
	}
	pol, err := NewPolicyService(PolicyConfig{Store: st, Registry: reg, Audit: events.NewRing(16), Clock: clockwork.NewFakeClock(), Log: log})
	if err != nil {
		tb.Fatal(err)
	}
	if err := pol.Load(ctx); err != nil {
		tb.Fatal(err)
	}
	gen, err := xdsgen.New(xdsgen.Config{Registry: reg, Policy: pol, TunnelPort: 15008, TrustDomain: "cluster.local",
		HasSidecar: func(w registry.Workload) bool { return w.Sidecar }})
	if err != nil {
		tb.Fatal(err)
	}
	cs := &controllerState{reg: reg, pol: pol, gen: gen, st: st}
	m.baseline, _ = heapInuse()

	// Registry: workloads and services, as the feeders fill it.
	appName := func(a int) string { return fmt.Sprintf("app%d", a) }
	appNS := func(a int) string { return fmt.Sprintf("ns%d", a%sc.namespaces) }
	var nodes []xds.Node
	for a := 0; a < sc.apps; a++ {
		for r := 0; r < sc.perApp; r++ {
			i := a*sc.perApp + r
			w := registry.Workload{Namespace: appNS(a), Name: fmt.Sprintf("%s-%d", appName(a), r), ServiceAccount: appName(a),
				IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Labels: map[string]string{"app": appName(a), "tier": "t" + fmt.Sprint(a%4)},
				Node: fmt.Sprintf("node%d", i%50), Sidecar: true}
			if err := reg.UpsertWorkload(w); err != nil {
				tb.Fatal(err)
			}
			nodes = append(nodes, xds.Node{ID: spiffeid.RequireFromString(fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", w.Namespace, w.ServiceAccount)),
				Namespace: w.Namespace, Workload: w.Name})
		}
		if err := reg.UpsertService(registry.Service{Namespace: appNS(a), Name: appName(a), VIP: netip.AddrFrom4([4]byte{10, 200, byte(a >> 8), byte(a)}),
			Ports: []registry.ServicePort{{Protocol: "tcp", Port: 80, TargetPort: 8080}}, Selector: map[string]string{"app": appName(a)}}); err != nil {
			tb.Fatal(err)
		}
	}
	m.registry, _ = heapInuse()

	// Policy: the user's groups and rules in one apply, then what syncMembership does (group
	// membership in the registry, automatic groups for workloads no group covers).
	tm := func(k string) policy.TypeMeta { return policy.TypeMeta{APIVersion: policy.APIVersion, Kind: k} }
	set := &policy.Set{}
	for a := 0; a < sc.apps; a++ {
		set.Groups = append(set.Groups, policy.Group{TypeMeta: tm(policy.KindGroup),
			Metadata: policy.ObjectMeta{Name: appName(a), Namespace: appNS(a)},
			Spec:     policy.GroupSpec{Selector: &policy.LabelSelector{MatchLabels: map[string]string{"app": appName(a)}}, Mode: mode}})
	}
	for r := 0; r < sc.rules; r++ {
		from, to := r%sc.apps, (r*7+1)%sc.apps
		nr := policy.NetworkRule{TypeMeta: tm(policy.KindNetworkRule),
			Metadata: policy.ObjectMeta{Name: fmt.Sprintf("r%d", r), Namespace: appNS(to)},
			Spec: policy.NetworkRuleSpec{From: policy.GroupRef{Group: appName(from), Namespace: appNS(from)}, To: policy.GroupRef{Group: appName(to)},
				Ports: []string{fmt.Sprintf("tcp/%d", 8080+r%3)}, Applications: []string{"http"}, Action: policy.ActionAllow}}
		switch r % 3 {
		case 0:
			nr.Spec.L7 = &policy.L7{HTTP: &policy.HTTPMatch{Methods: []string{"GET", "POST"}, Paths: []string{"/api/", "/static/"}}}
		case 1:
			nr.Spec.Applications = []string{"redis"}
			nr.Spec.L7 = &policy.L7{Redis: &policy.RedisMatch{DenyCommands: []string{"FLUSHALL", "CONFIG"}}}
		}
		if r%10 == 0 {
			nr.Spec.Action, nr.Spec.Priority = policy.ActionDeny, 100
		}
		set.NetworkRules = append(set.NetworkRules, nr)
	}
	if _, err := pol.Apply(ctx, "bench", set); err != nil {
		tb.Fatal(err)
	}
	set = nil
	reg.SetGroups(pol.PolicySet().Groups)
	if missing := reg.MissingAutoGroups(); len(missing) > 0 {
		if err := pol.AddMissing(ctx, "system:registry", missing); err != nil {
			tb.Fatal(err)
		}
		reg.SetGroups(pol.PolicySet().Groups)
	}
	m.policy, _ = heapInuse()

	// Snapshots: one per sidecar, kept as xds.Server keeps the last one sent on each stream.
	for _, n := range nodes {
		s, err := gen.Generate(ctx, n)
		if err != nil {
			tb.Fatal(err)
		}
		cs.snaps = append(cs.snaps, s)
	}
	end := readMem()
	m.snapshots, m.liveTotal, m.sys = end.HeapInuse, end.HeapAlloc, end.Sys
	if fi, err := os.Stat(dbPath); err == nil {
		m.storeBytes = fi.Size()
	}
	m.sidecars = len(cs.snaps)
	m.snapshotBytes = proto.Size(cs.snaps[0])
	return cs, m
}

// BenchmarkControllerMemory measures the heap in use after GC of a whole controller state at
// issue 6's scale (10,000 workloads with sidecars, 2,000 groups, 20,000 rules, a snapshot
// generated and held for every sidecar), stage by stage, beside the empty controller it
// starts from. One iteration builds everything: run with -benchtime=1x.
func BenchmarkControllerMemory(b *testing.B) {
	for _, mode := range []policy.Mode{policy.ModeProtect, policy.ModeDiscover} {
		b.Run(string(mode), func(b *testing.B) {
			var m memFigures
			var cs *controllerState
			for i := 0; i < b.N; i++ {
				cs, m = buildControllerState(b, issueScale, mode)
			}
			mb := func(v uint64) float64 { return float64(v) / (1 << 20) }
			b.ReportMetric(mb(m.baseline), "baseline-MB")
			b.ReportMetric(mb(m.registry-m.baseline), "registry-MB")
			b.ReportMetric(mb(m.policy-m.registry), "policy-MB")
			b.ReportMetric(mb(m.snapshots-m.policy), "snapshots-MB")
			b.ReportMetric(mb(m.snapshots), "total-MB")
			b.ReportMetric(mb(m.liveTotal), "live-MB")
			b.ReportMetric(mb(m.sys), "sys-MB")
			b.ReportMetric(float64(m.storeBytes)/(1<<20), "bbolt-file-MB")
			b.ReportMetric(float64(m.snapshotBytes)/1024, "KiB/snapshot")
			runtime.KeepAlive(cs)
		})
	}
}

// TestControllerStateSmall builds the benchmark's state at a small scale and checks it is the
// state the benchmark claims to measure: every workload registered, every group and rule in
// the compiled policy, automatic groups not needed, and each sidecar's snapshot carrying its
// own workload and the rules to its group.
func TestControllerStateSmall(t *testing.T) {
	sc := scale{apps: 20, perApp: 3, namespaces: 4, rules: 200}
	cs, m := buildControllerState(t, sc, policy.ModeProtect)
	if got := len(cs.reg.Workloads()); got != sc.apps*sc.perApp {
		t.Fatalf("registry holds %d workloads, want %d", got, sc.apps*sc.perApp)
	}
	set, version := cs.pol.Current()
	if len(set.Groups) != sc.apps || len(set.NetworkRules) != sc.rules || version != 1 {
		t.Fatalf("policy: %d groups, %d rules, version %d; want %d, %d, 1 (automatic groups must not be needed)",
			len(set.Groups), len(set.NetworkRules), version, sc.apps, sc.rules)
	}
	if got := cs.reg.GroupsOf("ns1", "app1-2"); len(got) != 1 || got[0] != "ns1/app1" {
		t.Fatalf("groups of ns1/app1-2: %v", got)
	}
	if m.sidecars != sc.apps*sc.perApp || m.snapshotBytes == 0 {
		t.Fatalf("%d snapshots of %d bytes", m.sidecars, m.snapshotBytes)
	}
	// Rule r7 goes to app (7*7+1)%20 = 10 in ns2: that app's sidecars get it, app 11's do not.
	s := cs.snaps[10*sc.perApp]
	if s.GetSelf().GetName() != "app10-0" || !bytes.Contains(s.GetPolicy(), []byte(`"name":"r7"`)) {
		t.Fatalf("snapshot of app10-0 (self %q) lacks rule r7:\n%.2000s", s.GetSelf().GetName(), s.GetPolicy())
	}
	if o := cs.snaps[11*sc.perApp]; bytes.Contains(o.GetPolicy(), []byte(`"name":"r7"`)) {
		t.Fatalf("snapshot of %s carries rule r7, which is not about it", o.GetSelf().GetName())
	}
	if m.policy <= m.baseline || m.snapshots == 0 {
		t.Fatalf("implausible heap figures: %+v", m)
	}
}
