package api_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/controller"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/learn"
	"github.com/meshguard/meshguard/internal/registry"
	"github.com/meshguard/meshguard/internal/store"
	"github.com/meshguard/meshguard/internal/xds"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// memPolicies is an in-memory store.Policies.
type memPolicies struct {
	mu  sync.Mutex
	rec store.PolicyRecord
}

func (m *memPolicies) LoadPolicy(context.Context) (store.PolicyRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rec, nil
}
func (m *memPolicies) SavePolicy(_ context.Context, r store.PolicyRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rec = r
	return nil
}

// memPrincipals is an in-memory api.Principals.
type memPrincipals struct {
	mu     sync.Mutex
	tokens map[[32]byte]api.Principal
}

func (m *memPrincipals) ByTokenHash(h [32]byte) (api.Principal, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.tokens[h]
	return p, ok
}
func (m *memPrincipals) ByName(string) (api.Principal, bool) { return api.Principal{}, false }
func (m *memPrincipals) CreateToken(_ context.Context, p api.Principal) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tok := "tok-" + p.Name + "-0123456789"
	m.tokens[sha256.Sum256([]byte(tok))] = p
	return tok, nil
}
func (m *memPrincipals) Bind(context.Context, api.Principal) error { return nil }

type observations struct {
	mu  sync.Mutex
	got []learn.Observation
}

func (o *observations) Observe(x learn.Observation) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, x)
	return true
}

type fixture struct {
	srv   *api.Server
	st    *memPolicies
	audit *events.Ring
	evs   *events.Store
	reg   *registry.Registry
	conns *controller.Connections
	obs   *observations
	quar  *fakeQuarantines
	caps  *fakeCaptures
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	clock := clockwork.NewRealClock()
	f := &fixture{st: &memPolicies{}, audit: events.NewRing(100), obs: &observations{}, quar: newFakeQuarantines(), caps: newFakeCaptures()}
	var err error
	f.reg, err = registry.New(registry.Config{Log: log, TrustDomain: "td"})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []registry.Workload{
		{Namespace: "shop", Name: "web-0", IP: netip.MustParseAddr("10.0.0.1"), ServiceAccount: "web", Labels: map[string]string{"app": "web"}},
		{Namespace: "shop", Name: "cache-0", IP: netip.MustParseAddr("10.0.0.2"), ServiceAccount: "cache", Labels: map[string]string{"app": "cache"}},
		{Namespace: "shop", Name: "client", IP: netip.MustParseAddr("10.0.0.3"), ServiceAccount: "client", Labels: map[string]string{"app": "client"}},
	} {
		if err := f.reg.UpsertWorkload(w); err != nil {
			t.Fatal(err)
		}
	}
	f.evs, err = events.OpenStore(events.StoreConfig{Path: t.TempDir() + "/events.db", Clock: clock, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.evs.Close() })
	sink := events.Multi{f.audit, storeSink{f.evs}}
	var conns *controller.Connections
	pol, err := controller.NewPolicyService(controller.PolicyConfig{Store: f.st, Registry: f.reg, History: historyOf{&conns}, Audit: sink, Clock: clock, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := pol.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Membership follows the policy, as the controller's membership loop does.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		for {
			ch := pol.Changed()
			f.reg.SetGroups(pol.PolicySet().Groups)
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
		}
	}()
	conns, err = controller.NewConnections(controller.ConnectionsConfig{Directory: f.reg, Policy: pol, Learner: f.obs, Events: sink,
		Clock: clock, Log: log, Metrics: prometheus.NewRegistry(), SystemPorts: []uint16{7443}})
	if err != nil {
		t.Fatal(err)
	}
	f.conns = conns
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	f.srv, err = api.New(api.Config{Listener: ln, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil }, AdminToken: admin, Identity: &fakeIdentity{},
		Events: f.audit, Log: log, Policy: pol, Registry: f.reg, Connections: conns, EventStore: f.evs, Audit: sink,
		Principals: &memPrincipals{tokens: map[[32]byte]api.Principal{}}, Sidecars: noSidecars{},
		Quarantines: f.quar, Captures: f.caps, Sensors: pol,
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "meshguard_up 1\n") })})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

type noSidecars struct{}

func (noSidecars) Sidecars() []xds.SidecarStatus { return nil }
func (noSidecars) Version() uint64               { return 7 }

type storeSink struct{ s *events.Store }

func (s storeSink) Emit(_ context.Context, e events.Event) { _ = s.s.Append(e) }

type historyOf struct{ c **controller.Connections }

func (h historyOf) Recorded() []controller.RecordedFlow { return (*h.c).Recorded() }

// call drives the API in-process; it returns the status and the raw body.
func (f *fixture) call(t *testing.T, method, path, token string, body any) (int, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = strings.NewReader(string(b))
	}
	req := httptest.NewRequest(method, path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	f.srv.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// waitGroups waits until membership (which follows the policy asynchronously) gives the
// workload n groups.
func (f *fixture) waitGroups(t *testing.T, ns, name string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(f.reg.GroupsOf(ns, name)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s has groups %v, want %d", ns, name, f.reg.GroupsOf(ns, name), n)
		}
		select {
		case <-f.reg.Changed():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (f *fixture) version(t *testing.T) uint64 {
	t.Helper()
	code, body := f.call(t, "GET", "/api/v1/policy", admin, nil)
	if code != 200 {
		t.Fatalf("get policy: %d %s", code, body)
	}
	var p api.PolicyResponse
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatal(err)
	}
	return p.Version
}

func (f *fixture) export(t *testing.T) string {
	t.Helper()
	_, body := f.call(t, "GET", "/api/v1/policy", admin, nil)
	var p api.PolicyResponse
	_ = json.Unmarshal([]byte(body), &p)
	return p.YAML
}

const shopPolicy = `apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  mode: discover
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: cache, namespace: shop}
spec:
  selector: {matchLabels: {app: cache}}
  mode: protect
---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: web-to-cache, namespace: shop}
spec:
  from: {group: web}
  to: {group: cache}
  ports: ["tcp/6379"]
  applications: [redis]
  l7: {redis: {denyCommands: [FLUSHALL]}}
  action: allow
`

func files(name, content string) api.ApplyRequest {
	return api.ApplyRequest{Files: []api.File{{Name: name, Content: content}}}
}

func lastAudit(f *fixture) events.Event {
	l := f.audit.List(events.Filter{Kind: events.KindAudit})
	if len(l) == 0 {
		return events.Event{}
	}
	return l[len(l)-1]
}

func TestPolicyApplyGetExportDelete(t *testing.T) {
	f := newFixture(t)
	code, body := f.call(t, "POST", "/api/v1/policy/apply", admin, files("shop.yaml", shopPolicy))
	if code != 200 || !strings.Contains(body, `"version":1`) {
		t.Fatalf("apply: %d %s", code, body)
	}
	if a := lastAudit(f); a.Action != "change" || !strings.Contains(a.Reason, "NetworkRule shop/web-to-cache") || !strings.Contains(a.Source.Identity, "admin") {
		t.Fatalf("audit: %+v", a)
	}
	f.waitGroups(t, "shop", "web-0", 1)
	code, body = f.call(t, "GET", "/api/v1/groups?namespace=shop", admin, nil)
	var groups []api.GroupView
	_ = json.Unmarshal([]byte(body), &groups)
	if code != 200 || len(groups) != 2 || groups[1].Metadata.Name != "web" || len(groups[1].Members) != 1 || groups[1].Members[0] != "shop/web-0" || groups[0].Members[0] != "shop/cache-0" {
		t.Fatalf("groups: %d %s", code, body)
	}
	code, body = f.call(t, "GET", "/api/v1/rules", admin, nil)
	if code != 200 || !strings.Contains(body, "web-to-cache") {
		t.Fatalf("rules: %d %s", code, body)
	}
	exp := f.export(t)
	// Re-applying the export changes nothing but the version.
	if code, body := f.call(t, "POST", "/api/v1/policy/apply", admin, files("export.yaml", exp)); code != 200 {
		t.Fatalf("re-apply export: %d %s", code, body)
	}
	if got := f.export(t); got != exp || f.version(t) != 2 {
		t.Fatalf("export after re-apply differs (version %d):\n%s\nwant\n%s", f.version(t), got, exp)
	}
	// A group rules still use cannot go: 400, nothing changes.
	if code, body := f.call(t, "DELETE", "/api/v1/policy/group/shop/cache", admin, nil); code != 400 || !strings.Contains(body, "cache") {
		t.Fatalf("delete referenced group: %d %s", code, body)
	}
	if code, _ := f.call(t, "DELETE", "/api/v1/policy/rule/shop/nope", admin, nil); code != 404 {
		t.Fatalf("delete missing: %d", code)
	}
	if code, _ := f.call(t, "DELETE", "/api/v1/policy/bogus/shop/x", admin, nil); code != 400 {
		t.Fatalf("delete bad kind: %d", code)
	}
	if code, body := f.call(t, "DELETE", "/api/v1/policy/rule/shop/web-to-cache", admin, nil); code != 200 || f.version(t) != 3 {
		t.Fatalf("delete: %d %s", code, body)
	}
	if strings.Contains(f.export(t), "web-to-cache") {
		t.Fatal("deleted rule still exported")
	}
	// Persisted: a new service over the same store sees version 3.
	if f.st.rec.Version != 3 || !strings.Contains(string(f.st.rec.Doc), "name: cache") {
		t.Fatalf("store: %+v", f.st.rec)
	}
}

func TestPolicyApplyRefusesBadInputAtomically(t *testing.T) {
	f := newFixture(t)
	if code, body := f.call(t, "POST", "/api/v1/policy/apply", admin, files("shop.yaml", shopPolicy)); code != 200 {
		t.Fatalf("apply: %d %s", code, body)
	}
	before := f.export(t)
	cases := []struct{ name, doc, want string }{
		{"unknown field", "apiVersion: meshguard.io/v1alpha1\nkind: Group\nmetadata: {name: x, namespace: shop}\nspec:\n  mode: protect\n  bogus: 1\n", "bad.yaml:6"},
		{"bad mode", "apiVersion: meshguard.io/v1alpha1\nkind: Group\nmetadata: {name: x, namespace: shop}\nspec:\n  mode: protecc\n", "discover"},
		{"unknown group", "apiVersion: meshguard.io/v1alpha1\nkind: Group\nmetadata: {name: ok, namespace: shop}\nspec: {mode: protect}\n---\napiVersion: meshguard.io/v1alpha1\nkind: NetworkRule\nmetadata: {name: r, namespace: shop}\nspec:\n  from: {group: web}\n  to: {group: nosuch}\n  ports: [any]\n  applications: [any]\n  action: allow\n", "spec.to.group"},
		{"not yaml", "kind: [\n", "bad.yaml"},
		{"conflicting rules", "apiVersion: meshguard.io/v1alpha1\nkind: NetworkRule\nmetadata: {name: deny-web, namespace: shop}\nspec:\n  from: {group: web}\n  to: {group: cache}\n  ports: [\"tcp/6379\"]\n  applications: [redis]\n  action: deny\n---\napiVersion: meshguard.io/v1alpha1\nkind: NetworkRule\nmetadata: {name: allow-web, namespace: shop}\nspec:\n  from: {group: web}\n  to: {group: cache}\n  ports: [\"tcp/6379\"]\n  applications: [redis]\n  action: allow\n", "deny-web"},
	}
	for _, c := range cases {
		code, body := f.call(t, "POST", "/api/v1/policy/apply", admin, files("bad.yaml", c.doc))
		var e api.Error
		_ = json.Unmarshal([]byte(body), &e)
		if code != 400 || !strings.Contains(e.Error, c.want) {
			t.Errorf("%s: %d %q, want 400 mentioning %q", c.name, code, e.Error, c.want)
		}
		if a := lastAudit(f); a.Action != "refuse" {
			t.Errorf("%s: last audit %+v, want a refusal", c.name, a)
		}
	}
	if got := f.export(t); got != before || f.version(t) != 1 {
		t.Fatalf("a refused apply changed the policy (version %d)", f.version(t))
	}
	if code, _ := f.call(t, "POST", "/api/v1/policy/apply", admin, api.ApplyRequest{}); code != 400 {
		t.Fatalf("no files: %d", code)
	}
	if code, _ := f.call(t, "POST", "/api/v1/policy/apply", admin, map[string]any{"files": []any{}, "x": 1}); code != 400 {
		t.Fatalf("unknown body field: %d", code)
	}
}

func TestPolicyRBAC(t *testing.T) {
	f := newFixture(t)
	if code, body := f.call(t, "POST", "/api/v1/policy/apply", admin, files("shop.yaml", shopPolicy)); code != 200 {
		t.Fatalf("apply: %d %s", code, body)
	}
	token := func(p api.Principal) string {
		code, body := f.call(t, "POST", "/api/v1/apitokens", admin, api.TokenRequest{Principal: p})
		var r api.TokenResponse
		_ = json.Unmarshal([]byte(body), &r)
		if code != 201 || r.Token == "" {
			t.Fatalf("create token %+v: %d %s", p, code, body)
		}
		return r.Token
	}
	editor := token(api.Principal{Name: "alice", Role: api.RoleNamespaceEditor, Namespace: "shop"})
	viewer := token(api.Principal{Name: "vic", Role: api.RoleViewer})
	if code, _ := f.call(t, "POST", "/api/v1/apitokens", admin, api.TokenRequest{Principal: api.Principal{Name: "x", Role: "root"}}); code != 400 {
		t.Fatalf("bad role: %d", code)
	}
	if code, _ := f.call(t, "POST", "/api/v1/apitokens", editor, api.TokenRequest{Principal: api.Principal{Name: "x", Role: api.RoleAdmin}}); code != 403 {
		t.Fatalf("editor creating a token: %d", code)
	}

	bank := "apiVersion: meshguard.io/v1alpha1\nkind: Group\nmetadata: {name: vault, namespace: bank}\nspec: {mode: protect}\n"
	mixed := "apiVersion: meshguard.io/v1alpha1\nkind: Group\nmetadata: {name: extra, namespace: shop}\nspec: {mode: protect}\n---\n" + bank
	before := f.version(t)
	code, body := f.call(t, "POST", "/api/v1/policy/apply", editor, files("mixed.yaml", mixed))
	if code != 403 || !strings.Contains(body, "bank/vault") || !strings.Contains(body, `namespace \"shop\"`) {
		t.Fatalf("editor applying another namespace: %d %s", code, body)
	}
	if f.version(t) != before || strings.Contains(f.export(t), "extra") {
		t.Fatal("a refused apply was half applied")
	}
	if a := lastAudit(f); a.Action != "refuse" || !strings.Contains(a.Source.Identity, "alice") || !strings.Contains(a.Reason, "bank/vault") {
		t.Fatalf("refusal not audited: %+v", a)
	}
	if code, _ := f.call(t, "POST", "/api/v1/policy/mode", editor, api.ModeRequest{Group: "bank/vault", Mode: "monitor"}); code != 403 {
		t.Fatalf("editor mode in another namespace: %d", code)
	}
	if code, _ := f.call(t, "DELETE", "/api/v1/policy/group/bank/vault", editor, nil); code != 403 {
		t.Fatalf("editor delete in another namespace: %d", code)
	}
	if code, _ := f.call(t, "POST", "/api/v1/policy/apply", editor, files("cluster.yaml", "apiVersion: meshguard.io/v1alpha1\nkind: Group\nmetadata: {name: all}\nspec: {mode: protect}\n")); code != 403 {
		t.Fatalf("editor applying a cluster-scoped document: %d", code)
	}
	// Its own namespace works, and the audit names who.
	if code, body := f.call(t, "POST", "/api/v1/policy/mode", editor, api.ModeRequest{Group: "shop/web", Mode: "monitor"}); code != 200 {
		t.Fatalf("editor mode in own namespace: %d %s", code, body)
	}
	if a := lastAudit(f); a.Action != "change" || !strings.Contains(a.Source.Identity, "alice") || !strings.Contains(a.Reason, "shop/web monitor") {
		t.Fatalf("change audit: %+v", a)
	}
	// Viewers read but never write.
	if code, _ := f.call(t, "GET", "/api/v1/groups", viewer, nil); code != 200 {
		t.Fatalf("viewer get: %d", code)
	}
	if code, _ := f.call(t, "POST", "/api/v1/policy/apply", viewer, files("shop.yaml", shopPolicy)); code != 403 {
		t.Fatalf("viewer apply: %d", code)
	}
	if code, body := f.call(t, "GET", "/metrics", viewer, nil); code != 200 || !strings.Contains(body, "meshguard_up") {
		t.Fatalf("viewer metrics: %d %s", code, body)
	}
	if code, body := f.call(t, "GET", "/api/v1/sidecars", viewer, nil); code != 200 || !strings.Contains(body, `"version":7`) {
		t.Fatalf("viewer sidecars: %d %s", code, body)
	}
	if code, _ := f.call(t, "GET", "/metrics", "", nil); code != 401 {
		t.Fatalf("metrics without a token: %d", code)
	}
	if code, _ := f.call(t, "GET", "/api/v1/groups", "", nil); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := f.call(t, "GET", "/api/v1/groups", "not-a-token-at-all", nil); code != 401 {
		t.Fatalf("bad token: %d", code)
	}
	code, body = f.call(t, "GET", "/api/v1/whoami", editor, nil)
	if code != 200 || !strings.Contains(body, `"namespace-editor"`) {
		t.Fatalf("whoami: %d %s", code, body)
	}
}

func TestModeExplainAndPolicyTest(t *testing.T) {
	f := newFixture(t)
	if code, body := f.call(t, "POST", "/api/v1/policy/apply", admin, files("shop.yaml", shopPolicy)); code != 200 {
		t.Fatalf("apply: %d %s", code, body)
	}
	f.waitGroups(t, "shop", "cache-0", 1)
	f.waitGroups(t, "shop", "web-0", 1)
	if code, _ := f.call(t, "POST", "/api/v1/policy/mode", admin, api.ModeRequest{Group: "shop/web", Mode: "sleepy"}); code != 400 {
		t.Fatalf("bad mode: %d", code)
	}
	if code, _ := f.call(t, "POST", "/api/v1/policy/mode", admin, api.ModeRequest{Group: "shop/nope", Mode: "monitor"}); code != 404 {
		t.Fatalf("unknown group: %d", code)
	}
	explain := func(q api.ExplainRequest) api.ExplainResponse {
		t.Helper()
		code, body := f.call(t, "POST", "/api/v1/explain", admin, q)
		if code != 200 {
			t.Fatalf("explain %+v: %d %s", q, code, body)
		}
		var r api.ExplainResponse
		_ = json.Unmarshal([]byte(body), &r)
		return r
	}
	r := explain(api.ExplainRequest{From: "shop/web-0", To: "shop/cache-0", Port: 6379, App: "redis"})
	if r.Decision.Verdict.String() != "allow" || r.Decision.RuleID != "shop/web-to-cache" {
		t.Fatalf("web->cache: %+v", r)
	}
	r = explain(api.ExplainRequest{From: "shop/client", To: "shop/cache-0", Port: 6379, App: "redis"})
	if r.Decision.Verdict.String() != "deny" || !strings.Contains(r.Summary, "protect") {
		t.Fatalf("client->cache: %+v", r)
	}
	if code, _ := f.call(t, "POST", "/api/v1/explain", admin, api.ExplainRequest{From: "shop/ghost", To: "shop/cache-0"}); code != 404 {
		t.Fatalf("unknown workload: %d", code)
	}
	if code, _ := f.call(t, "POST", "/api/v1/explain", admin, api.ExplainRequest{From: "ghost", To: "shop/cache-0"}); code != 400 {
		t.Fatalf("bad workload ref: %d", code)
	}

	// Record traffic: web->cache allowed by its rule, client->cache denied by protect mode.
	report := func(src, dst string, verdict, rule string) *xdsv1.ConnectionReport {
		return &xdsv1.ConnectionReport{Direction: "inbound", SourceAddr: src + ":40000", DestinationAddr: dst + ":6379",
			DestinationPort: 6379, AppProtocol: "redis", Verdict: verdict, RuleId: rule, StartUnixNano: time.Now().UnixNano()}
	}
	node := xds.Node{Namespace: "shop", Workload: "cache-0"}
	if err := f.conns.HandleReports(context.Background(), node, []*xdsv1.ConnectionReport{
		report("10.0.0.1", "10.0.0.2", "allow", "shop/web-to-cache"),
		report("10.0.0.3", "10.0.0.2", "deny", ""),
		report("10.0.0.3", "10.0.0.2", "deny", ""),
	}); err != nil {
		t.Fatal(err)
	}
	code, body := f.call(t, "GET", "/api/v1/connections", admin, nil)
	var conns []api.Connection
	_ = json.Unmarshal([]byte(body), &conns)
	if code != 200 || len(conns) != 2 || conns[0].Source != "shop/client" || conns[0].Count != 2 || conns[0].Verdict != "deny" {
		t.Fatalf("connections: %d %s", code, body)
	}
	code, body = f.call(t, "GET", "/api/v1/graph", admin, nil)
	var g api.Graph
	_ = json.Unmarshal([]byte(body), &g)
	if code != 200 || len(g.Nodes) != 3 || len(g.Edges) != 2 || g.Edges[0].Verdict != "deny" || g.Edges[1].Apps[0] != "redis" {
		t.Fatalf("graph: %d %s", code, body)
	}
	code, body = f.call(t, "GET", "/api/v1/events?kind=violation&since=1m", admin, nil)
	var ev api.EventsResponse
	_ = json.Unmarshal([]byte(body), &ev)
	if code != 200 || len(ev.Events) != 2 || ev.Events[0].Source.Workload != "shop/client" || !strings.Contains(ev.Events[0].Reason, "protect") {
		t.Fatalf("violations: %d %s", code, body)
	}

	// Proposed: a new group "clients" (membership recomputed for the replay) allowed to the
	// cache. Only the client's flow changes verdict.
	allowClient := "apiVersion: meshguard.io/v1alpha1\nkind: Group\nmetadata: {name: clients, namespace: shop}\nspec:\n  selector: {matchLabels: {app: client}}\n  mode: discover\n---\napiVersion: meshguard.io/v1alpha1\nkind: NetworkRule\nmetadata: {name: client-to-cache, namespace: shop}\nspec:\n  from: {group: clients}\n  to: {group: cache}\n  ports: [tcp/6379]\n  applications: [redis]\n  action: allow\n"
	code, body = f.call(t, "POST", "/api/v1/policy/test", admin, files("new.yaml", allowClient))
	var pt api.PolicyTestResponse
	_ = json.Unmarshal([]byte(body), &pt)
	if code != 200 || pt.Flows != 2 || len(pt.Changes) != 1 || !strings.HasPrefix(pt.Changes[0].Flow, "shop/client -> shop/cache-0") || pt.Changes[0].After.String() != "allow" {
		t.Fatalf("policy test: %d %s", code, body)
	}
	if f.version(t) != 1 {
		t.Fatal("policy test applied something")
	}
	if code, _ := f.call(t, "POST", "/api/v1/policy/test", admin, files("bad.yaml", "kind: Nope\n")); code != 400 {
		t.Fatalf("policy test bad yaml: %d", code)
	}
}

func TestLearningObservationFromDiscoverTraffic(t *testing.T) {
	f := newFixture(t)
	// Only web exists as a group (discover); cache is in no group here, so put it in one.
	doc := "apiVersion: meshguard.io/v1alpha1\nkind: Group\nmetadata: {name: cache, namespace: shop}\nspec:\n  selector: {matchLabels: {app: cache}}\n  mode: discover\n---\napiVersion: meshguard.io/v1alpha1\nkind: Group\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  mode: discover\n"
	if code, body := f.call(t, "POST", "/api/v1/policy/apply", admin, files("d.yaml", doc)); code != 200 {
		t.Fatalf("apply: %d %s", code, body)
	}
	f.waitGroups(t, "shop", "web-0", 1)
	err := f.conns.HandleReports(context.Background(), xds.Node{Namespace: "shop", Workload: "cache-0"}, []*xdsv1.ConnectionReport{{
		Direction: "inbound", SourceAddr: "10.0.0.1:1234", DestinationAddr: "10.0.0.2:6379", DestinationPort: 6379, AppProtocol: "redis", Verdict: "allow"}})
	if err != nil {
		t.Fatal(err)
	}
	f.obs.mu.Lock()
	defer f.obs.mu.Unlock()
	if len(f.obs.got) != 1 || f.obs.got[0].SrcGroup != "shop/web" || f.obs.got[0].DstGroup != "shop/cache" || f.obs.got[0].App != "redis" {
		t.Fatalf("observations: %+v", f.obs.got)
	}
}

func TestEventsFollow(t *testing.T) {
	f := newFixture(t)
	ts := httptest.NewServer(f.srv)
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = f.evs.Append(events.Event{Kind: events.KindViolation, Name: "old"})
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/api/v1/events?kind=violation&follow=true", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	next := func() events.Event {
		t.Helper()
		if !sc.Scan() {
			t.Fatalf("stream ended: %v", sc.Err())
		}
		var e events.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		return e
	}
	if e := next(); e.Name != "old" {
		t.Fatalf("history: %+v", e)
	}
	_ = f.evs.Append(events.Event{Kind: events.KindAudit, Name: "skip"}, events.Event{Kind: events.KindViolation, Name: "new"})
	if e := next(); e.Name != "new" {
		t.Fatalf("followed: %+v", e)
	}
}

// A report without a verdict (the sidecar did not decide) is a connection that went
// through; in protect mode it is a violation that says it was not enforced.
func TestUnenforcedReportIsAnHonestViolation(t *testing.T) {
	f := newFixture(t)
	if code, body := f.call(t, "POST", "/api/v1/policy/apply", admin, files("shop.yaml", shopPolicy)); code != 200 {
		t.Fatalf("apply: %d %s", code, body)
	}
	err := f.conns.HandleReports(context.Background(), xds.Node{Namespace: "shop", Workload: "cache-0"}, []*xdsv1.ConnectionReport{{
		Direction: "inbound", SourceAddr: "10.0.0.3:1234", DestinationAddr: "127.0.0.1:6379", DestinationPort: 6379, AppProtocol: "redis"}})
	if err != nil {
		t.Fatal(err)
	}
	_, body := f.call(t, "GET", "/api/v1/connections", admin, nil)
	var conns []api.Connection
	_ = json.Unmarshal([]byte(body), &conns)
	if len(conns) != 1 || conns[0].Verdict != "allow" || conns[0].Destination != "shop/cache-0" || conns[0].Source != "shop/client" {
		t.Fatalf("connections: %s", body)
	}
	_, body = f.call(t, "GET", "/api/v1/events?kind=violation", admin, nil)
	if !strings.Contains(body, "not enforced") || !strings.Contains(body, "protect") {
		t.Fatalf("violation: %s", body)
	}
}
