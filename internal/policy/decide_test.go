package policy

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/dpi"
)

func msg(typ string, kv ...string) *dpi.Message {
	m := &dpi.Message{}
	m.Reset(dpi.ClientToServer, typ)
	for i := 0; i+1 < len(kv); i += 2 {
		m.AddString(kv[i], kv[i+1])
	}
	return m
}

type decideCase struct {
	name      string
	flow      Flow
	want      Verdict
	rule      string // deciding rule, or "" for mode decisions
	violation bool
	learn     bool
	reason    string // substring of Decision.String()
}

func flow(src, dst string, tr dpi.Transport, port uint16, app string, m *dpi.Message) Flow {
	return Flow{SrcGroups: strings.Split(src, ","), DstGroups: strings.Split(dst, ","), Port: port, Transport: tr, App: app, L7: m}
}

// runDecideCases checks each case's verdict, rule, violation, learn flag and reason.
func runDecideCases(t *testing.T, p *Policy, cases []decideCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := p.Input(&c.flow)
			d := p.Decide(&in)
			if d.Verdict != c.want || d.RuleID != c.rule || d.Violation != c.violation || d.Learn != c.learn {
				t.Errorf("got %+v (%s), want verdict %s rule %q violation %v learn %v", d, d, c.want, c.rule, c.violation, c.learn)
			}
			if c.reason != "" && !strings.Contains(d.String(), c.reason) {
				t.Errorf("reason %q lacks %q", d.String(), c.reason)
			}
		})
	}
}

func decideCases(t testing.TB, _ *Policy) []decideCase {
	return []decideCase{
		{name: "redis allowed", flow: flow("shop/web", "shop/cache", dpi.TCP, 6379, "redis", nil), want: Allow, rule: "shop/web-to-cache"},
		{name: "redis GET allowed", flow: flow("shop/web", "shop/cache", dpi.TCP, 6379, "redis", msg("command", dpi.AttrCommand, "GET")), want: Allow, rule: "shop/web-to-cache"},
		{name: "redis FLUSHALL refused in protect", flow: flow("shop/web", "shop/cache", dpi.TCP, 6379, "redis", msg("command", dpi.AttrCommand, "FLUSHALL")),
			want: Deny, violation: true, reason: "no rule matched: group shop/cache is in protect mode (rule shop/web-to-cache allows the connection but not this request)"},
		{name: "redis lower-case config refused", flow: flow("shop/web", "shop/cache", dpi.TCP, 6379, "redis", msg("command", dpi.AttrCommand, "config")), want: Deny, violation: true},
		{name: "wrong port", flow: flow("shop/web", "shop/cache", dpi.TCP, 6380, "redis", nil), want: Deny, violation: true, reason: "group shop/cache is in protect mode"},
		{name: "wrong transport", flow: flow("shop/web", "shop/cache", dpi.UDP, 6379, "redis", nil), want: Deny, violation: true},
		{name: "wrong app", flow: flow("shop/web", "shop/cache", dpi.TCP, 6379, "http", nil), want: Deny, violation: true},
		{name: "client to cache: protect", flow: flow("shop/client", "shop/cache", dpi.TCP, 6379, "redis", nil), want: Deny, violation: true,
			reason: "no rule matched: group shop/cache is in protect mode"},
		{name: "monitor mode db: violation but allowed", flow: flow("shop/client", "shop/db", dpi.TCP, 5432, "postgres", nil), want: Allow, violation: true,
			reason: "group shop/db is in monitor mode"},
		{name: "sql verb allowed", flow: flow("shop/web", "shop/db", dpi.TCP, 5432, "postgres", msg("query", dpi.AttrVerb, "SELECT")), want: Allow, rule: "shop/web-to-db"},
		{name: "sql DROP outside rule, monitor", flow: flow("shop/web", "shop/db", dpi.TCP, 5432, "postgres", msg("query", dpi.AttrVerb, "DROP")), want: Allow, violation: true},
		{name: "discover mode learns", flow: flow("shop/web", "shop/client", dpi.TCP, 9999, "", nil), want: Allow, learn: true, reason: "discover mode"},
		{name: "http GET api", flow: flow("shop/client", "shop/web", dpi.TCP, 8080, "http", msg("request", dpi.AttrMethod, "GET", dpi.AttrPath, "/api/items?x=%20", dpi.AttrHost, "www.shop.example:8080")),
			want: Allow, rule: "shop/client-to-web"},
		{name: "http DELETE refused", flow: flow("shop/client", "shop/web", dpi.TCP, 8080, "http", msg("request", dpi.AttrMethod, "DELETE", dpi.AttrPath, "/api/items", dpi.AttrHost, "shop.example")),
			want: Deny, violation: true, reason: "rule shop/client-to-web allows the connection but not this request"},
		{name: "http wrong host", flow: flow("shop/client", "shop/web", dpi.TCP, 8080, "http", msg("request", dpi.AttrMethod, "GET", dpi.AttrPath, "/api/items", dpi.AttrHost, "evil.example")), want: Deny, violation: true},
		{name: "http wrong path", flow: flow("shop/client", "shop/web", dpi.TCP, 8080, "http", msg("request", dpi.AttrMethod, "GET", dpi.AttrPath, "/apix", dpi.AttrHost, "shop.example")), want: Deny, violation: true},
		{name: "http encoded path fails closed", flow: flow("shop/client", "shop/web", dpi.TCP, 8080, "http", msg("request", dpi.AttrMethod, "GET", dpi.AttrPath, "/api/%2e%2e/secret", dpi.AttrHost, "shop.example")), want: Deny, rule: "shop/no-admin", violation: true},
		{name: "explicit deny beats allow", flow: flow("shop/client", "shop/web", dpi.TCP, 8080, "http", msg("request", dpi.AttrMethod, "GET", dpi.AttrPath, "/api/admin/users", dpi.AttrHost, "shop.example")),
			want: Deny, rule: "shop/no-admin", violation: true, reason: "denied by rule shop/no-admin"},
		{name: "deny with dot-dot path matches deny", flow: flow("shop/client", "shop/web", dpi.TCP, 8080, "http", msg("request", dpi.AttrMethod, "GET", dpi.AttrPath, "/static/../api/admin", dpi.AttrHost, "shop.example")),
			want: Deny, rule: "shop/no-admin", violation: true},
		{name: "connection with l7 deny rule only is allowed", flow: flow("shop/client", "shop/web", dpi.TCP, 8080, "http", nil), want: Allow, rule: "shop/client-to-web"},
		{name: "response messages do not trigger l7", flow: flow("shop/client", "shop/web", dpi.TCP, 8080, "http", func() *dpi.Message {
			m := msg("response", dpi.AttrStatus, "200")
			m.Dir = dpi.ServerToClient
			return m
		}()), want: Allow, rule: "shop/client-to-web"},
		{name: "external group allowed by learned rule", flow: flow("shop/web", "github", dpi.TCP, 443, "tls", nil), want: Allow, rule: "shop/web-to-github"},
		{name: "no dst group: default monitor", flow: flow("shop/web", "", dpi.TCP, 443, "tls", nil), want: Allow, violation: true, reason: "destination is in no group"},
	}
}

func TestDecideShop(t *testing.T) {
	p, err := Compile(loadShop(t), CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runDecideCases(t, p, decideCases(t, p))
}

const orderPolicy = hdr + `kind: Group
metadata: {name: a, namespace: ns}
spec: {mode: discover}
---
` + hdr + `kind: Group
metadata: {name: a2, namespace: ns}
spec: {mode: discover}
---
` + hdr + `kind: Group
metadata: {name: b, namespace: ns}
spec: {mode: discover}
---
` + hdr + `kind: Group
metadata: {name: b-strict, namespace: ns}
spec: {mode: protect}
---
` + hdr + `kind: NetworkRule
metadata: {name: allow-first, namespace: ns}
spec: {from: {group: a}, to: {group: b}, ports: [any], applications: [any], action: allow, priority: -100}
---
` + hdr + `kind: NetworkRule
metadata: {name: deny-late, namespace: ns}
spec: {from: {group: a2}, to: {group: b}, ports: ["tcp/80"], applications: [http], action: deny, priority: 50}
---
` + hdr + `kind: NetworkRule
metadata: {name: deny-early, namespace: ns}
spec: {from: {group: a}, to: {group: b}, ports: ["tcp/1-1000"], applications: [any], action: deny, priority: 5}
---
` + hdr + `kind: NetworkRule
metadata: {name: allow-udp, namespace: ns}
spec: {from: {group: a}, to: {group: b}, ports: ["udp/53"], applications: [dns], l7: {dns: {names: ["*.svc.local"]}}, action: allow}
`

func TestGRPCRuleMatchesHTTP2(t *testing.T) {
	s, err := Parse("g.yaml", []byte(baseGroups+hdr+`kind: NetworkRule
metadata: {name: cart, namespace: shop}
spec:
  from: {group: web}
  to: {group: cache}
  applications: [grpc]
  l7: {grpc: {methods: [shop.Cart/Add]}}
  action: allow
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	p, _ := Compile(s, CompileOptions{})
	for _, c := range []struct {
		m    *dpi.Message
		rule string
	}{
		{nil, "shop/cart"},
		{msg("request", dpi.AttrMethod, "POST", dpi.AttrPath, "/shop.Cart/Add", dpi.AttrService, "shop.Cart", dpi.AttrRPC, "Add"), "shop/cart"},
		{msg("request", dpi.AttrMethod, "POST", dpi.AttrPath, "/shop.Cart/Clear", dpi.AttrService, "shop.Cart", dpi.AttrRPC, "Clear"), ""},
	} {
		f := flow("shop/web", "shop/cache", dpi.TCP, 50051, "http2", c.m)
		in := p.Input(&f)
		if d := p.Decide(&in); d.RuleID != c.rule {
			t.Errorf("%v: %s", c.m, d)
		}
	}
}

func TestDecideOrderAndModes(t *testing.T) {
	s, err := Parse("order.yaml", []byte(orderPolicy))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err := Compile(s, CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []decideCase{
		// Deny rules come before allow rules whatever the priorities; among denies the lowest wins.
		{name: "deny before allow", flow: flow("ns/a", "ns/b", dpi.TCP, 80, "http", nil), want: Deny, rule: "ns/deny-early", violation: true},
		{name: "lowest priority deny across source groups", flow: flow("ns/a2,ns/a", "ns/b", dpi.TCP, 80, "http", nil), want: Deny, rule: "ns/deny-early", violation: true},
		{name: "second source group's deny", flow: flow("ns/a2", "ns/b", dpi.TCP, 80, "http", nil), want: Deny, rule: "ns/deny-late", violation: true},
		{name: "allow when no deny applies", flow: flow("ns/a", "ns/b", dpi.TCP, 5000, "http", nil), want: Allow, rule: "ns/allow-first"},
		{name: "dns name wildcard", flow: flow("ns/a", "ns/b", dpi.UDP, 53, "dns", msg("query", dpi.AttrName, "db.svc.local.")), want: Allow, rule: "ns/allow-first"},
		{name: "strictest destination mode wins", flow: flow("ns/a2", "ns/b,ns/b-strict", dpi.TCP, 9, "", nil), want: Deny, violation: true, reason: "group ns/b-strict is in protect mode"},
		{name: "rule to any destination group applies", flow: flow("ns/a", "ns/b-strict,ns/b", dpi.TCP, 5000, "", nil), want: Allow, rule: "ns/allow-first"},
		{name: "unknown source: mode", flow: flow("ns/zzz", "ns/b", dpi.TCP, 80, "http", nil), want: Allow, learn: true},
	}
	runDecideCases(t, p, cases)
}

func TestL7Sections(t *testing.T) {
	mk := func(l7 *L7) *cl7 {
		c, err := compileL7(l7)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	type tc struct {
		name  string
		l7    *L7
		app   string
		m     *dpi.Message
		allow bool
		want  bool
	}
	cases := []tc{
		{"grpc service", &L7{GRPC: &GRPCMatch{Services: []string{"shop.Cart"}}}, "grpc", msg("request", dpi.AttrService, "shop.Cart", dpi.AttrRPC, "Add"), true, true},
		{"grpc full method", &L7{GRPC: &GRPCMatch{Methods: []string{"shop.Cart/Add"}}}, "grpc", msg("request", dpi.AttrService, "shop.Cart", dpi.AttrRPC, "Add"), true, true},
		{"grpc other method", &L7{GRPC: &GRPCMatch{Methods: []string{"shop.Cart/Add"}}}, "grpc", msg("request", dpi.AttrService, "shop.Cart", dpi.AttrRPC, "Clear"), true, false},
		{"grpc short method", &L7{GRPC: &GRPCMatch{Methods: []string{"Add"}}}, "grpc", msg("request", dpi.AttrService, "x.Y", dpi.AttrRPC, "Add"), true, true},
		{"grpc from path", &L7{GRPC: &GRPCMatch{Methods: []string{"shop.Cart/Add"}}}, "grpc", msg("request", dpi.AttrPath, "/shop.Cart/Add"), true, true},
		{"dns exact case", &L7{DNS: &DNSMatch{Names: []string{"API.example.com"}}}, "dns", msg("query", dpi.AttrName, "api.EXAMPLE.com."), true, true},
		{"dns wildcard not apex", &L7{DNS: &DNSMatch{Names: []string{"*.example.com"}}}, "dns", msg("query", dpi.AttrName, "example.com"), true, false},
		{"dns wildcard not suffix trick", &L7{DNS: &DNSMatch{Names: []string{"*.example.com"}}}, "dns", msg("query", dpi.AttrName, "evilexample.com"), true, false},
		{"redis allow list", &L7{Redis: &RedisMatch{AllowCommands: []string{"get", "SET"}}}, "redis", msg("command", dpi.AttrCommand, "GET"), true, true},
		{"redis allow list miss", &L7{Redis: &RedisMatch{AllowCommands: []string{"GET"}}}, "redis", msg("command", dpi.AttrCommand, "DEL"), true, false},
		{"redis deny rule denies listed", &L7{Redis: &RedisMatch{DenyCommands: []string{"FLUSHALL"}}}, "redis", msg("command", dpi.AttrCommand, "FLUSHALL"), false, true},
		{"redis deny rule spares others", &L7{Redis: &RedisMatch{DenyCommands: []string{"FLUSHALL"}}}, "redis", msg("command", dpi.AttrCommand, "GET"), false, false},
		{"sql verbs mysql", &L7{SQL: &SQLMatch{Verbs: []string{"SELECT"}}}, "mysql", msg("query", dpi.AttrVerb, "SELECT"), true, true},
		{"sql deny verbs", &L7{SQL: &SQLMatch{DenyVerbs: []string{"DROP"}}}, "postgres", msg("query", dpi.AttrVerb, "drop"), true, false},
		{"http host ipv6 port", &L7{HTTP: &HTTPMatch{Hosts: []string{"[::1]"}}}, "http", msg("request", dpi.AttrHost, "[::1]:8080"), true, true},
		{"http missing path", &L7{HTTP: &HTTPMatch{Paths: []string{"/"}}}, "http", msg("request", dpi.AttrMethod, "GET"), true, false},
		{"http double slash fails closed for allow", &L7{HTTP: &HTTPMatch{Paths: []string{"/api"}}}, "http", msg("request", dpi.AttrPath, "//api"), true, false},
		{"http section applies to grpc", &L7{HTTP: &HTTPMatch{Methods: []string{"POST"}}}, "grpc", msg("request", dpi.AttrMethod, "POST"), true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := mk(c.l7)
			if !l.appliesTo(c.app) {
				t.Fatalf("section does not apply to %s", c.app)
			}
			if got := l.match(c.app, c.m, c.allow); got != c.want {
				t.Errorf("match = %v, want %v", got, c.want)
			}
		})
	}
	if mk(&L7{Redis: &RedisMatch{}}).appliesTo("http") {
		t.Error("redis section applies to http")
	}
}

func TestNoPolicyDeniesAndEngineSwap(t *testing.T) {
	e := NewEngine(CompileOptions{})
	d := e.Decide(&Input{Port: 80, Transport: dpi.TCP})
	if d.Verdict != Deny || d.Reason != ReasonNoPolicy {
		t.Fatalf("before config: %+v", d)
	}
	s := loadShop(t)
	p1, err := e.Update(s)
	if err != nil {
		t.Fatal(err)
	}
	web, _ := p1.GroupID("shop/web")
	cache, _ := p1.GroupID("shop/cache")
	in := &Input{SrcGroups: []GroupID{web}, DstGroups: []GroupID{cache}, Port: 6379, Transport: dpi.TCP, App: "redis"}
	if d := e.Decide(in); d.Verdict != Allow {
		t.Fatalf("after update: %+v", d)
	}
	// IDs survive recompiles of a changed policy through the engine's table.
	s2, _ := s.Delete(KindNetworkRule, "shop/web-to-cache")
	s2 = s2.Merge(&Set{Groups: []Group{{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindGroup}, Metadata: ObjectMeta{Name: "aaa", Namespace: "shop"}, Spec: GroupSpec{Mode: ModeProtect}}}})
	p2, err := e.Update(s2)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := p2.GroupID("shop/web"); id != web {
		t.Fatalf("group id changed: %d -> %d", web, id)
	}
	if d := e.Decide(in); d.Verdict != Deny || !strings.Contains(d.String(), "shop/cache is in protect mode") {
		t.Fatalf("after removing rule: %+v", d)
	}
}

func TestExplain(t *testing.T) {
	p, _ := Compile(loadShop(t), CompileOptions{})
	f := flow("shop/client", "shop/web", dpi.TCP, 8080, "http", Request(dpi.AttrMethod, "DELETE", dpi.AttrPath, "/api/x", dpi.AttrHost, "shop.example"))
	in := p.Input(&f)
	d, text := p.Explain(&in)
	if d.Verdict != Deny {
		t.Fatal(d)
	}
	for _, w := range []string{"verdict: deny", "group shop/web is in protect mode", "destination groups: shop/web (protect)",
		"deny  shop/no-admin (priority 0): this request does not match its l7 section",
		"allow shop/client-to-web (priority 0): connection matches, this request does not match its l7 section (method \"DELETE\" not in [GET POST])",
		"deny  shop/no-admin (priority 0): this request does not match its l7 section (path \"/api/x\" not in [/api/admin])"} {
		if !strings.Contains(text, w) {
			t.Errorf("explanation lacks %q:\n%s", w, text)
		}
	}
	f4 := flow("shop/web", "shop/cache", dpi.TCP, 6379, "redis", Request(dpi.AttrCommand, "FLUSHALL"))
	in4 := p.Input(&f4)
	if _, text := p.Explain(&in4); !strings.Contains(text, `(command "FLUSHALL" is in denyCommands)`) {
		t.Errorf("explanation:\n%s", text)
	}
	f2 := flow("shop/web", "shop/cache", dpi.TCP, 6379, "redis", nil)
	in2 := p.Input(&f2)
	_, text = p.Explain(&in2)
	if !strings.Contains(text, "allow shop/web-to-cache (priority 0): matches: decides") {
		t.Errorf("explanation:\n%s", text)
	}
	f3 := flow("shop/client", "shop/web", dpi.TCP, 9, "http", nil)
	in3 := p.Input(&f3)
	_, text = p.Explain(&in3)
	for _, w := range []string{"deny  shop/no-admin (priority 0): its l7 section applies to requests; none given",
		"allow shop/client-to-web (priority 0): port/application do not match (ports tcp/8000-8100; applications http)"} {
		if !strings.Contains(text, w) {
			t.Errorf("explanation lacks %q:\n%s", w, text)
		}
	}
}

func TestReplay(t *testing.T) {
	s := loadShop(t)
	cur, _ := Compile(s, CompileOptions{})
	history := []Flow{
		flow("shop/web", "shop/cache", dpi.TCP, 6379, "redis", nil),
		flow("shop/client", "shop/db", dpi.TCP, 5432, "postgres", nil),
		flow("shop/web", "shop/client", dpi.TCP, 9999, "", nil),
	}
	for i := range history {
		in := cur.Input(&history[i])
		history[i].Verdict = cur.Decide(&in).Verdict
		history[i].ID = string(rune('a' + i))
	}
	if ch := Replay(history, cur); len(ch) != 0 {
		t.Fatalf("same policy changed %d flows", len(ch))
	}
	// Proposed: db to protect, web-to-cache removed.
	prop, _ := s.SetMode("shop/db", ModeProtect)
	prop, _ = prop.Delete(KindNetworkRule, "shop/web-to-cache")
	pp, err := Compile(prop, CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ch := Replay(history, pp)
	if len(ch) != 2 || ch[0].Flow.ID != "a" || ch[1].Flow.ID != "b" {
		t.Fatalf("changes: %+v", ch)
	}
	if ch[0].Before != Allow || ch[0].After.Verdict != Deny || !strings.Contains(ch[1].After.String(), "shop/db is in protect mode") {
		t.Fatalf("changes: %+v", ch)
	}
}

func TestForDestinationsSameDecisions(t *testing.T) {
	full := scaleSet()
	pf, err := Compile(full, CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ins := benchInputs(pf, 4096)
	for _, in := range ins[:50] {
		var keys []string
		for _, id := range in.DstGroups {
			keys = append(keys, pf.GroupKey(id))
		}
		sub := full.ForDestinations(keys...)
		if len(sub.NetworkRules) >= len(full.NetworkRules)/10 {
			t.Fatalf("subset has %d of %d rules", len(sub.NetworkRules), len(full.NetworkRules))
		}
		ps, err := Compile(sub, CompileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var f Flow
		for _, id := range in.SrcGroups {
			f.SrcGroups = append(f.SrcGroups, pf.GroupKey(id))
		}
		f.DstGroups, f.Port, f.Transport, f.App, f.L7 = keys, in.Port, in.Transport, in.App, in.L7
		in2 := ps.Input(&f)
		if a, b := pf.Decide(&in), ps.Decide(&in2); a != b {
			t.Fatalf("full %+v, subset %+v", a, b)
		}
	}
}

func TestDecisionJSON(t *testing.T) {
	d := Decision{Verdict: Deny, Violation: true, Mode: ModeProtect, Reason: ReasonMode, Group: "shop/cache"}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"verdict":"deny","violation":true,"mode":"protect","reason":"mode","group":"shop/cache"}` {
		t.Fatalf("json: %s", b)
	}
	var v Verdict
	if err := v.UnmarshalText([]byte("allow")); err != nil || v != Allow {
		t.Fatal(v, err)
	}
	if err := v.UnmarshalText([]byte("maybe")); err == nil {
		t.Fatal("bad verdict accepted")
	}
}
