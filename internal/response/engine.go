// Package response answers threats and violations the way the operator chose: it decides,
// per event, the verdict for the data path (block or alert, from the group's mode, a sensor's
// action and the ResponseRules) and carries out the side effects — quarantine of the source
// workload (once per workload, audited), a packet capture, webhook and syslog notifications —
// off the data path, then emits the event with the actions taken and the capture reference.
//
// Wiring:
//
//	eng, _ := response.New(response.Config{Clock: clk, Log: log, Events: pipeline,
//		Quarantiner: q, Capturer: response.CapturerFunc(func(ctx context.Context, t response.CaptureTarget) (string, error) {
//			return mgr.Trigger(capture.Request{ConnID: t.ConnID, Workload: t.Workload, Reason: t.Reason})
//		}), Webhook: webhookPipeline, Syslog: syslogPipeline, Registry: reg})
//	eng.SetRules(set.ResponseRules)            // after every policy change
//	go eng.Run(ctx)
//	d := eng.Handle(ctx, response.Input{Event: ev, ConnID: id, Mode: mode}) // sidecar: d.Block
package response

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/policy"
)

// Quarantiner isolates a workload (intercept.Quarantine in its network namespace, in
// production) and lifts the isolation.
type Quarantiner interface {
	Quarantine(ctx context.Context, namespace, pod string) error
	Release(ctx context.Context, namespace, pod string) error
}

// CaptureTarget is what to capture: one connection, else every connection of a workload.
type CaptureTarget struct {
	ConnID   string
	Workload string // "namespace/pod"
	Reason   string
}

// Capturer starts a capture and returns its ID at once (the pcap is written later).
type Capturer interface {
	Capture(ctx context.Context, t CaptureTarget) (string, error)
}

// CapturerFunc adapts a function (say around capture.Manager.Trigger) to Capturer.
type CapturerFunc func(ctx context.Context, t CaptureTarget) (string, error)

// Capture implements Capturer.
func (f CapturerFunc) Capture(ctx context.Context, t CaptureTarget) (string, error) { return f(ctx, t) }

// ModeLookup returns a group's mode by its key ("ns/name").
type ModeLookup interface {
	GroupMode(group string) (policy.Mode, bool)
}

// Config configures an Engine.
type Config struct {
	Clock    clockwork.Clock
	Log      *slog.Logger
	Events   events.Sink           // every reported event and audit record (the pipeline); required
	Registry prometheus.Registerer // required: the engine's drop counter goes there

	Quarantiner Quarantiner // nil: quarantine actions fail (audited)
	Capturer    Capturer    // nil: capture actions fail (logged)
	Webhook     events.Sink // webhook action target (a Pipeline with webhook exporters)
	Syslog      events.Sink // syslog action target
	Modes       ModeLookup  // nil: inputs without Mode count as monitor

	Queue           int           // events waiting for side effects; default 1024
	CaptureCooldown time.Duration // one capture per connection/workload per cooldown; default 30s
}

func (c Config) validate() error {
	if c.Clock == nil || c.Log == nil || c.Events == nil || c.Registry == nil {
		return errors.New("response: Clock, Log, Events and Registry are required")
	}
	if c.Queue < 0 || c.CaptureCooldown < 0 {
		return fmt.Errorf("response: queue (%d) and capture cooldown (%v) must not be negative", c.Queue, c.CaptureCooldown)
	}
	return nil
}

// Engine decides and carries out responses.
type Engine struct {
	cfg     Config
	rules   atomic.Pointer[[]policy.ResponseRule]
	queue   chan job
	dropped prometheus.Counter
	actions *prometheus.CounterVec

	mu          sync.Mutex
	quarantined map[string]quarantine    // "ns/pod" -> since, why
	captures    map[string]recentCapture // connID or workload -> last capture
}

type job struct {
	in Input
	d  Decision
}

type quarantine struct {
	since  time.Time
	reason string
}

type recentCapture struct {
	id string
	at time.Time
}

// New validates cfg and registers the engine's metrics.
func New(cfg Config) (*Engine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Queue == 0 {
		cfg.Queue = 1024
	}
	if cfg.CaptureCooldown == 0 {
		cfg.CaptureCooldown = 30 * time.Second
	}
	e := &Engine{
		cfg:   cfg,
		queue: make(chan job, cfg.Queue),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_response_dropped_total",
			Help: "Events whose response side effects were skipped because the engine queue was full (the verdict still applied).",
		}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_response_actions_total",
			Help: "Response actions carried out, by action and result.",
		}, []string{"action", "result"}),
		quarantined: map[string]quarantine{},
		captures:    map[string]recentCapture{},
	}
	for _, c := range []prometheus.Collector{e.dropped, e.actions} {
		if err := cfg.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("response: register metrics: %w", err)
		}
	}
	empty := []policy.ResponseRule{}
	e.rules.Store(&empty)
	return e, nil
}

// SetRules replaces the response rules (call after every policy change).
func (e *Engine) SetRules(rules []policy.ResponseRule) {
	r := append([]policy.ResponseRule(nil), rules...)
	e.rules.Store(&r)
}

// Decide returns the decision for an input without side effects.
func (e *Engine) Decide(in Input) Decision {
	if in.Mode == "" {
		in.Mode = e.mode(&in.Event)
	}
	return Decide(*e.rules.Load(), in)
}

func (e *Engine) mode(ev *events.Event) policy.Mode {
	if e.cfg.Modes != nil {
		for _, g := range []string{ev.Destination.Group, ev.Source.Group} {
			if g == "" {
				continue
			}
			if m, ok := e.cfg.Modes.GroupMode(g); ok {
				return m
			}
		}
	}
	return policy.ModeMonitor
}

// Handle decides at once (the data path acts on Decision.Block) and queues the side effects
// and the event for Run. It never blocks: when the queue is full the side effects are skipped
// and counted, the verdict stands, and the event is emitted at once (Sinks do not block).
func (e *Engine) Handle(ctx context.Context, in Input) Decision {
	if in.Mode == "" {
		in.Mode = e.mode(&in.Event)
	}
	d := Decide(*e.rules.Load(), in)
	if !d.Report {
		return d
	}
	select {
	case e.queue <- job{in: in, d: d}:
	default:
		e.dropped.Inc()
		ev, taken := e.reported(in, d)
		ev.Action = strings.Join(taken, ",")
		e.cfg.Events.Emit(ctx, ev)
	}
	return d
}

// reported is the event as it will be emitted, and the actions taken before any side effect.
func (e *Engine) reported(in Input, d Decision) (events.Event, []string) {
	ev := in.Event
	if ev.Time.IsZero() {
		ev.Time = e.cfg.Clock.Now()
	}
	taken := []string{string(d.Verdict())}
	if ev.Kind != events.KindThreat && ev.Action != "" {
		// Violations and other kinds were decided upstream (the policy's allow/deny): keep that.
		taken[0] = ev.Action
	}
	return ev, taken
}

// Run carries out queued responses until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-e.queue:
			e.respond(ctx, j.in, j.d)
		}
	}
}

// respond runs one event's side effects in a fixed order — capture before quarantine, so the
// capture still sees the connections quarantine is about to cut — and emits the event.
func (e *Engine) respond(ctx context.Context, in Input, d Decision) {
	ev, taken := e.reported(in, d)
	if d.Has(Capture) && ev.CaptureRef != "" {
		// The sidecar already captured (the plaintext lives only there): no second capture.
		taken = append(taken, string(Capture))
	} else if d.Has(Capture) {
		if id, err := e.capture(ctx, in); err != nil {
			e.cfg.Log.Warn("response capture failed", "event", ev.Name, "err", err)
			e.actions.WithLabelValues(string(Capture), "error").Inc()
		} else {
			ev.CaptureRef = id
			taken = append(taken, string(Capture))
		}
	}
	if d.Has(Quarantine) {
		ns, pod := policy.SplitKey(ev.Source.Workload)
		reason := fmt.Sprintf("%s %s (rules: %s)", ev.Kind, ev.Name, strings.Join(d.Rules, ", "))
		if ev.Source.Workload == "" || ns == "" {
			e.audit(ctx, events.Event{Name: "quarantine.skipped", Action: "quarantine", Severity: events.SeverityMedium,
				Reason: "source is not a mesh workload: " + reason, Destination: ev.Destination})
		} else if err := e.Quarantine(ctx, ns, pod, reason); err == nil {
			taken = append(taken, string(Quarantine))
		}
	}
	ev.Action = strings.Join(taken, ",")
	e.cfg.Events.Emit(ctx, ev)
	if d.Has(Webhook) {
		e.notify(ctx, Webhook, e.cfg.Webhook, ev)
	}
	if d.Has(Syslog) {
		e.notify(ctx, Syslog, e.cfg.Syslog, ev)
	}
}

func (e *Engine) notify(ctx context.Context, a Action, s events.Sink, ev events.Event) {
	if s == nil {
		e.cfg.Log.Warn("response action has no notifier configured", "action", a, "event", ev.Name)
		e.actions.WithLabelValues(string(a), "unconfigured").Inc()
		return
	}
	s.Emit(ctx, ev)
	e.actions.WithLabelValues(string(a), "ok").Inc()
}

// capture triggers (or reuses, within the cooldown) a capture of the event's connection, or
// of its source workload (else destination workload) when there is no connection.
func (e *Engine) capture(ctx context.Context, in Input) (string, error) {
	if e.cfg.Capturer == nil {
		return "", errors.New("no capturer configured (set response.Config.Capturer)")
	}
	t := CaptureTarget{ConnID: in.ConnID, Workload: in.Event.Source.Workload, Reason: in.Event.Name}
	if t.Workload == "" {
		t.Workload = in.Event.Destination.Workload
	}
	key := "conn:" + t.ConnID
	if t.ConnID == "" {
		key = "workload:" + t.Workload
	}
	if t.ConnID == "" && t.Workload == "" {
		return "", errors.New("event names neither a connection nor a workload")
	}
	now := e.cfg.Clock.Now()
	e.mu.Lock()
	if rc, ok := e.captures[key]; ok && now.Sub(rc.at) < e.cfg.CaptureCooldown {
		e.mu.Unlock()
		return rc.id, nil
	}
	e.mu.Unlock()
	id, err := e.cfg.Capturer.Capture(ctx, t)
	if err != nil {
		return "", err
	}
	e.actions.WithLabelValues(string(Capture), "ok").Inc()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.captures) >= 4096 { // bound the cooldown map: forget expired entries
		for k, rc := range e.captures {
			if now.Sub(rc.at) >= e.cfg.CaptureCooldown {
				delete(e.captures, k)
			}
		}
	}
	e.captures[key] = recentCapture{id: id, at: now}
	return id, nil
}

// Quarantine isolates ns/pod once: a workload already quarantined is left alone (no second
// call, no second audit record). The CLI's `meshguard quarantine NS/POD` lands here too.
func (e *Engine) Quarantine(ctx context.Context, ns, pod, reason string) error {
	key := policy.Key(ns, pod)
	e.mu.Lock()
	if _, ok := e.quarantined[key]; ok {
		e.mu.Unlock()
		return nil
	}
	// Marked before the call so concurrent triggers do not quarantine twice; unmarked on failure.
	e.quarantined[key] = quarantine{since: e.cfg.Clock.Now(), reason: reason}
	e.mu.Unlock()
	if e.cfg.Quarantiner == nil {
		e.unmark(key)
		err := errors.New("response: no quarantiner configured (set response.Config.Quarantiner)")
		e.audit(ctx, events.Event{Name: "quarantine.failed", Action: "quarantine", Severity: events.SeverityHigh,
			Source: events.Endpoint{Workload: key}, Reason: err.Error()})
		e.actions.WithLabelValues(string(Quarantine), "error").Inc()
		return err
	}
	if err := e.cfg.Quarantiner.Quarantine(ctx, ns, pod); err != nil {
		e.unmark(key)
		e.audit(ctx, events.Event{Name: "quarantine.failed", Action: "quarantine", Severity: events.SeverityHigh,
			Source: events.Endpoint{Workload: key}, Reason: fmt.Sprintf("%s: %v", reason, err)})
		e.actions.WithLabelValues(string(Quarantine), "error").Inc()
		return fmt.Errorf("response: quarantine %s: %w", key, err)
	}
	e.actions.WithLabelValues(string(Quarantine), "ok").Inc()
	e.audit(ctx, events.Event{Name: "quarantine.applied", Action: "quarantine", Severity: events.SeverityHigh,
		Source: events.Endpoint{Workload: key}, Reason: reason})
	return nil
}

// Adopt records ns/pod as quarantined without calling the Quarantiner: a restarted
// controller finds the isolation still in place (the engine's memory is not persisted).
func (e *Engine) Adopt(ns, pod, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.quarantined[policy.Key(ns, pod)]; !ok {
		e.quarantined[policy.Key(ns, pod)] = quarantine{since: e.cfg.Clock.Now(), reason: reason}
	}
}

// Release lifts a quarantine (`meshguard quarantine NS/POD --release`). Releasing a workload
// the engine does not know as quarantined still calls the Quarantiner: after a restart the
// engine's memory is empty but the nftables table may remain.
func (e *Engine) Release(ctx context.Context, ns, pod string) error {
	key := policy.Key(ns, pod)
	if e.cfg.Quarantiner == nil {
		return errors.New("response: no quarantiner configured (set response.Config.Quarantiner)")
	}
	if err := e.cfg.Quarantiner.Release(ctx, ns, pod); err != nil {
		e.audit(ctx, events.Event{Name: "quarantine.release.failed", Action: "release", Severity: events.SeverityHigh,
			Source: events.Endpoint{Workload: key}, Reason: err.Error()})
		return fmt.Errorf("response: release %s: %w", key, err)
	}
	e.unmark(key)
	e.audit(ctx, events.Event{Name: "quarantine.released", Action: "release", Severity: events.SeverityInfo,
		Source: events.Endpoint{Workload: key}})
	return nil
}

func (e *Engine) unmark(key string) {
	e.mu.Lock()
	delete(e.quarantined, key)
	e.mu.Unlock()
}

// QuarantineStatus is one quarantined workload, for `meshguard status`.
type QuarantineStatus struct {
	Workload string    `json:"workload"`
	Since    time.Time `json:"since"`
	Reason   string    `json:"reason,omitempty"` // the event and rules, or the operator's reason
}

// Quarantined lists the quarantined workloads, sorted.
func (e *Engine) Quarantined() []QuarantineStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]QuarantineStatus, 0, len(e.quarantined))
	for w, q := range e.quarantined {
		out = append(out, QuarantineStatus{Workload: w, Since: q.since, Reason: q.reason})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Workload < out[j].Workload })
	return out
}

func (e *Engine) audit(ctx context.Context, ev events.Event) {
	ev.Kind = events.KindAudit
	ev.Time = e.cfg.Clock.Now()
	e.cfg.Events.Emit(ctx, ev)
}
