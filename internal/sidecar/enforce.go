package sidecar

import (
	"bytes"
	"context"
	"encoding/binary"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/meshguard/meshguard/internal/dpi"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/threat"
	"github.com/meshguard/meshguard/internal/xds"
)

// EnforcingInspector is DPIInspector plus the policy for inbound streams: once DPI has named
// the application it decides the connection again with it, then decides every request
// (HTTP request, gRPC call, Redis command, SQL query, DNS query). A refusal answers in the
// protocol where it can (HTTP 403, Redis and SQL error replies) and cuts the stream; a refused
// Redis command that came alone in its chunk is dropped and the connection carries on.
// Without a policy in the snapshot it only inspects.
func EnforcingInspector(eng *dpi.Engine, view *atomic.Pointer[policyView], index func() *xds.Index) Inspector {
	return ThreatInspector(eng, view, index, nil)
}

// ThreatInspector is EnforcingInspector plus threat detection (nil threats: none): the
// built-in detectors on every stream, the sensors of this workload's groups, each finding
// decided by the response rules and refused natively when the decision blocks ("denied by
// meshguard: threat sqli (...)"). The stream's conn ID (for captures and events) comes from
// the context (the capture wrapper sets it).
func ThreatInspector(eng *dpi.Engine, view *atomic.Pointer[policyView], index func() *xds.Index, threats *Threats) Inspector {
	plain := DPIInspector(eng)
	return func(ctx context.Context, s StreamInfo) StreamObserver {
		v := view.Load()
		if v == nil && threats == nil {
			return plain(ctx, s)
		}
		port := s.DestPort
		if port == 0 {
			port = s.Dest.Port()
		}
		o := &enforcer{}
		if v != nil {
			o.pol = v.pol
			// Group IDs are resolved once per connection; Decide then allocates nothing.
			o.in = policy.Input{SrcGroups: sourceGroups(v, index, s), DstGroups: v.self, Port: port, Transport: dpi.TCP}
			o.l4 = o.pol.Decide(&o.in)
		} else {
			o.l4 = policy.Decision{Verdict: policy.Allow}
		}
		o.fl = eng.NewFlow(dpi.FlowInfo{Transport: dpi.TCP, ServerPort: port}, o.onMessage)
		if threats != nil {
			id := connIDFrom(ctx)
			if id == "" {
				id = threats.newConnID()
			}
			o.th = newStreamThreats(threats, v, index, s, id, port)
			if o.th.open() {
				o.cut = &policyDenial{d: policy.Decision{Verdict: policy.Deny, Mode: o.th.view.mode, Group: o.th.view.group},
					why: "threat " + threat.ConnectionFlood + " (source " + o.th.srcKey + " over its connection rate)"}
			}
		}
		return o
	}
}

// enforcer is the per-stream observer; its fields are guarded by the embedded mutex (the
// flow calls onMessage from inside Feed, with the mutex held).
type enforcer struct {
	dpiObserver
	pol *policy.Policy
	in  policy.Input
	l4  policy.Decision // the port-level decision, standing until the application is known

	decided bool            // conn holds the decision with the application
	conn    policy.Decision // connection-level decision with the application
	app     string

	reqs, refused  int             // requests and refusals in the chunk being fed
	first          policy.Decision // first refusal of the chunk
	firstGRPC      bool            // the first refusal of the chunk is a gRPC call
	denied         int             // refused requests so far
	lastDenial     policy.Decision
	violation      bool // a request passed as a violation (monitor mode)
	firstViolation policy.Decision
	learn          bool
	cut            *policyDenial // the stream was cut by the policy (or a threat)

	th *streamThreats // nil: no threat detection
}

func (o *enforcer) decideConn() {
	o.decided = true
	o.app = o.fl.Protocol()
	o.in.App = o.app
	if o.app == dpi.Unknown {
		o.in.App = ""
	}
	if o.pol == nil {
		o.conn = o.l4
		return
	}
	o.conn = o.pol.Decide(&o.in)
}

func (o *enforcer) onMessage(m *dpi.Message) {
	if m.Dir != dpi.ClientToServer {
		return
	}
	if !o.decided {
		o.decideConn()
	}
	if !isRequest(m) {
		if o.th != nil {
			o.th.onMessage(o.app, m, false)
		}
		return // handshakes, authentication, flow control: the connection's decision stands
	}
	if o.pol == nil {
		o.th.onMessage(o.app, m, false)
		return
	}
	o.in.L7 = m
	d := o.pol.Decide(&o.in)
	o.in.L7 = nil
	if o.th != nil {
		o.th.onMessage(o.app, m, d.Verdict == policy.Allow && o.th.view.admin[d.RuleID])
	}
	o.reqs++
	if d.Verdict == policy.Deny {
		if o.refused == 0 {
			o.first, o.firstGRPC = d, m.Get(dpi.AttrService) != nil
		}
		o.refused++
		return
	}
	if d.Violation && !o.violation {
		o.violation, o.firstViolation = true, d
	}
	o.learn = o.learn || d.Learn
}

func (o *enforcer) FromClient(p []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reqs, o.refused = 0, 0
	if o.decided && o.cut == nil && !l7Decided(o.app) && o.fed[dpi.ClientToServer] >= dpiBudget {
		return nil // no requests to decide: bulk uploads cost nothing past the budget
	}
	o.fl.Feed(dpi.ClientToServer, p) // no budget for applications with request rules
	o.fed[dpi.ClientToServer] += len(p)
	if err := o.connVerdict(); err != nil {
		return err
	}
	if o.th != nil {
		if err := o.th.fromClient(o, p); err != nil {
			if o.refused == 0 {
				return err
			}
			// The policy refuses a request of this chunk itself: its refusal, naming the
			// rule, is the answer (the threat was reported all the same).
			o.cut = nil
		}
	}
	if o.refused == 0 {
		if o.decided && o.conn.Mode == policy.ModeProtect && l7Decided(o.app) && o.fl.Err() != nil {
			// The parser gave up: later requests could not be decided, so fail closed.
			o.cut = &policyDenial{d: o.conn, why: "request not understood (" + o.fl.Err().Error() + ") and group " + o.conn.Group + " is in protect mode"}
			o.cut.reply = nativeRefusal(o.app, o.cut.text())
			return o.cut
		}
		return nil
	}
	o.denied += o.refused
	o.lastDenial = o.first
	if o.app == "redis" && o.refused == o.reqs && wholeRESP(p) == o.reqs {
		one := redisError(o.first.String())
		reply := make([]byte, 0, len(one)*o.refused)
		for range o.refused {
			reply = append(reply, one...)
		}
		return &Drop{Reply: reply, Reason: o.first.String()}
	}
	if o.app == "http2" || o.app == "grpc" {
		return h2Refusal(o.first.String(), o.firstGRPC) // only that stream is refused (grpcdeny.go)
	}
	o.cut = &policyDenial{d: o.first, reply: nativeRefusal(o.app, o.first.String())}
	return o.cut
}

// refusesHTTP2 puts the HTTP/2 layer (grpcdeny.go) under the enforcer: a refused HTTP/2
// request is answered on its own stream and the connection carries on.
func (*enforcer) refusesHTTP2() {}

func (o *enforcer) FromServer(p []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.decided || !(l7Decided(o.app) || o.fed[dpi.ServerToClient] >= dpiBudget) {
		// Past detection, requests are decided from the client's bytes alone; replies only
		// cost time and could stop the parser (a reply it cannot read), leaving the
		// requests after it undecided.
		o.fl.Feed(dpi.ServerToClient, p)
		o.fed[dpi.ServerToClient] += len(p)
		if err := o.connVerdict(); err != nil {
			return err
		}
	}
	if o.th != nil && o.cut == nil {
		return o.th.fromServer(o, p)
	}
	return nil
}

// connVerdict applies the connection-level decision: the port-level one until DPI has named
// the application (fail closed), then the one with the application.
func (o *enforcer) connVerdict() error {
	if o.cut != nil {
		return o.cut
	}
	if o.pol == nil {
		if !o.decided && o.fl.Detected() {
			o.decideConn()
		}
		return nil
	}
	if !o.decided {
		if !o.fl.Detected() {
			if o.l4.Verdict == policy.Deny {
				o.cut = &policyDenial{d: o.l4}
				return o.cut
			}
			return nil
		}
		o.decideConn()
	}
	if o.conn.Verdict == policy.Deny {
		o.cut = &policyDenial{d: o.conn, reply: nativeRefusal(o.app, o.conn.String())}
		return o.cut
	}
	return nil
}

// isRequest says whether a client message is one the l7 rules are about: it has what they
// match on (HTTP method, gRPC service or method, Redis command, SQL verb, DNS name).
func isRequest(m *dpi.Message) bool {
	for _, a := range m.Attrs() {
		switch a.Key {
		case dpi.AttrMethod, dpi.AttrService, dpi.AttrRPC, dpi.AttrCommand, dpi.AttrVerb, dpi.AttrName:
			return true
		}
	}
	return false
}

// l7Decided says whether the policy has request rules for the application.
func l7Decided(app string) bool {
	switch app {
	case "http", "http2", "grpc", "redis", "dns", "postgres", "postgresql", "mysql", "mariadb":
		return true
	}
	return false
}

// Annotate implements Annotator: the DPI summary plus the policy outcome.
func (o *enforcer) Annotate(r *ConnReport) {
	o.dpiObserver.Annotate(r)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.pol == nil {
		// No policy: only a threat refusal has anything to say.
		if o.cut != nil {
			r.Verdict, r.Decision = "deny", o.cut.text()
		}
		return
	}
	d := o.l4
	if o.decided {
		d = o.conn
	}
	switch {
	case o.cut != nil:
		d = o.cut.d
	case o.denied > 0:
		d = o.lastDenial
	case o.violation:
		d = o.firstViolation // names no rule: the controller records a violation
	}
	r.Verdict, r.RuleID, r.Decision, r.DeniedRequests = "allow", d.RuleID, d.String(), o.denied
	if o.cut != nil {
		r.Decision = o.cut.text()
	}
	if d.Verdict == policy.Deny {
		r.Verdict = "deny"
	}
	if o.violation || o.learn {
		if r.L7 == nil {
			r.L7 = map[string]string{}
		}
		if o.violation {
			r.L7["violation"] = "true"
		}
		if o.learn {
			r.L7["learn"] = "true"
		}
	}
}

// refusalText is what a native refusal says: the rule or the reason, on one line.
func refusalText(why string) string {
	return "denied by meshguard: " + strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, why)
}

func redisError(why string) []byte { return []byte("-ERR " + refusalText(why) + "\r\n") }

// nativeRefusal is the application's own way to say no; nil (just cut) where there is none
// that fits a stream mid-way (gRPC and HTTP/2 get the stream reset).
func nativeRefusal(app, why string) []byte {
	msg := refusalText(why)
	switch app {
	case "http":
		body := msg + "\n"
		return []byte("HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
			strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body)
	case "redis":
		return redisError(why)
	case "postgres", "postgresql":
		// ErrorResponse: severity, SQLSTATE 42501 insufficient_privilege, message.
		var f []byte
		for _, kv := range [][2]string{{"S", "ERROR"}, {"V", "ERROR"}, {"C", "42501"}, {"M", msg}} {
			f = append(append(append(f, kv[0]...), kv[1]...), 0)
		}
		f = append(f, 0)
		out := []byte{'E', 0, 0, 0, 0}
		binary.BigEndian.PutUint32(out[1:], uint32(len(f)+4))
		return append(out, f...)
	case "mysql", "mariadb":
		// ERR packet answering a command (sequence 1): 1142 ER_TABLEACCESS_DENIED_ERROR, 42000.
		pl := append([]byte{0xff, 0x76, 0x04, '#'}, "42000"+msg...)
		if len(pl) > 0xffffff {
			pl = pl[:0xffffff]
		}
		return append([]byte{byte(len(pl)), byte(len(pl) >> 8), byte(len(pl) >> 16), 1}, pl...)
	}
	return nil
}

// wholeRESP counts the Redis commands in p when p is nothing but whole commands (RESP arrays
// of bulk strings, or inline commands), else -1: only then can refused ones be dropped
// without desynchronising the stream.
func wholeRESP(p []byte) int {
	n := 0
	for len(p) > 0 {
		if p[0] != '*' {
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				return -1
			}
			p, n = p[i+1:], n+1
			continue
		}
		cnt, rest, ok := respLen(p[1:])
		if !ok || cnt < 0 {
			return -1
		}
		p = rest
		for range cnt {
			if len(p) == 0 || p[0] != '$' {
				return -1
			}
			l, rest, ok := respLen(p[1:])
			if !ok || l < 0 || int64(len(rest)) < l+2 || rest[l] != '\r' || rest[l+1] != '\n' {
				return -1
			}
			p = rest[l+2:]
		}
		n++
	}
	return n
}

// respLen reads a decimal length ending in CRLF.
func respLen(p []byte) (int64, []byte, bool) {
	var v int64
	for i := 0; i < len(p) && i < 12; i++ {
		switch c := p[i]; {
		case c >= '0' && c <= '9':
			v = v*10 + int64(c-'0')
		case c == '-' && i == 0:
		case c == '\r' && i > 0 && i+1 < len(p) && p[i+1] == '\n':
			if p[0] == '-' {
				return -1, p[i+2:], true
			}
			return v, p[i+2:], true
		default:
			return 0, nil, false
		}
	}
	return 0, nil, false
}
