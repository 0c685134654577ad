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
			switch {
			case !containsID(in.SrcGroups, r.from):
				fmt.Fprintf(&b, "not from %s", p.groups[r.from].key)
			default:
				switch r.matches(in, msg, r.action == ActionAllow) {
				case matchNo:
					fmt.Fprintf(&b, "port/application do not match (ports %s, applications %s)",
						strings.Join(orAny(r.doc.Spec.Ports), ","), strings.Join(orAny(r.doc.Spec.Applications), ","))
				case matchL7Miss:
					b.WriteString("connection matches, this request does not match its l7 section")
				case matchYes:
					if r.id == d.RuleID {
						b.WriteString("matches: decides")
					} else {
						b.WriteString("matches (an earlier rule decided)")
					}
				}
			}
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
