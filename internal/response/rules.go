package response

import (
	"slices"
	"strings"

	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/policy"
)

// Action is one response action; the values are policy.ResponseActions.
type Action string

const (
	Alert      Action = "alert"      // report the event (the default outside protect mode)
	Block      Action = "block"      // the data path refuses the request or connection
	Quarantine Action = "quarantine" // cut every connection of the source workload
	Capture    Action = "capture"    // write a pcap of the connection (or workload)
	Webhook    Action = "webhook"    // send the event to the webhook notifier
	Syslog     Action = "syslog"     // send the event to the syslog notifier
	Suppress   Action = "suppress"   // neither report nor act: a known false positive
)

// Input is what a producer (sidecar inspection, policy decision) hands the engine.
type Input struct {
	Event  events.Event
	ConnID string // the connection the event is about, for capture; "" if none
	// Mode of the group the traffic is decided for (the destination's, inbound). Empty: the
	// engine looks it up (Config.Modes) by the event's destination then source group, and
	// falls back to monitor.
	Mode policy.Mode
	// SensorAction is the sensor's configured action (waf/dlp), "" for built-in detectors.
	SensorAction policy.SensorAction
}

// Decision is what to do with one event.
type Decision struct {
	Block   bool     // the data path must refuse the request/connection
	Report  bool     // the event is emitted (false only when suppressed)
	Actions []Action // side effects beyond the verdict: quarantine, capture, webhook, syslog
	Rules   []string // keys of the response rules that matched
}

// Has reports whether the decision includes action a (alert/block included: the verdict).
func (d Decision) Has(a Action) bool {
	switch a {
	case Block:
		return d.Block
	case Alert:
		return d.Report && !d.Block
	case Suppress:
		return !d.Report
	}
	return slices.Contains(d.Actions, a)
}

// Verdict is the action the data path takes: block, alert, or suppress.
func (d Decision) Verdict() Action {
	switch {
	case !d.Report:
		return Suppress
	case d.Block:
		return Block
	}
	return Alert
}

// Decide applies the defaults and the response rules to one event:
//  1. the group's mode: protect blocks threats, discover and monitor report them; other
//     kinds (violations, audit...) are reported, the policy has already decided them;
//  2. a sensor's own action (alert|block) overrides the mode;
//  3. matching response rules override both: any matching alert/block sets the verdict
//     (block wins), their other actions add up, and a matching suppress cancels everything.
func Decide(rules []policy.ResponseRule, in Input) Decision {
	d := Decision{Report: true}
	if in.Event.Kind == events.KindThreat {
		d.Block = in.Mode == policy.ModeProtect
		switch in.SensorAction {
		case policy.SensorBlock:
			d.Block = true
		case policy.SensorAlert:
			d.Block = false
		}
	}
	var verdictSet, blockByRule, suppress bool
	for i := range rules {
		r := &rules[i]
		if !matches(r, &in.Event) {
			continue
		}
		d.Rules = append(d.Rules, r.Metadata.Key())
		for _, a := range r.Spec.Actions {
			switch Action(a) {
			case Alert:
				verdictSet = true
			case Block:
				verdictSet, blockByRule = true, true
			case Suppress:
				suppress = true
			case Quarantine, Capture, Webhook, Syslog:
				if !slices.Contains(d.Actions, Action(a)) {
					d.Actions = append(d.Actions, Action(a))
				}
			}
		}
	}
	if verdictSet {
		d.Block = blockByRule
	}
	if suppress {
		return Decision{Rules: d.Rules}
	}
	return d
}

// severityRank orders event severities; unknown or empty ranks lowest (info).
func severityRank(s string) int {
	return max(slices.Index(policy.Severities(), strings.ToLower(s)), 0)
}

// matches reports whether a rule selects an event: every given field must match.
func matches(r *policy.ResponseRule, e *events.Event) bool {
	m := r.Spec.Match
	if m.Kind != "" && m.Kind != string(e.Kind) {
		return false
	}
	if m.Name != "" && m.Name != e.Name {
		return false
	}
	if m.Severity != "" && severityRank(string(e.Severity)) < severityRank(m.Severity) {
		return false
	}
	ns := r.Metadata.Namespace
	// A namespaced rule only answers for its own namespace's workloads.
	if ns != "" && workloadNS(e.Source.Workload) != ns && workloadNS(e.Destination.Workload) != ns {
		return false
	}
	if m.Group != nil {
		gns := m.Group.Namespace
		if gns == "" {
			gns = ns
		}
		if !groupIs(e.Source.Group, gns, m.Group.Group) && !groupIs(e.Destination.Group, gns, m.Group.Group) {
			return false
		}
	}
	return true
}

// groupIs compares an event's group ("ns/name" or a cluster-scoped "name") with a reference;
// like GroupRef, a namespace-relative reference falls back to a cluster-scoped group.
func groupIs(eventGroup, ns, name string) bool {
	if eventGroup == "" {
		return false
	}
	return eventGroup == policy.Key(ns, name) || eventGroup == name
}

func workloadNS(w string) string {
	ns, _ := policy.SplitKey(w)
	return ns
}
