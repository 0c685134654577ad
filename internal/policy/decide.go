package policy

import (
	"fmt"

	"github.com/meshguard/meshguard/internal/dpi"
)

// Verdict is the outcome of a decision.
type Verdict uint8

const (
	Deny Verdict = iota // the zero value denies
	Allow
)

func (v Verdict) String() string {
	if v == Allow {
		return "allow"
	}
	return "deny"
}

// MarshalText makes verdicts "allow"/"deny" in JSON.
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText parses "allow" or "deny".
func (v *Verdict) UnmarshalText(b []byte) error {
	switch string(b) {
	case "allow":
		*v = Allow
	case "deny":
		*v = Deny
	default:
		return fmt.Errorf("verdict %q: want allow or deny", b)
	}
	return nil
}

// Reason says what decided.
type Reason uint8

const (
	ReasonNoPolicy  Reason = iota // nothing loaded yet: default deny
	ReasonDenyRule                // an explicit deny rule matched
	ReasonAllowRule               // an allow rule matched
	ReasonMode                    // no rule matched; the destination group's mode decided
	ReasonNoGroup                 // the destination is in no group; the default mode decided
)

func (r Reason) String() string {
	switch r {
	case ReasonDenyRule:
		return "deny-rule"
	case ReasonAllowRule:
		return "allow-rule"
	case ReasonMode:
		return "mode"
	case ReasonNoGroup:
		return "no-group"
	}
	return "no-policy"
}

// MarshalText makes reasons strings in JSON.
func (r Reason) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// Input is one question to the policy: may this source reach this destination with this
// application (and this request)? Group IDs must come from the same Policy (or from an Engine
// whose table produced them).
type Input struct {
	SrcGroups []GroupID     // every group the source is in (its automatic group included)
	DstGroups []GroupID     // every group the destination is in
	Port      uint16        // destination port
	Transport dpi.Transport // dpi.TCP or dpi.UDP
	App       string        // detected application ("http", "redis"...); "" if unknown
	// L7 is the request being decided, or nil to decide the connection. With nil, allow
	// rules with an l7 section admit the connection (each request is then decided on its
	// own) and deny rules with an l7 section do not apply. Server-to-client messages are
	// treated as nil: L7 rules are about requests.
	L7 *dpi.Message
}

// Decision is the answer. Its strings point into the compiled policy: building a Decision
// allocates nothing; String and Explain build text on demand.
type Decision struct {
	Verdict   Verdict `json:"verdict"`
	Violation bool    `json:"violation,omitempty"` // report a violation event (monitor-mode misses and every deny)
	Learn     bool    `json:"learn,omitempty"`     // report an observation for learning (discover-mode misses)
	Mode      Mode    `json:"mode"`                // the mode of Group
	Reason    Reason  `json:"reason"`              // what decided
	RuleID    string  `json:"rule,omitempty"`      // "ns/name" of the deciding rule, if a rule decided
	Learned   bool    `json:"learned,omitempty"`   // the deciding rule was learned
	Group     string  `json:"group,omitempty"`     // key of the destination group whose rule or mode decided
	// NearMiss is an allow rule that matched the connection but not this request (its l7
	// section); set when such a rule exists and nothing allowed the request.
	NearMiss string `json:"nearMiss,omitempty"`
}

// String is the one-line reason shown to users and put into native refusals.
func (d Decision) String() string {
	switch d.Reason {
	case ReasonNoPolicy:
		return "no policy received yet: denied until the controller sends one"
	case ReasonDenyRule:
		return "denied by rule " + d.RuleID
	case ReasonAllowRule:
		return "allowed by rule " + d.RuleID
	case ReasonNoGroup:
		return "no rule matched: destination is in no group; default mode is " + string(d.Mode)
	}
	s := "no rule matched: group " + d.Group + " is in " + string(d.Mode) + " mode"
	if d.NearMiss != "" {
		s += " (rule " + d.NearMiss + " allows the connection but not this request)"
	}
	return s
}

// Decide evaluates in: explicit deny rules first (lowest priority value first), then allow
// rules, then the strictest mode among the destination's groups. It allocates nothing.
func (p *Policy) Decide(in *Input) Decision {
	if p.noPolicy {
		return Decision{Verdict: Deny, Violation: true, Mode: ModeProtect, Reason: ReasonNoPolicy}
	}
	msg := in.L7
	if msg != nil && msg.Dir != dpi.ClientToServer {
		msg = nil
	}
	app := p.apps[in.App]
	var tr uint8
	switch in.Transport {
	case dpi.TCP:
		tr = 1
	case dpi.UDP:
		tr = 2
	}
	// One pass over the (destination, source) buckets finds the first deny and the first
	// allow in evaluation order; denies win.
	deny, allow, near := int32(-1), int32(-1), int32(-1)
	for _, dg := range in.DstGroups {
		if int(dg) >= len(p.byDst) {
			continue
		}
		dx := &p.byDst[dg]
		if dx.n == 0 {
			continue
		}
		for _, sg := range in.SrcGroups {
			h := dx.find(sg)
			if h == nil {
				continue
			}
			for i := h.off; i < h.deny; i++ {
				e := &dx.entries[i]
				if deny >= 0 && e.idx >= deny {
					break
				}
				if p.match(e, in, msg, tr, app, false) == matchYes {
					deny = e.idx
					break
				}
			}
			if deny >= 0 {
				continue // a deny decides; allows no longer matter
			}
			for i := h.deny; i < h.end; i++ {
				e := &dx.entries[i]
				if allow >= 0 && e.idx >= allow {
					break
				}
				r := p.match(e, in, msg, tr, app, true)
				if r == matchYes {
					allow = e.idx
					break
				}
				if r == matchL7Miss && (near < 0 || e.idx < near) {
					near = e.idx
				}
			}
		}
	}
	if deny >= 0 {
		r := &p.rules[deny]
		return Decision{Verdict: Deny, Violation: true, Mode: r.toMode, Reason: ReasonDenyRule, RuleID: r.id, Learned: r.learned, Group: r.toKey}
	}
	if allow >= 0 {
		r := &p.rules[allow]
		return Decision{Verdict: Allow, Mode: r.toMode, Reason: ReasonAllowRule, RuleID: r.id, Learned: r.learned, Group: r.toKey}
	}
	// No rule: the strictest destination group's mode decides.
	found := false
	var g cgroup
	var best uint8
	for _, dg := range in.DstGroups {
		// strict is a dense byte per group (0: not in this policy): stays in cache.
		if int(dg) < len(p.strict) && p.strict[dg] > best {
			best, g = p.strict[dg], p.groups[dg]
		}
	}
	found = best > 0
	d := Decision{Reason: ReasonMode, Mode: g.mode, Group: g.key}
	if !found {
		d.Reason, d.Mode = ReasonNoGroup, p.defaultMode
	}
	if near >= 0 {
		d.NearMiss = p.rules[near].id
	}
	switch d.Mode {
	case ModeDiscover:
		d.Verdict = Allow
		// A request refused only by an allow rule's l7 section is not new behaviour to
		// learn: learning it would widen a deliberate restriction.
		d.Learn = near < 0 && found
	case ModeMonitor:
		d.Verdict, d.Violation = Allow, true
	default:
		d.Verdict, d.Violation = Deny, true
	}
	return d
}

type matchResult uint8

const (
	matchNo     matchResult = iota // from/port/app do not match
	matchYes                       // the rule applies
	matchL7Miss                    // connection matches, the request does not
)

// match checks an inline entry; only L7 and overflowing rules touch the full rule.
func (p *Policy) match(e *centry, in *Input, msg *dpi.Message, tr uint8, app appInfo, allow bool) matchResult {
	if e.flags&fOverflow != 0 {
		return p.rules[e.idx].matches(in, msg, allow)
	}
	if e.flags&fAnyPort == 0 {
		ok := false
		for i := 0; i < int(e.nports); i++ {
			ps := &e.ports[i]
			if in.Port >= ps.lo && in.Port <= ps.hi && (ps.tr == 0 || ps.tr == tr) {
				ok = true
				break
			}
		}
		if !ok {
			return matchNo
		}
	}
	if e.flags&fAnyApp == 0 {
		if app.id == 0 || (e.apps[0] != app.id && (e.napps < 2 || e.apps[1] != app.id)) {
			return matchNo
		}
	}
	if e.flags&fL7 != 0 {
		// Decided from the entry where possible: the full rule is cold in cache.
		if e.l7has&app.l7 == 0 {
			return matchNo // no section is about this application
		}
		if msg == nil {
			if allow {
				return matchYes
			}
			return matchNo
		}
		return p.rules[e.idx].matchL7(in, msg, allow)
	}
	return matchYes
}

// matches checks port, transport, application and l7 (the caller has matched from and to).
func (r *crule) matches(in *Input, msg *dpi.Message, allow bool) matchResult {
	if !r.anyPort {
		ok := false
		for i := range r.ports {
			pr := &r.ports[i]
			if in.Port >= pr.Lo && in.Port <= pr.Hi && transportIs(in.Transport, pr.Transport) {
				ok = true
				break
			}
		}
		if !ok {
			return matchNo
		}
	}
	if !r.anyApp {
		ok := false
		for _, a := range r.apps {
			if a == in.App {
				ok = true
				break
			}
		}
		if !ok {
			return matchNo
		}
	}
	return r.matchL7(in, msg, allow)
}

func (r *crule) matchL7(in *Input, msg *dpi.Message, allow bool) matchResult {
	if r.l7.has == 0 {
		return matchYes
	}
	if !r.l7.appliesTo(in.App) {
		return matchNo
	}
	if msg == nil {
		if allow {
			return matchYes
		}
		return matchNo
	}
	if r.l7.match(in.App, msg, allow) {
		return matchYes
	}
	return matchL7Miss
}

func transportIs(t dpi.Transport, want string) bool {
	switch want {
	case "":
		return true
	case "tcp":
		return t == dpi.TCP
	case "udp":
		return t == dpi.UDP
	}
	return false
}
