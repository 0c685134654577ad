package response

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/policy"
)

func rule(ns, name string, m policy.EventMatch, actions ...string) policy.ResponseRule {
	return policy.ResponseRule{Metadata: policy.ObjectMeta{Namespace: ns, Name: name},
		Spec: policy.ResponseRuleSpec{Match: m, Actions: actions}}
}

func threatEvent(name string, sev events.Severity) events.Event {
	return events.Event{Kind: events.KindThreat, Name: name, Severity: sev,
		Source:      events.Endpoint{Workload: "shop/web-1", Group: "shop/web"},
		Destination: events.Endpoint{Workload: "shop/api-0", Group: "shop/api"}}
}

func TestDecide(t *testing.T) {
	dnsRule := rule("", "tunnel", policy.EventMatch{Kind: "threat", Name: "dns-tunnel"}, "quarantine", "capture", "webhook")
	highAlert := rule("", "high-only-alert", policy.EventMatch{Severity: "high"}, "alert")
	apiBlock := rule("shop", "api-block", policy.EventMatch{Group: &policy.GroupRef{Group: "api"}}, "block", "capture")
	quiet := rule("", "quiet", policy.EventMatch{Name: "request-flood"}, "suppress", "quarantine")
	other := rule("bank", "other-ns", policy.EventMatch{}, "quarantine")

	cases := []struct {
		name    string
		rules   []policy.ResponseRule
		in      Input
		verdict Action
		actions []Action
	}{
		{"protect blocks threats", nil, Input{Event: threatEvent("sqli", "high"), Mode: policy.ModeProtect}, Block, nil},
		{"monitor alerts", nil, Input{Event: threatEvent("sqli", "high"), Mode: policy.ModeMonitor}, Alert, nil},
		{"discover alerts", nil, Input{Event: threatEvent("sqli", "high"), Mode: policy.ModeDiscover}, Alert, nil},
		{"sensor block overrides monitor", nil, Input{Event: threatEvent("waf", "high"), Mode: policy.ModeMonitor, SensorAction: policy.SensorBlock}, Block, nil},
		{"sensor alert overrides protect", nil, Input{Event: threatEvent("dlp", "high"), Mode: policy.ModeProtect, SensorAction: policy.SensorAlert}, Alert, nil},
		{"violations are reported, not re-decided", nil, Input{Event: events.Event{Kind: events.KindViolation}, Mode: policy.ModeProtect}, Alert, nil},
		{"rule adds actions, keeps default verdict", []policy.ResponseRule{dnsRule}, Input{Event: threatEvent("dns-tunnel", "high"), Mode: policy.ModeProtect}, Block, []Action{Quarantine, Capture, Webhook}},
		{"rule name mismatch", []policy.ResponseRule{dnsRule}, Input{Event: threatEvent("sqli", "high"), Mode: policy.ModeMonitor}, Alert, nil},
		{"rule alert overrides protect", []policy.ResponseRule{highAlert}, Input{Event: threatEvent("sqli", "critical"), Mode: policy.ModeProtect}, Alert, nil},
		{"severity below minimum", []policy.ResponseRule{highAlert}, Input{Event: threatEvent("sqli", "medium"), Mode: policy.ModeProtect}, Block, nil},
		{"block wins over alert", []policy.ResponseRule{highAlert, apiBlock}, Input{Event: threatEvent("xss", "high"), Mode: policy.ModeMonitor}, Block, []Action{Capture}},
		{"group ref by namespace-relative name", []policy.ResponseRule{apiBlock}, Input{Event: threatEvent("xss", "low"), Mode: policy.ModeDiscover}, Block, []Action{Capture}},
		{"suppress cancels all", []policy.ResponseRule{quiet, dnsRule}, Input{Event: threatEvent("request-flood", "medium"), Mode: policy.ModeProtect}, Suppress, nil},
		{"namespaced rule ignores other namespaces", []policy.ResponseRule{other}, Input{Event: threatEvent("sqli", "high")}, Alert, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(c.rules, c.in)
			if d.Verdict() != c.verdict || !slices.Equal(d.Actions, c.actions) {
				t.Fatalf("verdict %s actions %v (rules %v), want %s %v", d.Verdict(), d.Actions, d.Rules, c.verdict, c.actions)
			}
		})
	}
}

// fakes

type fakeQuarantiner struct {
	mu       sync.Mutex
	calls    []string
	released []string
	fail     error
}

func (f *fakeQuarantiner) Quarantine(_ context.Context, ns, pod string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, ns+"/"+pod)
	return f.fail
}

func (f *fakeQuarantiner) Release(_ context.Context, ns, pod string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released = append(f.released, ns+"/"+pod)
	return nil
}

type fakeCapturer struct {
	mu      sync.Mutex
	targets []CaptureTarget
}

func (f *fakeCapturer) Capture(_ context.Context, t CaptureTarget) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.targets = append(f.targets, t)
	return fmt.Sprintf("cap-%d", len(f.targets)), nil
}

type chanSink chan events.Event

func (c chanSink) Emit(_ context.Context, e events.Event) { c <- e }

type modes map[string]policy.Mode

func (m modes) GroupMode(g string) (policy.Mode, bool) { v, ok := m[g]; return v, ok }

type harness struct {
	eng     *Engine
	q       *fakeQuarantiner
	c       *fakeCapturer
	out     chanSink
	hook    chanSink
	clk     *clockwork.FakeClock
	reg     *prometheus.Registry
	ctx     context.Context
	running bool
}

func newHarness(t *testing.T, queue int, run bool) *harness {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	h := &harness{q: &fakeQuarantiner{}, c: &fakeCapturer{}, out: make(chanSink, 100), hook: make(chanSink, 100),
		clk: clockwork.NewFakeClock(), reg: prometheus.NewRegistry(), ctx: ctx}
	eng, err := New(Config{Clock: h.clk, Log: slog.New(slog.DiscardHandler), Events: h.out, Registry: h.reg,
		Quarantiner: h.q, Capturer: h.c, Webhook: h.hook, Modes: modes{"shop/api": policy.ModeProtect}, Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	h.eng = eng
	if run {
		go eng.Run(ctx)
	}
	return h
}

func (h *harness) next(t *testing.T) events.Event {
	t.Helper()
	select {
	case e := <-h.out:
		return e
	case <-h.ctx.Done():
		t.Fatal("no event emitted")
	}
	return events.Event{}
}

func TestEngineDNSTunnelQuarantinesOnceAndCaptures(t *testing.T) {
	h := newHarness(t, 16, true)
	h.eng.SetRules([]policy.ResponseRule{rule("", "tunnel", policy.EventMatch{Kind: "threat", Name: "dns-tunnel"}, "quarantine", "capture", "webhook")})
	ev := threatEvent("dns-tunnel", "high")
	ev.Destination = events.Endpoint{Address: "10.9.9.9:53"} // external: mode falls back to monitor
	d := h.eng.Handle(h.ctx, Input{Event: ev})
	if d.Block || !d.Has(Quarantine) || !d.Has(Capture) {
		t.Fatalf("decision %+v", d)
	}
	audit := h.next(t)
	if audit.Kind != events.KindAudit || audit.Name != "quarantine.applied" || audit.Source.Workload != "shop/web-1" {
		t.Fatalf("first emitted = %+v, want the quarantine audit", audit)
	}
	got := h.next(t)
	if got.Action != "alert,capture,quarantine" || got.CaptureRef != "cap-1" {
		t.Fatalf("threat event action %q captureRef %q", got.Action, got.CaptureRef)
	}
	if w := <-h.hook; w.CaptureRef != "cap-1" {
		t.Fatalf("webhook got %+v", w)
	}
	if h.c.targets[0] != (CaptureTarget{Workload: "shop/web-1", Reason: "dns-tunnel"}) {
		t.Fatalf("capture target %+v", h.c.targets[0])
	}
	// A second detection: no second quarantine, no second audit, capture reused (cooldown).
	h.eng.Handle(h.ctx, Input{Event: ev})
	got = h.next(t)
	if got.Kind != events.KindThreat || got.CaptureRef != "cap-1" {
		t.Fatalf("second event %+v (want the threat, reusing cap-1)", got)
	}
	if len(h.q.calls) != 1 || len(h.c.targets) != 1 {
		t.Fatalf("quarantine calls %v captures %v", h.q.calls, h.c.targets)
	}
	if s := h.eng.Quarantined(); len(s) != 1 || s[0].Workload != "shop/web-1" || !strings.Contains(s[0].Reason, "dns-tunnel") {
		t.Fatalf("status %+v (want the workload and a reason naming the threat)", s)
	}
	// After the cooldown a new capture is taken.
	h.clk.Advance(31 * time.Second)
	h.eng.Handle(h.ctx, Input{Event: ev})
	if got := h.next(t); got.CaptureRef != "cap-2" {
		t.Fatalf("after cooldown captureRef %q", got.CaptureRef)
	}
	// Release: audited, and a later detection quarantines again.
	if err := h.eng.Release(h.ctx, "shop", "web-1"); err != nil {
		t.Fatal(err)
	}
	if a := h.next(t); a.Name != "quarantine.released" {
		t.Fatalf("release audit %+v", a)
	}
	if len(h.eng.Quarantined()) != 0 || h.q.released[0] != "shop/web-1" {
		t.Fatal("release did not clear the quarantine")
	}
	h.eng.Handle(h.ctx, Input{Event: ev})
	if a := h.next(t); a.Name != "quarantine.applied" || len(h.q.calls) != 2 {
		t.Fatalf("requarantine: %+v calls %v", a, h.q.calls)
	}
}

func TestEngineModeLookupAndConnCapture(t *testing.T) {
	h := newHarness(t, 16, true)
	h.eng.SetRules([]policy.ResponseRule{rule("shop", "cap", policy.EventMatch{Severity: "high"}, "capture")})
	d := h.eng.Handle(h.ctx, Input{Event: threatEvent("sqli", "critical"), ConnID: "c42"})
	if !d.Block {
		t.Fatal("destination group shop/api is in protect mode: the threat must be blocked")
	}
	got := h.next(t)
	if got.Action != "block,capture" || got.CaptureRef != "cap-1" || h.c.targets[0].ConnID != "c42" {
		t.Fatalf("event %+v target %+v", got, h.c.targets)
	}
}

func TestEngineKeepsPolicyActionOfViolations(t *testing.T) {
	h := newHarness(t, 16, true)
	h.eng.SetRules([]policy.ResponseRule{rule("", "v", policy.EventMatch{Kind: "violation"}, "webhook")})
	h.eng.Handle(h.ctx, Input{Event: events.Event{Kind: events.KindViolation, Action: "deny", RuleID: "default-deny"}})
	if got := h.next(t); got.Action != "deny" {
		t.Fatalf("violation action = %q, want the policy's deny", got.Action)
	}
	if w := <-h.hook; w.Kind != events.KindViolation {
		t.Fatalf("webhook got %+v", w)
	}
}

func TestEngineQuarantineFailureIsAuditedAndRetried(t *testing.T) {
	h := newHarness(t, 16, false)
	h.q.fail = errors.New("netns gone")
	if err := h.eng.Quarantine(h.ctx, "shop", "web-1", "manual"); err == nil || !strings.Contains(err.Error(), "netns gone") {
		t.Fatalf("err %v", err)
	}
	if a := h.next(t); a.Name != "quarantine.failed" || !strings.Contains(a.Reason, "netns gone") {
		t.Fatalf("audit %+v", a)
	}
	h.q.fail = nil
	if err := h.eng.Quarantine(h.ctx, "shop", "web-1", "manual"); err != nil {
		t.Fatal(err)
	}
	if len(h.q.calls) != 2 {
		t.Fatalf("a failed quarantine must not count as applied: calls %v", h.q.calls)
	}
}

func TestEngineFullQueueNeverBlocks(t *testing.T) {
	h := newHarness(t, 2, false) // not running: the queue only fills
	done := make(chan struct{})
	go func() {
		for range 10 {
			if d := h.eng.Handle(h.ctx, Input{Event: threatEvent("sqli", "high"), Mode: policy.ModeProtect}); !d.Block {
				t.Error("verdict lost when the queue is full")
			}
		}
		close(done)
	}()
	select {
	case <-done:
	case <-h.ctx.Done():
		t.Fatal("Handle blocked on a full queue")
	}
	var m dto.Metric
	_ = h.eng.dropped.Write(&m)
	if n := m.GetCounter().GetValue(); n != 8 {
		t.Fatalf("dropped = %v, want 8", n)
	}
	// The side effects were dropped, the events were not: each says what the verdict did.
	if len(h.out) != 8 {
		t.Fatalf("%d events emitted for 8 overflowing inputs, want 8", len(h.out))
	}
	if e := <-h.out; e.Name != "sqli" || e.Action != "block" || e.Time.IsZero() {
		t.Fatalf("overflow event = %+v, want sqli with action block", e)
	}
	// Suppressed events never reach the queue.
	h.eng.SetRules([]policy.ResponseRule{rule("", "q", policy.EventMatch{Name: "sqli"}, "suppress")})
	if d := h.eng.Handle(h.ctx, Input{Event: threatEvent("sqli", "high")}); d.Report {
		t.Fatal("suppressed event reported")
	}
}

// TestEngineKeepsSidecarCapture: an event the sidecar already captured (CaptureRef set) is
// not captured again; the capture action is recorded as taken with the sidecar's reference.
func TestEngineKeepsSidecarCapture(t *testing.T) {
	h := newHarness(t, 16, true)
	h.eng.SetRules([]policy.ResponseRule{rule("", "cap", policy.EventMatch{Kind: "threat"}, "capture")})
	ev := threatEvent("sqli", "high")
	ev.CaptureRef = "20260101T000000Z-0123456789ab"
	h.eng.Handle(h.ctx, Input{Event: ev, ConnID: "c1"})
	got := h.next(t)
	if got.CaptureRef != ev.CaptureRef || !strings.Contains(got.Action, "capture") {
		t.Fatalf("event action %q captureRef %q, want capture taken with the sidecar's ref", got.Action, got.CaptureRef)
	}
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	if len(h.c.targets) != 0 {
		t.Fatalf("capturer called %v for an event the sidecar captured", h.c.targets)
	}
}

func TestEngineAdoptListsWithoutCalling(t *testing.T) {
	h := newHarness(t, 4, false)
	h.eng.Adopt("shop", "web-1", "found at start")
	if s := h.eng.Quarantined(); len(s) != 1 || s[0].Workload != "shop/web-1" || s[0].Reason != "found at start" {
		t.Fatalf("status %+v", s)
	}
	if err := h.eng.Quarantine(h.ctx, "shop", "web-1", "again"); err != nil || len(h.q.calls) != 0 {
		t.Fatalf("adopted workload quarantined again: %v %v", err, h.q.calls)
	}
}
