package learn

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/meshguard/meshguard/internal/dpi"
	"github.com/meshguard/meshguard/internal/policy"
)

const groups = `apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: web, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, mode: discover}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: cache, namespace: shop}
spec: {selector: {matchLabels: {app: cache}}, mode: discover}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: db, namespace: shop}
spec: {mode: discover}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: batch, namespace: jobs}
spec: {mode: discover}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: github}
spec: {external: {dnsNames: [github.com]}, mode: discover}
`

func groupSet(t *testing.T) *policy.Set {
	t.Helper()
	s, err := policy.Parse("groups.yaml", []byte(groups))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRule(t *testing.T) {
	long := strings.Repeat("x", 63)
	cases := []struct {
		obs     Observation
		name    string
		ports   string
		apps    string
		from    policy.GroupRef
		ns      string
		comment string
	}{
		{Observation{SrcWorkload: "shop/web-1", SrcGroup: "shop/web", DstGroup: "shop/cache", Port: 6379, Transport: dpi.TCP, App: "redis", L7: "GET k"},
			"learned-web-cache-redis", "any", "redis", policy.GroupRef{Group: "web"}, "shop", "learned from shop/web-1 tcp/6379: GET k"},
		{Observation{SrcGroup: "shop/web", DstGroup: "shop/db", Port: 5432, Transport: dpi.TCP, App: "unknown"},
			"learned-web-db-tcp5432", "tcp/5432", "any", policy.GroupRef{Group: "web"}, "shop", "learned from tcp/5432"},
		{Observation{SrcGroup: "shop/web", DstGroup: "shop/db", Port: 53, Transport: dpi.UDP},
			"learned-web-db-udp53", "udp/53", "any", policy.GroupRef{Group: "web"}, "shop", ""},
		{Observation{SrcGroup: "jobs/batch", DstGroup: "shop/db", Port: 5432, Transport: dpi.TCP, App: "postgres"},
			"learned-jobs.batch-db-postgres", "any", "postgres", policy.GroupRef{Group: "batch", Namespace: "jobs"}, "shop", ""},
		{Observation{SrcGroup: "shop/web", DstGroup: "github", Port: 443, Transport: dpi.TCP, App: "tls"},
			"learned-web-github-tls", "any", "tls", policy.GroupRef{Group: "web"}, "shop", ""},
	}
	s := groupSet(t)
	for _, c := range cases {
		r, err := Rule(c.obs)
		if err != nil {
			t.Fatal(err)
		}
		if r.Metadata.Name != c.name || r.Metadata.Namespace != c.ns || strings.Join(r.Spec.Ports, ",") != c.ports ||
			strings.Join(r.Spec.Applications, ",") != c.apps || r.Spec.From != c.from || !r.Spec.Learned || r.Spec.Action != policy.ActionAllow {
			t.Errorf("%+v:\n got %s/%s %+v", c.obs, r.Metadata.Namespace, r.Metadata.Name, r.Spec)
		}
		if c.comment != "" && r.Spec.Comment != c.comment {
			t.Errorf("comment %q, want %q", r.Spec.Comment, c.comment)
		}
		s.NetworkRules = append(s.NetworkRules, r)
	}
	// Learned rules are ordinary rules: the set still validates and exports.
	if err := s.Validate(); err != nil {
		t.Fatalf("learned rules do not validate: %v", err)
	}
	r, _ := Rule(Observation{SrcGroup: "shop/" + long, DstGroup: "other/" + long, App: "a" + long[:30]})
	r2, _ := Rule(Observation{SrcGroup: "shop/" + long, DstGroup: "other/" + long + "y", App: "a" + long[:30]})
	if len(r.Metadata.Name) > 253 || r.Metadata.Name == r2.Metadata.Name {
		t.Errorf("long names: %q %q", r.Metadata.Name, r2.Metadata.Name)
	}
	if _, err := Rule(Observation{SrcGroup: "shop/web"}); err == nil {
		t.Error("observation without destination accepted")
	}
	if _, err := Rule(Observation{SrcGroup: "shop/web", DstGroup: "shop/db"}); err == nil {
		t.Error("observation without app or port accepted")
	}
}

type fakeWriter struct {
	mu      sync.Mutex
	fail    int
	batches chan []policy.NetworkRule
}

func (w *fakeWriter) WriteLearned(ctx context.Context, rules []policy.NetworkRule) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail > 0 {
		w.fail--
		return errors.New("store unavailable")
	}
	w.batches <- rules
	return nil
}

type fakeModes struct {
	mu sync.Mutex
	m  map[string]policy.Mode
}

func (f *fakeModes) GroupMode(k string) (policy.Mode, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.m[k]
	return m, ok
}

func (f *fakeModes) set(k string, m policy.Mode) {
	f.mu.Lock()
	f.m[k] = m
	f.mu.Unlock()
}

type harness struct {
	l     *Learner
	clock *clockwork.FakeClock
	w     *fakeWriter
	modes *fakeModes
	ctx   context.Context
	done  chan error
}

const debounce = 2 * time.Second

func start(t *testing.T) *harness {
	t.Helper()
	h := &harness{clock: clockwork.NewFakeClock(), w: &fakeWriter{batches: make(chan []policy.NetworkRule, 16)},
		modes: &fakeModes{m: map[string]policy.Mode{"shop/web": policy.ModeDiscover, "shop/cache": policy.ModeDiscover, "shop/db": policy.ModeDiscover}}}
	l, err := New(Config{Writer: h.w, Modes: h.modes, Clock: h.clock, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Debounce: debounce})
	if err != nil {
		t.Fatal(err)
	}
	h.l = l
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	h.ctx = ctx
	h.done = make(chan error, 1)
	go func() { h.done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-h.done
	})
	return h
}

func (h *harness) sync(t *testing.T) {
	t.Helper()
	if err := h.l.Sync(h.ctx); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) noWrite(t *testing.T) {
	t.Helper()
	h.sync(t)
	select {
	case b := <-h.w.batches:
		t.Fatalf("unexpected write %v", b)
	default:
	}
}

func (h *harness) batch(t *testing.T) []policy.NetworkRule {
	t.Helper()
	select {
	case b := <-h.w.batches:
		return b
	case <-h.ctx.Done():
		t.Fatal("no batch written")
	}
	return nil
}

func names(rs []policy.NetworkRule) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Metadata.Key())
	}
	return strings.Join(out, ",")
}

var (
	webCache = Observation{SrcWorkload: "shop/web-1", SrcGroup: "shop/web", DstGroup: "shop/cache", Port: 6379, Transport: dpi.TCP, App: "redis"}
	webDB    = Observation{SrcWorkload: "shop/web-1", SrcGroup: "shop/web", DstGroup: "shop/db", Port: 5432, Transport: dpi.TCP, App: "postgres"}
)

func TestBatchAndDedupe(t *testing.T) {
	h := start(t)
	h.l.Observe(webCache)
	h.l.Observe(webDB)
	other := webCache
	other.SrcWorkload = "shop/web-2" // same rule from another replica
	h.l.Observe(other)
	h.noWrite(t)
	h.clock.Advance(debounce - time.Millisecond)
	h.noWrite(t)
	h.clock.Advance(time.Millisecond)
	if got := names(h.batch(t)); got != "shop/learned-web-cache-redis,shop/learned-web-db-postgres" {
		t.Fatalf("batch: %s", got)
	}
	// Already learned: never written again.
	h.l.Observe(webCache)
	h.sync(t)
	h.clock.Advance(debounce)
	h.noWrite(t)
	if st := h.l.Stats(); st.Learned != 2 || st.Duplicates != 2 || st.Observed != 4 {
		t.Fatalf("stats: %+v", st)
	}
	// The user deleted the learned rule while the group is still in discover: learned again.
	if err := h.l.Forget(h.ctx, "shop/learned-web-cache-redis"); err != nil {
		t.Fatal(err)
	}
	h.l.Observe(webCache)
	h.sync(t)
	h.clock.Advance(debounce)
	if got := names(h.batch(t)); got != "shop/learned-web-cache-redis" {
		t.Fatalf("after forget: %s", got)
	}
}

func TestFreezeOutsideDiscover(t *testing.T) {
	h := start(t)
	h.modes.set("shop/db", policy.ModeMonitor)
	h.l.Observe(webDB) // frozen at once
	h.l.Observe(webCache)
	h.sync(t)
	// Switching cache to protect before the batch is written freezes the pending rule too.
	h.modes.set("shop/cache", policy.ModeProtect)
	h.clock.Advance(debounce)
	h.noWrite(t)
	if st := h.l.Stats(); st.Frozen != 2 || st.Learned != 0 {
		t.Fatalf("stats: %+v", st)
	}
	// Back to discover: learning resumes.
	h.modes.set("shop/cache", policy.ModeDiscover)
	h.l.Observe(webCache)
	h.sync(t)
	h.clock.Advance(debounce)
	if got := names(h.batch(t)); got != "shop/learned-web-cache-redis" {
		t.Fatalf("batch: %s", got)
	}
}

func TestWriteErrorRetries(t *testing.T) {
	h := start(t)
	h.w.fail = 1
	h.l.Observe(webCache)
	h.sync(t)
	h.clock.Advance(debounce)
	h.noWrite(t)
	// The failed batch is re-armed; the next window writes it.
	if err := h.clock.BlockUntilContext(h.ctx, 1); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(debounce)
	if got := names(h.batch(t)); got != "shop/learned-web-cache-redis" {
		t.Fatalf("batch: %s", got)
	}
	if st := h.l.Stats(); st.WriteErrors != 1 || st.Learned != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestObserveNeverBlocks(t *testing.T) {
	l, err := New(Config{Writer: &fakeWriter{}, Modes: &fakeModes{}, Clock: clockwork.NewFakeClock(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Debounce: time.Second, Queue: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Not running: the queue fills and further observations are dropped, not blocked on.
	for i := 0; i < 5; i++ {
		l.Observe(webCache)
	}
	if st := l.Stats(); st.Dropped != 3 {
		t.Fatalf("dropped %d, want 3", st.Dropped)
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("empty config accepted")
	}
}

// TestLearnedRulesDecide closes the loop: observations from discover-mode decisions become
// rules under which the same flows are allowed by rule once the group is switched to protect.
func TestLearnedRulesDecide(t *testing.T) {
	s := groupSet(t)
	p, err := policy.Compile(s, policy.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	flow := policy.Flow{SrcGroups: []string{"shop/web"}, DstGroups: []string{"shop/cache"}, Port: 6379, Transport: dpi.TCP, App: "redis"}
	in := p.Input(&flow)
	d := p.Decide(&in)
	if !d.Learn || d.Verdict != policy.Allow {
		t.Fatalf("discover decision: %+v", d)
	}
	r, err := Rule(Observation{SrcGroup: "shop/web", DstGroup: d.Group, Port: flow.Port, Transport: flow.Transport, App: flow.App})
	if err != nil {
		t.Fatal(err)
	}
	s2 := s.Merge(&policy.Set{NetworkRules: []policy.NetworkRule{r}})
	s2, _ = s2.SetMode("shop/cache", policy.ModeProtect)
	if err := s2.Validate(); err != nil {
		t.Fatal(err)
	}
	p2, err := policy.Compile(s2, policy.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in2 := p2.Input(&flow)
	if d := p2.Decide(&in2); d.Verdict != policy.Allow || d.RuleID != "shop/learned-web-cache-redis" || !d.Learned {
		t.Fatalf("protect with learned rule: %+v", d)
	}
	other := flow
	other.SrcGroups = []string{"shop/db"}
	in3 := p2.Input(&other)
	if d := p2.Decide(&in3); d.Verdict != policy.Deny {
		t.Fatalf("unlearned flow in protect: %+v", d)
	}
}
