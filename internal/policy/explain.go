package policy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/meshguard/meshguard/internal/dpi"
)

// Explain decides in and returns the decision with a human account of every rule about the
// destination and why it did or did not apply (`meshguard explain`). It allocates freely: keep
// it off the data path.
func (p *Policy) Explain(in *Input) (Decision, string) {
	d := p.Decide(in)
	var b strings.Builder
	fmt.Fprintf(&b, "verdict: %s\nreason: %s\n", d.Verdict, d.String())
	if d.Violation {
		b.WriteString("reported as: violation\n")
	}
	if d.Learn {
		b.WriteString("reported as: observation for learning\n")
	}
	fmt.Fprintf(&b, "source groups: %s\n", p.groupList(in.SrcGroups, false))
	fmt.Fprintf(&b, "destination groups: %s\n", p.groupList(in.DstGroups, true))
	fmt.Fprintf(&b, "traffic: %s/%d application %s", in.Transport, in.Port, orUnknown(in.App))
	if in.L7 != nil {
		b.WriteString(" request")
		for _, a := range in.L7.Attrs() {
			fmt.Fprintf(&b, " %s=%q", a.Key, a.Value)
		}
	}
	b.WriteString("\n")
	msg := in.L7
	if msg != nil && msg.Dir != dpi.ClientToServer {
		msg = nil
	}
	n := 0
	for pass := 0; pass < 2; pass++ {
		want := ActionDeny
		if pass == 1 {
			want = ActionAllow
		}
		for i := range p.rules {
			r := &p.rules[i]
			if r.action != want || !containsID(in.DstGroups, r.to) {
				continue
			}
			if n == 0 {
				b.WriteString("rules to the destination (evaluation order):\n")
			}
			n++
			fmt.Fprintf(&b, "  %-5s %s (priority %d", r.action, r.id, r.priority)
			if r.learned {
				b.WriteString(", learned")
			}
			b.WriteString("): ")
			b.WriteString(p.ruleStatus(r, in, msg, d.RuleID))
			b.WriteString("\n")
		}
	}
	if n == 0 {
		b.WriteString("no rules to the destination groups\n")
	}
	return d, b.String()
}

func (p *Policy) groupList(ids []GroupID, modes bool) string {
	if len(ids) == 0 {
		return "(none)"
	}
	parts := make([]string, 0, len(ids))
	for _, id := range ids {
		k := p.GroupKey(id)
		if k == "" {
			parts = append(parts, "#"+strconv.Itoa(int(id))+" (not in policy)")
			continue
		}
		if modes {
			k += " (" + string(p.groups[id].mode) + ")"
		}
		parts = append(parts, k)
	}
	return strings.Join(parts, ", ")
}

func containsID(ids []GroupID, id GroupID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// ruleStatus says why one rule did or did not apply to in.
func (p *Policy) ruleStatus(r *crule, in *Input, msg *dpi.Message, decided string) string {
	if !containsID(in.SrcGroups, r.from) {
		return "source is not in group " + p.groups[r.from].key
	}
	only := *r
	only.l7 = cl7{}
	if only.matches(in, nil, true) != matchYes {
		return fmt.Sprintf("port/application do not match (ports %s; applications %s)",
			strings.Join(orAny(r.doc.Spec.Ports), ", "), strings.Join(orAny(r.doc.Spec.Applications), ", "))
	}
	allow := r.action == ActionAllow
	if r.l7.has != 0 {
		switch {
		case !r.l7.appliesTo(in.App):
			return "its l7 section is not about application " + orUnknown(in.App)
		case msg == nil && !allow:
			return "its l7 section applies to requests; none given (the connection itself is not denied)"
		case msg != nil && !r.l7.match(in.App, msg, allow):
			why := r.l7.why(in.App, msg)
			if allow {
				return "connection matches, this request does not match its l7 section" + why
			}
			return "this request does not match its l7 section" + why
		}
	}
	if r.id == decided {
		return "matches: decides"
	}
	return "matches (an earlier rule decided)"
}

// why names the first l7 list a request fails (for explanations only).
func (c *cl7) why(app string, m *dpi.Message) string {
	list := func(what string, v []byte, vals plist) string {
		return fmt.Sprintf(" (%s %q not in [%s])", what, v, strings.Join(vals.items(), " "))
	}
	names := func(ps plist) plist {
		var b strings.Builder
		for _, p := range ps.items() {
			if strings.HasPrefix(p, ".") {
				p = "*" + p
			}
			b.WriteByte(byte(len(p) >> 8))
			b.WriteByte(byte(len(p)))
			b.WriteString(p)
		}
		return plist(b.String())
	}
	if c.has&l7HasHTTP != 0 && isHTTP(app) {
		h := &c.http
		if v := m.Get(dpi.AttrMethod); len(h.methods) > 0 && !inFold(h.methods, v) {
			return list("method", v, h.methods)
		}
		if v := m.Get(dpi.AttrPath); len(h.paths) > 0 {
			if v != nil && ambiguousPath(pathPart(v)) {
				return fmt.Sprintf(" (path %q is ambiguous: encoded, '//' or dot segments fail closed)", v)
			}
			if !(&chttp{paths: h.paths}).match(m, true) {
				return list("path", v, h.paths)
			}
		}
		if v := m.Get(dpi.AttrHost); len(h.hosts) > 0 && !matchNames(h.hosts, stripPort(v)) {
			return list("host", v, names(h.hosts))
		}
	}
	if c.has&l7HasGRPC != 0 && isGRPC(app) && !c.grpc.match(m) {
		return fmt.Sprintf(" (gRPC %s/%s not in services [%s] / methods [%s])", m.Get(dpi.AttrService), m.Get(dpi.AttrRPC),
			strings.Join(c.grpc.services.items(), " "), strings.Join(c.grpc.methods.items(), " "))
	}
	if c.has&l7HasDNS != 0 && app == "dns" {
		return list("name", m.Get(dpi.AttrName), names(c.dns))
	}
	filter := func(what string, v []byte, f *cfilter, allowName, denyName string) string {
		if inFold(f.deny, v) {
			return fmt.Sprintf(" (%s %q is in %s)", what, v, denyName)
		}
		if len(f.allow) > 0 && !inFold(f.allow, v) {
			return fmt.Sprintf(" (%s %q not in %s [%s])", what, v, allowName, strings.Join(f.allow.items(), " "))
		}
		return fmt.Sprintf(" (%s %q)", what, v)
	}
	if c.has&l7HasRedis != 0 && app == "redis" {
		return filter("command", m.Get(dpi.AttrCommand), &c.redis, "allowCommands", "denyCommands")
	}
	if c.has&l7HasSQL != 0 && isSQL(app) {
		return filter("verb", m.Get(dpi.AttrVerb), &c.sql, "verbs", "denyVerbs")
	}
	return ""
}
