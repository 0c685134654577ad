package controller

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/response"
	"github.com/meshguard/meshguard/internal/xds"
)

// Bounds on what a sidecar may report: its input is not trusted further than its identity.
const (
	maxThreatsPerBatch = 1024
	maxNameLen         = 128  // names, groups, workloads, identities, addresses, modes
	maxTextLen         = 1024 // reason, l7 summary, rules
	maxReportSkew      = 5 * time.Minute
)

// Responder is what the threat sink needs from the response engine.
type Responder interface {
	Handle(ctx context.Context, in response.Input) response.Decision
}

// threatSink implements xds.ThreatSink: it turns each reported threat into an event and lets
// the response engine carry out what needs the control plane (quarantine, notifications,
// event store). The sidecar already blocked and captured.
type threatSink struct {
	engine   Responder
	rules    func() // brings the engine's rules up to date; may be nil
	clock    clockwork.Clock
	log      *slog.Logger
	rejected prometheus.Counter
}

var _ xds.ThreatSink = (*threatSink)(nil)

func newThreatSink(engine Responder, clock clockwork.Clock, log *slog.Logger, reg prometheus.Registerer) (*threatSink, error) {
	t := &threatSink{engine: engine, clock: clock, log: log, rejected: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshguard_threats_rejected_total",
		Help: "Reported threats the controller refused: over the batch bound, or naming neither the reporting workload as source nor as destination.",
	})}
	if err := reg.Register(t.rejected); err != nil {
		return nil, err
	}
	return t, nil
}

// HandleThreats implements xds.ThreatSink.
func (t *threatSink) HandleThreats(ctx context.Context, from xds.Node, req *xdsv1.ReportThreatsRequest) error {
	threats := req.GetThreats()
	if len(threats) > maxThreatsPerBatch {
		t.rejected.Add(float64(len(threats) - maxThreatsPerBatch))
		t.log.Warn("threat batch over the bound: rest ignored", "sidecar", from.Key(), "threats", len(threats), "bound", maxThreatsPerBatch)
		threats = threats[:maxThreatsPerBatch]
	}
	reporter := policy.Key(from.Namespace, from.Workload)
	now := t.clock.Now()
	if t.rules != nil {
		t.rules()
	}
	for _, te := range threats {
		in := threatInput(te, now)
		// A sidecar speaks for its own pod: the reporter is the destination (inbound
		// detection) or the source (its DNS proxy). Anything else could aim a quarantine at
		// an unrelated workload.
		if in.Event.Source.Workload != reporter && in.Event.Destination.Workload != reporter {
			t.rejected.Inc()
			t.log.Warn("threat report about other workloads refused", "sidecar", reporter,
				"source", in.Event.Source.Workload, "destination", in.Event.Destination.Workload, "threat", in.Event.Name)
			continue
		}
		t.engine.Handle(ctx, in)
	}
	if d := req.GetDropped(); d > 0 {
		t.log.Warn("sidecar dropped threat events (queue full)", "sidecar", reporter, "dropped", d)
	}
	return nil
}

// threatInput maps one reported threat to the engine's input, bounding every field.
func threatInput(te *xdsv1.ThreatEvent, now time.Time) response.Input {
	ev := events.Event{
		Kind:     events.KindThreat,
		Name:     clip(te.GetName(), maxNameLen),
		Severity: severity(te.GetSeverity()),
		Action:   clip(te.GetAction(), maxNameLen),
		Reason:   clip(te.GetReason(), maxTextLen),
		Source: events.Endpoint{Workload: clip(te.GetSourceWorkload(), maxNameLen), Identity: clip(te.GetSourceSpiffeId(), maxNameLen*2),
			Group: clip(te.GetSourceGroup(), maxNameLen), Address: clip(te.GetSourceAddr(), maxNameLen)},
		Destination: events.Endpoint{Workload: clip(te.GetDestinationWorkload(), maxNameLen), Identity: clip(te.GetDestinationSpiffeId(), maxNameLen*2),
			Group: clip(te.GetDestinationGroup(), maxNameLen), Address: clip(te.GetDestinationAddr(), maxNameLen)},
		Protocol:   clip(te.GetProtocol(), maxNameLen),
		L7:         clip(te.GetL7(), maxTextLen),
		CaptureRef: clip(te.GetCaptureRef(), maxNameLen),
		Time:       now,
	}
	if ev.Name == "" {
		ev.Name = "unnamed"
	}
	if c := te.GetCategory(); c != "" && !strings.Contains(ev.Reason, c) {
		ev.Reason = clip(c+": "+ev.Reason, maxTextLen)
	}
	if ev.Action != "block" && ev.Action != "alert" {
		ev.Action = ""
	}
	evidence := te.GetEvidence()
	if len(evidence) > events.MaxEvidence {
		evidence = evidence[:events.MaxEvidence]
	}
	ev.Evidence = bytes.Clone(evidence)
	if ns := te.GetTimeUnixNano(); ns > 0 {
		if at := time.Unix(0, ns); at.Before(now.Add(maxReportSkew)) && at.After(now.Add(-24*time.Hour)) {
			ev.Time = at
		}
	}
	if len(te.GetRules()) > 0 {
		ev.RuleID = clip(strings.Join(te.GetRules(), ","), maxTextLen)
	}
	in := response.Input{Event: ev, ConnID: clip(te.GetConnId(), maxNameLen)}
	switch m := policy.Mode(te.GetMode()); m {
	case policy.ModeDiscover, policy.ModeMonitor, policy.ModeProtect:
		in.Mode = m
	}
	switch a := policy.SensorAction(te.GetSensorAction()); a {
	case policy.SensorAlert, policy.SensorBlock:
		in.SensorAction = a
	}
	return in
}

func severity(s string) events.Severity {
	switch v := events.Severity(s); v {
	case events.SeverityInfo, events.SeverityLow, events.SeverityMedium, events.SeverityHigh, events.SeverityCritical:
		return v
	}
	return events.SeverityMedium
}

// clip replaces control characters (log injection) and invalid UTF-8, then bounds s to n
// bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) > 4*n {
		s = s[:4*n] // bound the work; the cut below makes it exact
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s) // invalid bytes come out as U+FFFD
	if len(s) > n {
		i := n
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	return s
}

// RuleSetter takes the response rules (response.Engine.SetRules).
type RuleSetter interface {
	SetRules(rules []policy.ResponseRule)
}

// ruleFollower keeps the engine's response rules those of the current policy: Run follows
// changes, and sync lets a report that arrives right after a change use the new rules
// without waiting for Run's goroutine.
type ruleFollower struct {
	pol *PolicyService
	eng RuleSetter

	mu      sync.Mutex
	applied *policy.Set
}

func (f *ruleFollower) sync() {
	set := f.pol.PolicySet()
	f.mu.Lock()
	defer f.mu.Unlock()
	if set != f.applied {
		f.eng.SetRules(set.ResponseRules)
		f.applied = set
	}
}

// Run follows policy changes until ctx ends.
func (f *ruleFollower) Run(ctx context.Context) error {
	for {
		ch := f.pol.Changed()
		f.sync()
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		}
	}
}
