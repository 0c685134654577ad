package xdsgen

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/registry"
	"github.com/meshguard/meshguard/internal/xds"
)

// BenchmarkRuleChange1000Sidecars is issue 6's scale on the controller side: 10,000 workloads
// in 2,000 apps (one group and one service each), 20,000 rules; one rule changes and the
// snapshots of 1,000 sidecars are generated (what xds.Server asks for on that bump). Groups
// all in protect (small peer lists) or all in discover (every workload is a peer).
func BenchmarkRuleChange1000Sidecars(b *testing.B) {
	for _, mode := range []policy.Mode{policy.ModeProtect, policy.ModeDiscover} {
		b.Run(string(mode), func(b *testing.B) { benchRuleChange(b, mode) })
	}
}

const scaleRules = 20000

// scaleWorld is built once per mode: filling the registry at this size takes long on a loaded
// machine, and the benchmark framework calls the function more than once.
type scaleWorld struct {
	reg   *registry.Registry
	set   *policy.Set
	nodes []xds.Node
}

var scaleWorlds = map[policy.Mode]*scaleWorld{}

func benchRuleChange(b *testing.B, mode policy.Mode) {
	w := scaleWorlds[mode]
	if w == nil {
		w = buildScaleWorld(b, mode)
		scaleWorlds[mode] = w
	}
	ph := &policyHolder{}
	ph.p.Store(w.set)
	g, err := New(Config{Registry: w.reg, Policy: ph, TunnelPort: 15008, TrustDomain: "test.local"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	snap, err := g.Generate(ctx, w.nodes[0])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// One rule changes: a new set (sets are immutable once published).
		next := *w.set
		next.NetworkRules = append([]policy.NetworkRule(nil), w.set.NetworkRules...)
		next.NetworkRules[i%scaleRules].Spec.Ports = []string{fmt.Sprintf("tcp/%d", 9000+i%1000)}
		ph.p.Store(&next)
		for _, n := range w.nodes {
			if _, err := g.Generate(ctx, n); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/change")
	b.ReportMetric(float64(proto.Size(snap))/1024, "KiB/snapshot")
	b.ReportMetric(float64(len(snap.Policy))/1024, "KiB-policy/snapshot")
}

func buildScaleWorld(b *testing.B, mode policy.Mode) *scaleWorld {
	const apps, perApp, namespaces, sidecars = 2000, 5, 100, 1000
	reg, err := registry.New(registry.Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), TrustDomain: "test.local"})
	if err != nil {
		b.Fatal(err)
	}
	set := &policy.Set{}
	appNS := func(a int) string { return fmt.Sprintf("ns%d", a%namespaces) }
	for a := 0; a < apps; a++ {
		set.Groups = append(set.Groups, policy.Group{
			Metadata: policy.ObjectMeta{Name: fmt.Sprintf("app%d", a), Namespace: appNS(a)},
			Spec:     policy.GroupSpec{Selector: &policy.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", a)}}, Mode: mode},
		})
	}
	reg.SetGroups(set.Groups)
	var nodes []xds.Node
	for a := 0; a < apps; a++ {
		for r := 0; r < perApp; r++ {
			i := a*perApp + r
			w := registry.Workload{Namespace: appNS(a), Name: fmt.Sprintf("app%d-%d", a, r), ServiceAccount: fmt.Sprintf("app%d", a),
				IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Labels: map[string]string{"app": fmt.Sprintf("app%d", a)}}
			if err := reg.UpsertWorkload(w); err != nil {
				b.Fatal(err)
			}
			if len(nodes) < sidecars && r == 0 {
				nodes = append(nodes, xds.Node{ID: spiffeid.RequireFromString(fmt.Sprintf("spiffe://test.local/ns/%s/sa/app%d", w.Namespace, a)), Namespace: w.Namespace, Workload: w.Name})
			}
		}
		if err := reg.UpsertService(registry.Service{Namespace: appNS(a), Name: fmt.Sprintf("app%d", a), VIP: netip.AddrFrom4([4]byte{10, 200, byte(a >> 8), byte(a)}),
			Ports: []registry.ServicePort{{Protocol: "tcp", Port: 80, TargetPort: 8080}}, Selector: map[string]string{"app": fmt.Sprintf("app%d", a)}}); err != nil {
			b.Fatal(err)
		}
	}
	for r := 0; r < scaleRules; r++ {
		from, to := r%apps, (r*7+1)%apps
		set.NetworkRules = append(set.NetworkRules, policy.NetworkRule{
			Metadata: policy.ObjectMeta{Name: fmt.Sprintf("r%d", r), Namespace: appNS(to)},
			Spec: policy.NetworkRuleSpec{From: policy.GroupRef{Group: fmt.Sprintf("app%d", from), Namespace: appNS(from)}, To: policy.GroupRef{Group: fmt.Sprintf("app%d", to)},
				Ports: []string{"tcp/8080"}, Applications: []string{"http"}, Action: policy.ActionAllow},
		})
	}
	return &scaleWorld{reg: reg, set: set, nodes: nodes}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
