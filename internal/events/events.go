// Package events defines meshguard's one event type and the sinks that receive events: a
// bounded in-memory ring (what the REST API serves) and a slog sink. Persistence, retention and
// exporters (webhook, syslog, JSON lines) build on the same Sink interface.
package events

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"time"
)

// Kind says what an event is about.
type Kind string

const (
	KindConnection Kind = "connection" // a connection summary
	KindViolation  Kind = "violation"  // traffic outside the allow-list (monitor/protect mode)
	KindThreat     Kind = "threat"     // a detector matched inside allowed traffic
	KindIncident   Kind = "incident"   // correlated threats/violations that need a human
	KindAudit      Kind = "audit"      // control-plane actions: SVID issuance, refusal, rotation...
)

// Valid reports whether k is one of the known kinds.
func (k Kind) Valid() bool {
	switch k {
	case KindConnection, KindViolation, KindThreat, KindIncident, KindAudit:
		return true
	}
	return false
}

// Severity orders events for triage.
type Severity string

const (
	SeverityInfo     Severity = "info"
	SeverityLow      Severity = "low"
	SeverityMedium   Severity = "medium"
	SeverityHigh     Severity = "high"
	SeverityCritical Severity = "critical"
)

// MaxEvidence caps the offending bytes an event carries so events stay small.
const MaxEvidence = 4096

// Endpoint is one side of what an event describes.
type Endpoint struct {
	Workload string `json:"workload,omitempty"` // namespace/name
	Identity string `json:"identity,omitempty"` // SPIFFE ID
	Group    string `json:"group,omitempty"`
	Address  string `json:"address,omitempty"` // ip:port
}

// Event is the one event shape: connections, violations, threats, incidents and audit records.
type Event struct {
	Kind        Kind      `json:"kind"`
	Time        time.Time `json:"time"`
	Name        string    `json:"name,omitempty"` // what happened, e.g. "svid.issued", "sqli"
	Source      Endpoint  `json:"source,omitzero"`
	Destination Endpoint  `json:"destination,omitzero"`
	Protocol    string    `json:"protocol,omitempty"` // application protocol, e.g. "http"
	L7          string    `json:"l7,omitempty"`       // summary, e.g. "GET /api/users"
	RuleID      string    `json:"ruleId,omitempty"`   // the rule (or default) that decided
	Action      string    `json:"action,omitempty"`   // allow, deny, alert, issue, refuse...
	Severity    Severity  `json:"severity,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Evidence    []byte    `json:"evidence,omitempty"` // offending bytes, at most MaxEvidence
	CaptureRef  string    `json:"captureRef,omitempty"`
}

// capEvidence bounds the offending bytes an event keeps. A longer slice is copied, so a kept
// event does not pin the (possibly large, possibly pooled) buffer it was cut from.
func capEvidence(b []byte) []byte {
	if len(b) > MaxEvidence {
		return bytes.Clone(b[:MaxEvidence])
	}
	return b
}

// Sink receives events. Emit must not block the caller for long: producers are hot paths.
type Sink interface {
	Emit(ctx context.Context, e Event)
}

// Multi fans an event out to every sink in order.
type Multi []Sink

// Emit implements Sink.
func (m Multi) Emit(ctx context.Context, e Event) {
	for _, s := range m {
		s.Emit(ctx, e)
	}
}

// Ring keeps the most recent events in memory, oldest dropped first.
type Ring struct {
	mu   sync.Mutex
	buf  []Event
	next int  // index the next event is written to
	full bool // buf has wrapped at least once
}

// NewRing returns a ring holding at most size events (size >= 1).
func NewRing(size int) *Ring {
	if size < 1 {
		size = 1
	}
	return &Ring{buf: make([]Event, size)}
}

// Emit implements Sink.
func (r *Ring) Emit(_ context.Context, e Event) {
	e.Evidence = capEvidence(e.Evidence)
	r.mu.Lock()
	r.buf[r.next] = e
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
}

// Filter selects events from a Ring; zero fields match everything.
type Filter struct {
	Kind  Kind
	Limit int // newest Limit events; 0 means all
}

// List returns the matching events, oldest first.
func (r *Ring) List(f Filter) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ordered []Event
	if r.full {
		ordered = append(ordered, r.buf[r.next:]...)
	}
	ordered = append(ordered, r.buf[:r.next]...)
	out := ordered[:0]
	for _, e := range ordered {
		if f.Kind == "" || e.Kind == f.Kind {
			out = append(out, e)
		}
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out
}

// Logger writes each event as one structured log line.
type Logger struct{ Log *slog.Logger }

// Emit implements Sink.
func (l Logger) Emit(ctx context.Context, e Event) {
	attrs := []slog.Attr{slog.String("kind", string(e.Kind)), slog.String("name", e.Name)}
	add := func(k, v string) {
		if v != "" {
			attrs = append(attrs, slog.String(k, v))
		}
	}
	add("source", e.Source.Identity)
	add("destination", e.Destination.Identity)
	add("protocol", e.Protocol)
	add("l7", e.L7)
	add("rule", e.RuleID)
	add("action", e.Action)
	add("severity", string(e.Severity))
	add("reason", e.Reason)
	level := slog.LevelInfo
	if e.Action == "refuse" || e.Action == "deny" || e.Kind == KindThreat {
		level = slog.LevelWarn
	}
	l.Log.LogAttrs(ctx, level, "event", attrs...)
}
