package controller

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/registry"
	"github.com/meshguard/meshguard/internal/store"
)

type fakePolicyStore struct {
	rec  store.PolicyRecord
	fail error
}

func (f *fakePolicyStore) LoadPolicy(context.Context) (store.PolicyRecord, error) { return f.rec, nil }
func (f *fakePolicyStore) SavePolicy(_ context.Context, r store.PolicyRecord) error {
	if f.fail != nil {
		return f.fail
	}
	f.rec = r
	return nil
}

type noWorkloads struct{}

func (noWorkloads) GroupsOf(string, string) []string { return nil }
func (noWorkloads) Services() []registry.Service     { return nil }
func (noWorkloads) Workload(string, string) (registry.Workload, bool) {
	return registry.Workload{}, false
}
func (noWorkloads) Members(string) []string { return nil }

func newTestPolicy(t *testing.T, st store.Policies) (*PolicyService, *events.Ring) {
	t.Helper()
	ring := events.NewRing(100)
	p, err := NewPolicyService(PolicyConfig{Store: st, Registry: noWorkloads{}, Audit: ring, Clock: clockwork.NewFakeClock(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return p, ring
}

const groupsDoc = `apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: web, namespace: shop}
spec: {mode: discover}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: cache, namespace: shop}
spec: {mode: protect}
`

func parse(t *testing.T, doc string) *policy.Set {
	t.Helper()
	s, err := policy.Parse("t.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPolicyServiceVersionsPersistsAndRestores(t *testing.T) {
	st := &fakePolicyStore{}
	p, _ := newTestPolicy(t, st)
	ctx := context.Background()
	changed := p.Changed()
	v, err := p.Apply(ctx, "alice", parse(t, groupsDoc))
	if err != nil || v != 1 || st.rec.Version != 1 {
		t.Fatalf("apply: v%d %v, stored v%d", v, err, st.rec.Version)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed not signalled")
	}
	if m, _ := p.GroupMode("shop/cache"); m != policy.ModeProtect {
		t.Fatalf("compiled mode %q", m)
	}

	// A store failure changes nothing: not the set, not the version, not the engine.
	st.fail = errors.New("disk full")
	if _, err := p.SetMode(ctx, "alice", "shop/cache", policy.ModeMonitor); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("set mode with a failing store: %v", err)
	}
	if _, v := p.Current(); v != 1 {
		t.Fatalf("version %d after a failed save", v)
	}
	if m, _ := p.GroupMode("shop/cache"); m != policy.ModeProtect {
		t.Fatalf("engine kept the unsaved mode %q", m)
	}
	st.fail = nil

	// Learned rules: existing ones are left alone, new ones are added in one version.
	rule := func(name, to string) policy.NetworkRule {
		return policy.NetworkRule{TypeMeta: policy.TypeMeta{APIVersion: policy.APIVersion, Kind: policy.KindNetworkRule},
			Metadata: policy.ObjectMeta{Name: name, Namespace: "shop"},
			Spec: policy.NetworkRuleSpec{From: policy.GroupRef{Group: "web"}, To: policy.GroupRef{Group: to}, Ports: []string{"any"},
				Applications: []string{"redis"}, Action: policy.ActionAllow, Learned: true}}
	}
	if err := p.WriteLearned(ctx, []policy.NetworkRule{rule("learned-a", "cache"), rule("learned-bad", "nosuch")}); err != nil {
		t.Fatal(err)
	}
	set, v := p.Current()
	if v != 2 || len(set.NetworkRules) != 1 || set.NetworkRules[0].Metadata.Name != "learned-a" {
		t.Fatalf("learned: v%d %+v", v, set.NetworkRules)
	}
	if err := p.WriteLearned(ctx, []policy.NetworkRule{rule("learned-a", "cache")}); err != nil {
		t.Fatal(err)
	}
	if _, v := p.Current(); v != 2 {
		t.Fatalf("re-learning an existing rule made version %d", v)
	}

	// A restarted service loads the same policy and version.
	p2, _ := newTestPolicy(t, st)
	got, v2 := p2.Current()
	want, _ := set.Export()
	gotb, _ := got.Export()
	if v2 != 2 || string(gotb) != string(want) {
		t.Fatalf("reloaded v%d:\n%s\nwant\n%s", v2, gotb, want)
	}
}

func TestConnectionsSeedFromStoredEvents(t *testing.T) {
	c := &Connections{flows: map[flowKey]*flowEntry{}}
	c.Seed([]events.Event{
		{Kind: events.KindConnection, Source: events.Endpoint{Workload: "shop/web-0"}, Destination: events.Endpoint{Workload: "shop/cache-0", Address: "10.0.0.2:6379"}, Protocol: "redis", Action: "allow"},
		{Kind: events.KindConnection, Source: events.Endpoint{Workload: "shop/web-0"}, Destination: events.Endpoint{Workload: "shop/cache-0", Address: "10.0.0.2:6379"}, Protocol: "redis", Action: "allow"},
		{Kind: events.KindViolation, Source: events.Endpoint{Workload: "shop/x"}, Destination: events.Endpoint{Workload: "shop/y", Address: "10.0.0.3:1"}, Action: "deny"},
		{Kind: events.KindConnection, Source: events.Endpoint{Workload: "shop/x"}, Destination: events.Endpoint{Workload: "shop/y", Address: "bogus"}, Action: "deny"},
	})
	rec := c.Recorded()
	if len(rec) != 1 || rec[0].Src != "shop/web-0" || rec[0].Dst != "shop/cache-0" || rec[0].Flow.Port != 6379 || rec[0].Flow.Verdict != policy.Allow {
		t.Fatalf("recorded: %+v", rec)
	}
	if conns := c.Connections(); len(conns) != 1 || conns[0].Count != 2 {
		t.Fatalf("connections: %+v", conns)
	}
}
