package sidecar

import (
	"errors"
	"net/netip"
	"slices"

	"github.com/meshguard/meshguard/internal/dpi"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/threat"
	"github.com/meshguard/meshguard/internal/threat/dlp"
	"github.com/meshguard/meshguard/internal/xds"
)

// maxPreDetect bounds the client bytes kept until DPI names the application, so the HTTP
// framer sees the stream from its first byte.
const maxPreDetect = 16 << 10

// streamThreats is one inbound stream's threat inspection; the enforcer calls it with its
// mutex held.
type streamThreats struct {
	t      *Threats
	view   *threatView
	pv     *policyView // nil without a policy
	index  func() *xds.Index
	info   StreamInfo
	connID string
	srcKey string // flood accounting key: the source IP
	port   uint16

	scope    *threatScope // built on the first finding
	started  bool         // the client stream's application is known
	pre      []byte
	http     *httpFramer
	found    []threat.Finding // scratch, reused
	headSeen []string         // detector+location found in the head judged ahead of its body
	mismatch bool             // the mismatch check ran
	respScan int              // response bytes scanned by DLP
	respDLP  []string         // DLP patterns already reported in responses
	pending  outcome          // decision of the findings of the chunk being fed
}

func newStreamThreats(t *Threats, pv *policyView, index func() *xds.Index, s StreamInfo, connID string, port uint16) *streamThreats {
	st := &streamThreats{t: t, view: t.view.Load(), pv: pv, index: index, info: s, connID: connID, port: port}
	if s.SourceAddr.IsValid() {
		st.srcKey = s.SourceAddr.Addr().Unmap().String()
	}
	return st
}

// open accounts the connection for the flood detector; true when it must be refused.
func (st *streamThreats) open() bool {
	if st.srcKey == "" {
		return false
	}
	ok, f := st.t.flood.Connection(st.srcKey, st.found[:0])
	if ok {
		return false
	}
	if len(f) > 0 {
		return st.act("", f).block
	}
	return st.t.decideOnly(st.scopeFor(""), threat.ConnectionFlood)
}

// scopeFor resolves the event endpoints once per stream, only when something was found.
func (st *streamThreats) scopeFor(app string) *threatScope {
	if st.scope == nil {
		v := st.view
		sc := &threatScope{view: v, connID: st.connID}
		sc.dst = events.Endpoint{Workload: v.workload, Group: v.group}
		if !v.self.IsZero() {
			sc.dst.Identity = v.self.String()
		}
		dst := st.info.Dest
		if dst.Addr().IsLoopback() {
			for _, a := range v.ips {
				if a.Is4() == dst.Addr().Unmap().Is4() {
					dst = netip.AddrPortFrom(a, dst.Port())
					break
				}
			}
		}
		if dst.IsValid() {
			sc.dst.Address = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()).String()
		} else if st.port != 0 && len(v.ips) > 0 {
			sc.dst.Address = netip.AddrPortFrom(v.ips[0], st.port).String()
		}
		if st.info.SourceAddr.IsValid() {
			sc.src.Address = netip.AddrPortFrom(st.info.SourceAddr.Addr().Unmap(), st.info.SourceAddr.Port()).String()
		}
		if st.info.Authenticated {
			sc.src.Identity = st.info.Source.String()
		}
		sc.src.Workload, sc.src.Group = st.sourceWorkload()
		st.scope = sc
	}
	if app != "" && app != dpi.Unknown {
		st.scope.protocol = app
	}
	return st.scope
}

// sourceWorkload names the stream's source from the snapshot: by address when the
// authenticated identity agrees, else by identity.
func (st *streamThreats) sourceWorkload() (workload, group string) {
	x := st.index()
	if x == nil {
		return "", ""
	}
	name := func(w interface {
		GetNamespace() string
		GetName() string
		GetGroups() []string
	}) (string, string) {
		g := ""
		if gs := w.GetGroups(); len(gs) > 0 {
			g = gs[0]
		}
		return policy.Key(w.GetNamespace(), w.GetName()), g
	}
	if st.info.SourceAddr.IsValid() {
		if w, ok := x.Workload(st.info.SourceAddr.Addr().Unmap()); ok && (!st.info.Authenticated || w.GetSpiffeId() == st.info.Source.String()) {
			return name(w)
		}
	}
	if st.info.Authenticated {
		id := st.info.Source.String()
		for _, w := range x.Snapshot().GetPeers() {
			if w.GetSpiffeId() == id {
				return name(w)
			}
		}
	}
	return "", ""
}

func (st *streamThreats) act(app string, f []threat.Finding) outcome {
	return st.t.act(st.scopeFor(app), f)
}

// onMessage runs the message detectors and the request flood count on one client message
// (from the DPI flow's callback); adminAllowed comes from the policy's request decision.
func (st *streamThreats) onMessage(app string, m *dpi.Message, adminAllowed bool) {
	f := st.found[:0]
	if isRequest(m) && st.srcKey != "" {
		var ok bool
		if ok, f = st.t.flood.Request(st.srcKey, f); !ok && len(f) == 0 && !st.pending.block && st.t.decideOnly(st.scopeFor(app), threat.RequestFlood) {
			st.pending = outcome{block: true, why: "threat " + threat.RequestFlood}
		}
	}
	switch app {
	case "http2", "grpc":
		// HTTP/2: the request line and selected headers as DPI decoded them (bodies travel in
		// DATA frames the framer does not follow).
		if meth, path := m.Get(dpi.AttrMethod), m.Get(dpi.AttrPath); meth != nil && path != nil {
			st.found = f
			st.h2Request(app, meth, path, m.Get(dpi.AttrHost), m.Get(dpi.AttrUserAgent))
			return
		}
	case "redis", "postgres", "postgresql", "mysql", "mariadb", "mssql", "tds":
		proto := app
		switch app {
		case "postgresql":
			proto = "postgres"
		case "mariadb":
			proto = "mysql"
		}
		f = st.t.msg.Inspect(proto, st.srcKey, m, adminAllowed, f)
	}
	if len(f) == 0 {
		return
	}
	if sc := st.scopeFor(app); m.Get(dpi.AttrCommand) != nil {
		sc.l7 = clip(string(m.Get(dpi.AttrCommand)), 128)
	} else if q := m.Get(dpi.AttrQuery); q != nil {
		sc.l7 = clip(string(q), 128)
	}
	if o := st.act(app, f); o.block && !st.pending.block {
		st.pending = o
	}
	st.found = f[:0]
}

// fromClient inspects one client chunk after DPI has seen it; a non-nil error refuses it.
func (st *streamThreats) fromClient(o *enforcer, p []byte) error {
	if !st.started {
		if !o.fl.Detected() {
			if len(st.pre)+len(p) <= maxPreDetect {
				st.pre = append(st.pre, p...)
			} else {
				st.pre, st.started = nil, true // not worth holding: no HTTP inspection
			}
			return st.verdict(o, p)
		}
		st.started = true
		if o.fl.Protocol() == "http" {
			st.http = &httpFramer{}
			if len(st.pre) > 0 {
				st.http.feed(st.pre, st.request)
			}
		}
		st.pre = nil
	}
	st.checkMismatch(o)
	if st.http != nil && !st.http.off {
		st.http.feed(p, st.request)
		if h := st.http.pendingHead(); h != nil {
			st.requestHead(h)
		}
	}
	return st.verdict(o, p)
}

// verdict turns the chunk's pending outcome into the refusal the copy loop acts on.
func (st *streamThreats) verdict(o *enforcer, p []byte) error {
	out := st.pending
	st.pending = outcome{}
	if !out.block {
		return nil
	}
	d := policy.Decision{Verdict: policy.Deny, Mode: st.view.mode, Group: st.view.group}
	if o.app == "redis" && wholeRESP(p) == 1 {
		// One command alone in its chunk: refuse it and keep the connection.
		return &Drop{Reply: redisError(out.why), Reason: out.why}
	}
	if o.app == "http2" || o.app == "grpc" {
		// The chunk ends with the request's header block: refuse that stream alone.
		return h2Refusal(out.why, o.app == "grpc")
	}
	o.cut = &policyDenial{d: d, why: out.why, reply: nativeRefusal(o.app, out.why)}
	return o.cut
}

func (st *streamThreats) checkMismatch(o *enforcer) {
	if st.mismatch || !o.fl.Detected() {
		return
	}
	st.mismatch = true
	if !o.fl.Mismatch() {
		return
	}
	app := o.fl.Protocol()
	f := append(st.found[:0], threat.MismatchFinding("tcp", st.port, app))
	if out := st.act(app, f); out.block && !st.pending.block {
		st.pending = out
	}
}

// request inspects one complete HTTP/1 request (or its prefix at the bound).
// requestHead judges a request's head before its body arrives; what it finds is not reported
// again when the whole request is judged.
func (st *streamThreats) requestHead(head []byte) {
	st.inspectRequest(head, true, true)
}

func (st *streamThreats) request(raw []byte, truncated bool) {
	st.inspectRequest(raw, truncated, false)
	st.headSeen = st.headSeen[:0]
}

func (st *streamThreats) inspectRequest(raw []byte, truncated, headOnly bool) {
	v := st.view
	f := st.found[:0]
	req, err := threat.ParseHTTPRequest(raw)
	if err != nil && !errors.Is(err, threat.ErrIncomplete) {
		line, _ := cutLine(raw)
		f = append(f, threat.NewFinding(threat.MalformedHeader, "request-line", line, err.Error()))
	} else if err == nil {
		req.BodyTruncated = truncated
		f = st.t.http.Inspect(&req, f)
		for _, w := range v.wafs {
			f = w.w.Inspect(&req, f)
		}
		for _, d := range v.dlps {
			f = d.d.InspectRequest(&req, f)
		}
	}
	if headOnly {
		for i := range f {
			st.headSeen = append(st.headSeen, f[i].Detector+"\x00"+f[i].Location)
		}
	} else if len(st.headSeen) > 0 {
		f = slices.DeleteFunc(f, func(x threat.Finding) bool {
			return slices.Contains(st.headSeen, x.Detector+"\x00"+x.Location)
		})
	}
	if len(f) > 0 {
		sc := st.scopeFor("http")
		sc.l7 = clip(string(req.Method)+" "+string(req.Path()), 256)
		if o := st.t.act(sc, f); o.block && !st.pending.block {
			st.pending = o
		}
	}
	st.found = f[:0]
}

// h2Request inspects an HTTP/2 request's head (method, path with query, authority, user
// agent); findings already collected for the message (a flood) go with it.
func (st *streamThreats) h2Request(app string, method, path, host, ua []byte) {
	req := threat.HTTPRequest{Method: method, URI: path, Proto: []byte("HTTP/2")}
	var hs [2]threat.Header
	n := 0
	if host != nil {
		hs[n] = threat.Header{Name: []byte("Host"), Value: host}
		n++
	}
	if ua != nil {
		hs[n] = threat.Header{Name: []byte("User-Agent"), Value: ua}
		n++
	}
	req.Headers = hs[:n]
	f := st.t.http.Inspect(&req, st.found)
	for _, w := range st.view.wafs {
		f = w.w.Inspect(&req, f)
	}
	if len(f) > 0 {
		sc := st.scopeFor(app)
		sc.l7 = clip(string(method)+" "+string(req.Path()), 256)
		if o := st.t.act(sc, f); o.block && !st.pending.block {
			st.pending = o
		}
	}
	st.found = f[:0]
}

// fromServer checks what only the server's bytes show: the application (server-first
// protocols) and, with a DLP sensor, sensitive data in HTTP responses.
func (st *streamThreats) fromServer(o *enforcer, p []byte) error {
	st.checkMismatch(o)
	if len(st.view.dlps) > 0 && o.app == "http" && st.respScan < dlp.DefaultMaxScan {
		n := min(len(p), dlp.DefaultMaxScan-st.respScan)
		st.respScan += n
		f := st.found[:0]
		for _, d := range st.view.dlps {
			f = d.d.Scan(p[:n], "response-body", f)
		}
		keep := f[:0]
		for _, x := range f {
			if !slices.Contains(st.respDLP, x.Message) {
				st.respDLP = append(st.respDLP, x.Message)
				keep = append(keep, x)
			}
		}
		if len(keep) > 0 {
			if out := st.act("http", keep); out.block && !st.pending.block {
				st.pending = out
			}
		}
		st.found = f[:0]
	}
	out := st.pending
	st.pending = outcome{}
	if !out.block {
		return nil
	}
	// Mid-response there is no native refusal left: cut.
	o.cut = &policyDenial{d: policy.Decision{Verdict: policy.Deny, Mode: st.view.mode, Group: st.view.group}, why: out.why}
	return o.cut
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
