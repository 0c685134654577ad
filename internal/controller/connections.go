package controller

import (
	"container/heap"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/dpi"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/learn"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/registry"
	"github.com/meshguard/meshguard/internal/threat"
	"github.com/meshguard/meshguard/internal/xds"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// maxFlows bounds the aggregated flow table (graph, `get connections`, `policy test`).
const maxFlows = 50000

// Directory resolves report addresses and identities to workloads (the registry).
type Directory interface {
	Workload(namespace, name string) (registry.Workload, bool)
	ByIP(ip netip.Addr) (registry.Workload, bool)
	BySPIFFEID(id string) (registry.Workload, bool)
	GroupsOf(namespace, name string) []string
	ServiceByVIP(ip netip.Addr) (registry.Service, bool)
}

// Observer takes learning observations (the learner).
type Observer interface {
	Observe(o learn.Observation) bool
}

// Decider is the current compiled policy.
type Decider interface {
	Policy() *policy.Policy
}

// ConnectionsConfig configures Connections.
type ConnectionsConfig struct {
	Directory Directory
	Policy    Decider
	Learner   Observer
	Events    events.Sink
	Clock     clockwork.Clock
	Log       *slog.Logger
	Metrics   prometheus.Registerer
	// SystemPorts are controller ports: flows to them from a workload are mesh system traffic.
	SystemPorts []uint16
}

// Connections ingests sidecars' connection reports: each becomes a connection event, an entry
// in the flow table, a violation event when the policy (re-decided here at connection level
// with the controller's current policy, or the sidecar's deny) says so, and a learning
// observation when the destination's group is in discover mode and no rule covered the flow.
type Connections struct {
	cfg        ConnectionsConfig
	violations *prometheus.CounterVec

	mu    sync.Mutex
	flows map[flowKey]*flowEntry
	byAge flowAges // the same entries, least recently seen first: a full table evicts in O(log n)
}

type flowKey struct {
	src, dst      string
	port          uint16
	transport     dpi.Transport
	app           string
	verdict       string
	authenticated bool
}

type flowEntry struct {
	conn               api.Connection
	srcGroups          []string
	dstGroups          []string
	srcKnown, dstKnown bool // the sides are registered workloads (conn.Source/Destination are keys)
	key                flowKey
	age                int // index in Connections.byAge
}

// flowAges is a min-heap of flow entries by conn.LastSeen.
type flowAges []*flowEntry

func (h flowAges) Len() int           { return len(h) }
func (h flowAges) Less(i, j int) bool { return h[i].conn.LastSeen.Before(h[j].conn.LastSeen) }
func (h flowAges) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].age, h[j].age = i, j
}
func (h *flowAges) Push(x any) {
	e := x.(*flowEntry)
	e.age = len(*h)
	*h = append(*h, e)
}
func (h *flowAges) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// add puts a new entry, with its LastSeen set, in the table.
func (c *Connections) add(e *flowEntry) {
	c.flows[e.key] = e
	heap.Push(&c.byAge, e)
}

// seen moves e's LastSeen forward to t (reports may arrive out of order).
func (c *Connections) seen(e *flowEntry, t time.Time, inTable bool) {
	if !t.After(e.conn.LastSeen) {
		return
	}
	e.conn.LastSeen = t
	if inTable {
		heap.Fix(&c.byAge, e.age)
	}
}

// evictOldest drops the least recently seen flow.
func (c *Connections) evictOldest() {
	if len(c.byAge) == 0 {
		return
	}
	e := heap.Pop(&c.byAge).(*flowEntry)
	delete(c.flows, e.key)
}

// NewConnections validates cfg and registers the violation counter.
func NewConnections(cfg ConnectionsConfig) (*Connections, error) {
	if cfg.Directory == nil || cfg.Policy == nil || cfg.Learner == nil || cfg.Events == nil || cfg.Clock == nil || cfg.Log == nil || cfg.Metrics == nil {
		return nil, fmt.Errorf("controller: connections need directory, policy, learner, events, clock, logger and metrics")
	}
	c := &Connections{cfg: cfg, flows: map[flowKey]*flowEntry{},
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshguard_violations_total",
			Help: "Connections outside the allow-list, by destination group and action (allow in monitor mode, deny in protect mode).",
		}, []string{"group", "action"})}
	if err := cfg.Metrics.Register(c.violations); err != nil {
		return nil, fmt.Errorf("controller: register metrics: %w", err)
	}
	return c, nil
}

var _ xds.ReportSink = (*Connections)(nil)

type side struct {
	w      registry.Workload
	known  bool
	addr   string
	name   string // the workload's key, else the address's IP (without the port)
	groups []string
}

func (c *Connections) resolve(id, addr string) side {
	s := side{addr: addr, name: addr}
	// addr is an ip:port or a bare IP; parsed once for all the lookups below.
	var ip netip.Addr
	hasPort := false
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		ip, hasPort = ap.Addr(), true
	} else if a, err := netip.ParseAddr(addr); err == nil {
		ip = a
	}
	if ip.IsValid() {
		s.w, s.known = c.cfg.Directory.ByIP(ip.Unmap())
	}
	if !s.known && id != "" {
		s.w, s.known = c.cfg.Directory.BySPIFFEID(id)
	}
	if !s.known && ip.IsValid() {
		// A service VIP (an outbound report to a pod without a sidecar carries the address the
		// app dialled): with one endpoint, that is the workload reached.
		if svc, ok := c.cfg.Directory.ServiceByVIP(ip.Unmap()); ok && len(svc.Endpoints) == 1 {
			if ns, name, ok := strings.Cut(svc.Endpoints[0], "/"); ok {
				s.w, s.known = c.cfg.Directory.Workload(ns, name)
			}
		}
	}
	switch {
	case s.known:
		s.groups = c.cfg.Directory.GroupsOf(s.w.Namespace, s.w.Name)
		s.name = s.w.Key()
	case hasPort:
		s.name = ip.String()
	}
	return s
}

// self is the reporting sidecar's own workload.
func (c *Connections) self(n xds.Node, addr string) side {
	w, ok := c.cfg.Directory.Workload(n.Namespace, n.Workload)
	if !ok {
		return c.resolve("", addr)
	}
	return side{w: w, known: true, addr: addr, name: w.Key(), groups: c.cfg.Directory.GroupsOf(w.Namespace, w.Name)}
}

// HandleReports implements xds.ReportSink.
func (c *Connections) HandleReports(ctx context.Context, from xds.Node, reports []*xdsv1.ConnectionReport) error {
	pol := c.cfg.Policy.Policy()
	for _, r := range reports {
		// Both ends of a meshed connection report it; the inbound side is where the policy
		// decides, so outbound reports count only for destinations without a sidecar.
		if r.GetDirection() == "outbound" && r.GetDestinationSpiffeId() != "" {
			continue
		}
		c.handle(ctx, from, pol, r)
	}
	return nil
}

func (c *Connections) handle(ctx context.Context, from xds.Node, pol *policy.Policy, r *xdsv1.ConnectionReport) {
	// The reporting sidecar is one end for sure: the destination of its inbound connections
	// (whose address is the app's local one), the source of its outbound ones.
	var src, dst side
	switch r.GetDirection() {
	case "inbound":
		src, dst = c.resolve(r.GetSourceSpiffeId(), r.GetSourceAddr()), c.self(from, r.GetDestinationAddr())
	case "outbound":
		src, dst = c.self(from, r.GetSourceAddr()), c.resolve(r.GetDestinationSpiffeId(), r.GetDestinationAddr())
	default:
		src, dst = c.resolve(r.GetSourceSpiffeId(), r.GetSourceAddr()), c.resolve(r.GetDestinationSpiffeId(), r.GetDestinationAddr())
	}
	app := r.GetAppProtocol()
	if app == "unknown" {
		app = ""
	}
	transport := dpi.TCP
	if strings.HasPrefix(r.GetCloseReason(), "udp") {
		transport = dpi.UDP
	}
	port := uint16(r.GetDestinationPort())
	flow := policy.Flow{SrcGroups: src.groups, DstGroups: dst.groups, Port: port, Transport: transport, App: app}
	in := pol.Input(&flow)
	d := pol.Decide(&in)

	verdict, rule, refusal := reportVerdict(r)
	// No verdict means the sidecar made no policy decision. The controller's decision then
	// fills in the rule and says whether it was a violation (and what protect would do).
	unenforced := r.GetVerdict() == ""
	if unenforced && rule == "" && refusal == "" {
		rule = d.RuleID
	}
	now := c.cfg.Clock.Now()
	start := now
	if ns := r.GetStartUnixNano(); ns > 0 {
		start = time.Unix(0, ns)
	}
	srcEP := events.Endpoint{Workload: src.name, Identity: r.GetSourceSpiffeId(), Address: r.GetSourceAddr()}
	dstEP := events.Endpoint{Workload: dst.name, Identity: r.GetDestinationSpiffeId(), Address: r.GetDestinationAddr(), Group: d.Group}
	if src.known {
		srcEP.Group = registry.AutoGroupKey(&src.w)
	}
	l7 := l7Summary(r.GetL7())
	c.cfg.Events.Emit(ctx, events.Event{Kind: events.KindConnection, Time: start, Name: "connection",
		Source: srcEP, Destination: dstEP, Protocol: app, L7: l7, RuleID: rule, Action: verdict,
		Severity: events.SeverityInfo, Reason: fmt.Sprintf("reported by %s; %d bytes sent, %d received", from.Key(), r.GetBytesSent(), r.GetBytesReceived())})

	// The sidecar's explanation of its decision and the single requests it refused on an
	// otherwise allowed stream ride in the L7 map (kept out of the summary above).
	sidecarWhy, deniedRequests := r.GetL7()["reason"], r.GetL7()["denied_requests"]
	// A stream the sidecar cut for a threat was reported as that threat already (with the
	// evidence and the response taken); a second, policy-violation event would double count it.
	threatCut := strings.HasPrefix(sidecarWhy, "threat ")
	// The sidecar's DNS proxy reports each exchange with the pod's resolver: recorded above,
	// never a violation (the names asked are judged by the DNS rules and tunnel detection).
	resolver := r.GetL7()["resolver"] == "true"
	if !threatCut && !resolver && (verdict == "deny" || (rule == "" && d.Violation) || deniedRequests != "") {
		why := d.String()
		action := verdict
		switch {
		case refusal != "":
			why = refusal
		case deniedRequests != "" && verdict == "allow":
			action, why = "deny", fmt.Sprintf("%s request(s) refused on an allowed connection", deniedRequests)
			if sidecarWhy != "" {
				why += ": " + sidecarWhy
			}
		case !unenforced && sidecarWhy != "":
			why = sidecarWhy
		case verdict == "deny" && rule != "":
			why = "denied by rule " + rule
		case unenforced && d.Verdict == policy.Deny:
			why += " (not enforced: the sidecar made no decision)"
		}
		c.violations.WithLabelValues(d.Group, action).Inc()
		c.cfg.Events.Emit(ctx, events.Event{Kind: events.KindViolation, Time: start, Name: "policy.violation",
			Source: srcEP, Destination: dstEP, Protocol: app, L7: l7, RuleID: rule, Action: action,
			Severity: events.SeverityMedium, Reason: why})
	}
	mismatch := r.GetL7()["mismatch"] == "true"
	if mismatch && r.GetDirection() != "inbound" {
		// The port promised one protocol and carried another (SSH on 443, a tunnel on 53).
		// An inbound sidecar reports it as a threat itself (with the response it took); the
		// controller speaks only for the outbound side, e.g. SSH leaving the mesh on 443.
		f := threat.MismatchFinding(transport.String(), port, r.GetAppProtocol())
		c.cfg.Events.Emit(ctx, events.Event{Kind: events.KindThreat, Time: start, Name: threat.ProtocolMismatch,
			Source: srcEP, Destination: dstEP, Protocol: app, L7: l7, RuleID: rule, Action: verdict,
			Severity: events.Severity(f.Severity.String()), Reason: f.Message, Evidence: f.Evidence})
	}
	if d.Learn && src.known && dst.known && verdict == "allow" {
		c.cfg.Learner.Observe(learn.Observation{SrcWorkload: src.w.Key(), SrcGroup: registry.AutoGroupKey(&src.w),
			DstGroup: d.Group, Port: port, Transport: transport, App: app, L7: l7})
	}

	k := flowKey{src: src.name, dst: dst.name, port: port, transport: transport, app: app, verdict: verdict, authenticated: r.GetAuthenticated()}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.flows[k]
	if !ok {
		if len(c.flows) >= maxFlows {
			c.evictOldest()
		}
		e = &flowEntry{key: k, conn: api.Connection{Source: k.src, Destination: k.dst, Port: port, Transport: transport.String(),
			App: app, Verdict: verdict, SrcGroup: srcEP.Group, DstGroup: d.Group,
			System: isSystem(app, port, dst, c.cfg.SystemPorts), Authenticated: k.authenticated}}
	}
	e.srcGroups, e.dstGroups = src.groups, dst.groups
	e.srcKnown, e.dstKnown = src.known, dst.known
	e.conn.Count++
	e.conn.Bytes += r.GetBytesSent() + r.GetBytesReceived()
	e.conn.RuleID = rule
	e.conn.Mismatch = e.conn.Mismatch || mismatch
	c.seen(e, start, ok)
	if !ok {
		c.add(e)
	}
}

// reportVerdict is the sidecar's word on a connection: its verdict and rule when it made a
// policy decision, else what the close reason says (a STRICT refusal or a denial is a deny,
// with refusal explaining it); "allow" when the report says nothing.
func reportVerdict(r *xdsv1.ConnectionReport) (verdict, rule, refusal string) {
	if v := r.GetVerdict(); v != "" {
		return v, r.GetRuleId(), ""
	}
	switch r.GetCloseReason() {
	case "strict-refuse", "strict-refused":
		return "deny", "", "plaintext from a source without a sidecar refused: the destination's namespace is STRICT (list it in --mtls-permissive to migrate)"
	case "denied":
		why := "refused by the sidecar"
		if e := r.GetError(); e != "" {
			why += ": " + e
		}
		return "deny", r.GetRuleId(), why
	}
	return "allow", r.GetRuleId(), ""
}

// isSystem says whether a flow is mesh system traffic: DNS, or a controller port on an
// address that is not a workload.
func isSystem(app string, port uint16, dst side, ports []uint16) bool {
	if app == "dns" || port == 53 {
		return true
	}
	return !dst.known && slices.Contains(ports, port)
}

func l7Summary(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	if m["method"] != "" || m["path"] != "" {
		return strings.TrimSpace(m["method"] + " " + m["path"])
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "reason" && k != "denied_requests" && k != "resolver" { // the sidecar's decision and hop, not traffic
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, " ")
}

// Connections implements api.ConnectionSource, sorted by source, destination, port.
func (c *Connections) Connections() []api.Connection {
	c.mu.Lock()
	out := make([]api.Connection, 0, len(c.flows))
	for _, e := range c.flows {
		out = append(out, e.conn)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b api.Connection) int {
		if x := strings.Compare(a.Source, b.Source); x != 0 {
			return x
		}
		if x := strings.Compare(a.Destination, b.Destination); x != 0 {
			return x
		}
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		return strings.Compare(a.App+a.Verdict, b.App+b.Verdict)
	})
	return out
}

// RecordedFlow is one distinct flow with the verdict it got, and the workloads at its ends
// (keys, or "" for an address outside the registry) so `policy test` can recompute their
// groups under the proposed policy.
type RecordedFlow struct {
	Flow     policy.Flow
	Src, Dst string
}

// Recorded implements FlowHistory.
func (c *Connections) Recorded() []RecordedFlow {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]RecordedFlow, 0, len(c.flows))
	for k, e := range c.flows {
		v := policy.Deny
		if k.verdict == "allow" {
			v = policy.Allow
		}
		rf := RecordedFlow{Flow: policy.Flow{ID: fmt.Sprintf("%s -> %s:%d", k.src, k.dst, k.port), SrcGroups: e.srcGroups,
			DstGroups: e.dstGroups, Port: k.port, Transport: k.transport, App: k.app, Verdict: v}}
		if e.srcKnown {
			rf.Src = k.src
		}
		if e.dstKnown {
			rf.Dst = k.dst
		}
		out = append(out, rf)
	}
	slices.SortFunc(out, func(a, b RecordedFlow) int { return strings.Compare(a.Flow.ID+a.Flow.App, b.Flow.ID+b.Flow.App) })
	return out
}

// Seed loads flows from stored connection events (a restarted controller keeps the history
// `policy test` replays). Their groups are recomputed when replayed.
func (c *Connections) Seed(evs []events.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range evs {
		if e.Kind != events.KindConnection || (e.Action != "allow" && e.Action != "deny") {
			continue
		}
		ap, err := netip.ParseAddrPort(e.Destination.Address)
		if err != nil {
			continue
		}
		// mTLS leaves both identities in the event; plaintext at most one.
		authn := e.Source.Identity != "" && e.Destination.Identity != ""
		k := flowKey{src: e.Source.Workload, dst: e.Destination.Workload, port: ap.Port(), transport: dpi.TCP, app: e.Protocol, verdict: e.Action, authenticated: authn}
		if k.src == "" || k.dst == "" {
			continue
		}
		fe, ok := c.flows[k]
		if !ok {
			if len(c.flows) >= maxFlows {
				continue
			}
			fe = &flowEntry{key: k, conn: api.Connection{Source: k.src, Destination: k.dst, Port: k.port, Transport: "tcp", App: k.app,
				Verdict: k.verdict, SrcGroup: e.Source.Group, DstGroup: e.Destination.Group, RuleID: e.RuleID,
				System:        isSystem(k.app, k.port, side{known: strings.Contains(k.dst, "/")}, c.cfg.SystemPorts),
				Authenticated: authn, Mismatch: strings.Contains(e.L7, "mismatch=true")},
				srcKnown: strings.Contains(k.src, "/"), dstKnown: strings.Contains(k.dst, "/")}
		}
		fe.conn.Count++
		c.seen(fe, e.Time, ok)
		if !ok {
			c.add(fe)
		}
	}
}
