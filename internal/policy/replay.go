package policy

import "github.com/meshguard/meshguard/internal/dpi"

// Flow is one recorded connection or request with the verdict it got. Groups are keys, not
// IDs, so history outlives the policy that decided it.
type Flow struct {
	ID        string // the caller's reference (event id, "shop/web-7f -> shop/cache-0:6379")
	SrcGroups []string
	DstGroups []string
	Port      uint16
	Transport dpi.Transport
	App       string
	L7        *dpi.Message // optional request; must stay valid during Replay
	Verdict   Verdict      // what the flow got when it was recorded
}

// Change is a flow whose verdict the proposed policy would change.
type Change struct {
	Flow   Flow
	Before Verdict
	After  Decision
}

// Input resolves a flow's group keys against p (keys p does not know are dropped).
func (p *Policy) Input(f *Flow) Input {
	return Input{
		SrcGroups: p.GroupIDsOf(nil, f.SrcGroups...),
		DstGroups: p.GroupIDsOf(nil, f.DstGroups...),
		Port:      f.Port, Transport: f.Transport, App: f.App, L7: f.L7,
	}
}

// Replay decides every recorded flow with the proposed policy and returns, in history order,
// those whose verdict would differ from the recorded one (`meshguard policy test`).
func Replay(history []Flow, proposed *Policy) []Change {
	var out []Change
	for i := range history {
		f := &history[i]
		in := proposed.Input(f)
		d := proposed.Decide(&in)
		if d.Verdict != f.Verdict {
			out = append(out, Change{Flow: *f, Before: f.Verdict, After: d})
		}
	}
	return out
}

// Request builds a client request for Explain and Replay from attribute key/value pairs, e.g.
// Request(dpi.AttrMethod, "DELETE", dpi.AttrPath, "/api/items"). The message owns its values.
func Request(kv ...string) *dpi.Message {
	m := &dpi.Message{}
	m.Reset(dpi.ClientToServer, "request")
	for i := 0; i+1 < len(kv); i += 2 {
		m.Add(kv[i], []byte(kv[i+1]))
	}
	return m
}
