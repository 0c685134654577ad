package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/capture"
)

// fakeQuarantines knows the fixture's workloads and records what it was asked.
type fakeQuarantines struct {
	mu       sync.Mutex
	known    map[string]bool
	status   map[string]api.QuarantineStatus
	released []string
}

func newFakeQuarantines() *fakeQuarantines {
	return &fakeQuarantines{known: map[string]bool{"shop/web-0": true, "shop/cache-0": true}, status: map[string]api.QuarantineStatus{}}
}

func (f *fakeQuarantines) Quarantine(_ context.Context, ns, name, reason string) (api.QuarantineStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := ns + "/" + name
	if !f.known[key] {
		return api.QuarantineStatus{}, api.NotFound(errors.New("no workload " + key))
	}
	st := api.QuarantineStatus{Workload: key, Since: time.Unix(100, 0).UTC(), Reason: reason}
	f.status[key] = st
	return st, nil
}

func (f *fakeQuarantines) Release(_ context.Context, ns, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := ns + "/" + name
	if !f.known[key] {
		return api.NotFound(errors.New("no workload " + key))
	}
	delete(f.status, key)
	f.released = append(f.released, key)
	return nil
}

func (f *fakeQuarantines) Quarantined() []api.QuarantineStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []api.QuarantineStatus
	for _, s := range f.status {
		out = append(out, s)
	}
	return out
}

// fakeCaptures serves stored captures from memory; Request answers per workload: web-0 gets
// a capture, cache-0 has no sidecar connected, slow-0 times out, others are unknown.
type fakeCaptures struct {
	mu       sync.Mutex
	infos    []capture.Info // oldest first, as the store lists
	pcaps    map[string][]byte
	deadline time.Duration // remaining time on the last Request's context
	asked    time.Duration
}

const (
	capOld = "20260101T000000Z-000000000001"
	capNew = "20260101T000001Z-000000000002"
)

func newFakeCaptures() *fakeCaptures {
	return &fakeCaptures{
		infos: []capture.Info{{ID: capOld, Workload: "shop/web-0", Bytes: 3}, {ID: capNew, Workload: "shop/web-0", Bytes: 4}},
		pcaps: map[string][]byte{capOld: []byte("old"), capNew: []byte("pcap")},
	}
}

func (f *fakeCaptures) List() ([]capture.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]capture.Info(nil), f.infos...), nil
}

func (f *fakeCaptures) Get(id string) (capture.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, i := range f.infos {
		if i.ID == id {
			return i, nil
		}
	}
	return capture.Info{}, api.NotFound(errors.New("no capture " + id))
}

func (f *fakeCaptures) Open(id string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.pcaps[id]
	if !ok {
		return nil, api.NotFound(errors.New("no capture " + id))
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (f *fakeCaptures) Request(ctx context.Context, ns, name string, d time.Duration) (capture.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		f.deadline = time.Until(dl)
	}
	f.asked = d
	switch ns + "/" + name {
	case "shop/web-0":
		return capture.Info{ID: "20260101T000002Z-000000000003", Workload: "shop/web-0", Reason: "on-demand", Bytes: 24}, nil
	case "shop/cache-0":
		return capture.Info{}, api.Conflict(errors.New("workload has no connected sidecar"))
	case "shop/slow-0":
		return capture.Info{}, context.DeadlineExceeded
	}
	return capture.Info{}, api.NotFound(errors.New("no workload " + ns + "/" + name))
}

func errorOf(body string) string {
	var e api.Error
	_ = json.Unmarshal([]byte(body), &e)
	return e.Error
}

func TestQuarantineRoutes(t *testing.T) {
	f := newFixture(t)
	code, body := f.call(t, "POST", "/api/v1/workloads/shop/web-0/quarantine", admin, api.QuarantineRequest{Reason: "dns tunnel"})
	var st api.QuarantineStatus
	_ = json.Unmarshal([]byte(body), &st)
	if code != 200 || st.Workload != "shop/web-0" || !strings.Contains(st.Reason, "dns tunnel") || !strings.Contains(st.Reason, "admin") {
		t.Fatalf("quarantine: %d %s", code, body)
	}
	// No body at all is fine: the reason says who did it.
	if code, body := f.call(t, "POST", "/api/v1/workloads/shop/cache-0/quarantine", admin, nil); code != 200 || !strings.Contains(body, "manual by admin") {
		t.Fatalf("quarantine without body: %d %s", code, body)
	}
	code, body = f.call(t, "GET", "/api/v1/quarantines", admin, nil)
	var list []api.QuarantineStatus
	_ = json.Unmarshal([]byte(body), &list)
	if code != 200 || len(list) != 2 {
		t.Fatalf("list: %d %s", code, body)
	}
	if code, body := f.call(t, "POST", "/api/v1/workloads/shop/ghost/quarantine", admin, nil); code != 404 || !strings.Contains(errorOf(body), "shop/ghost") {
		t.Fatalf("unknown workload: %d %s", code, body)
	}
	if code, body := f.call(t, "POST", "/api/v1/workloads/shop/web-0/quarantine", admin, map[string]any{"reason": strings.Repeat("x", 600)}); code != 400 || !strings.Contains(errorOf(body), "reason") {
		t.Fatalf("long reason: %d %s", code, body)
	}
	if code, body := f.call(t, "POST", "/api/v1/workloads/shop/web-0/quarantine", admin, map[string]any{"why": "x"}); code != 400 || !strings.Contains(errorOf(body), "why") {
		t.Fatalf("unknown field: %d %s", code, body)
	}
	code, body = f.call(t, "DELETE", "/api/v1/workloads/shop/web-0/quarantine", admin, nil)
	var rel api.ReleaseResponse
	_ = json.Unmarshal([]byte(body), &rel)
	if code != 200 || rel != (api.ReleaseResponse{Workload: "shop/web-0", Released: true}) || f.quar.released[0] != "shop/web-0" {
		t.Fatalf("release: %d %s", code, body)
	}
	if code, _ := f.call(t, "DELETE", "/api/v1/workloads/shop/ghost/quarantine", admin, nil); code != 404 {
		t.Fatalf("release unknown: %d", code)
	}

	// RBAC: viewers list; only admins quarantine and release (namespace editors included).
	viewer := f.token(t, api.Principal{Name: "vic", Role: api.RoleViewer})
	editor := f.token(t, api.Principal{Name: "alice", Role: api.RoleNamespaceEditor, Namespace: "shop"})
	if code, _ := f.call(t, "GET", "/api/v1/quarantines", viewer, nil); code != 200 {
		t.Fatalf("viewer list: %d", code)
	}
	for _, tok := range []string{viewer, editor} {
		if code, _ := f.call(t, "POST", "/api/v1/workloads/shop/web-0/quarantine", tok, nil); code != 403 {
			t.Fatalf("non-admin quarantine: %d", code)
		}
		if code, _ := f.call(t, "DELETE", "/api/v1/workloads/shop/cache-0/quarantine", tok, nil); code != 403 {
			t.Fatalf("non-admin release: %d", code)
		}
	}
	if len(f.quar.Quarantined()) != 1 {
		t.Fatalf("refused calls changed the quarantines: %+v", f.quar.Quarantined())
	}
}

func TestCaptureRoutes(t *testing.T) {
	f := newFixture(t)
	code, body := f.call(t, "POST", "/api/v1/workloads/shop/web-0/captures", admin, api.CaptureRequest{Duration: "30s"})
	var info capture.Info
	_ = json.Unmarshal([]byte(body), &info)
	if code != 201 || info.ID != "20260101T000002Z-000000000003" || info.Bytes != 24 {
		t.Fatalf("capture: %d %s", code, body)
	}
	if f.caps.asked != 30*time.Second || f.caps.deadline <= 30*time.Second || f.caps.deadline > 60*time.Second {
		t.Fatalf("asked %v with %v left, want 30s with the upload grace (up to 60s)", f.caps.asked, f.caps.deadline)
	}
	for _, c := range []struct {
		path, dur string
		code      int
		want      string
	}{
		{"/api/v1/workloads/shop/web-0/captures", "0.5s", 400, "duration"},
		{"/api/v1/workloads/shop/web-0/captures", "6m", 400, "5m0s"},
		{"/api/v1/workloads/shop/web-0/captures", "soon", 400, "duration"},
		{"/api/v1/workloads/shop/ghost/captures", "5s", 404, "shop/ghost"},
		{"/api/v1/workloads/shop/cache-0/captures", "5s", 409, "no connected sidecar"},
		{"/api/v1/workloads/shop/slow-0/captures", "5s", 504, "did not upload"},
	} {
		code, body := f.call(t, "POST", c.path, admin, api.CaptureRequest{Duration: c.dur})
		if code != c.code || !strings.Contains(errorOf(body), c.want) {
			t.Errorf("%s %s: %d %s, want %d naming %q", c.path, c.dur, code, body, c.code, c.want)
		}
	}

	code, body = f.call(t, "GET", "/api/v1/captures", admin, nil)
	var list []capture.Info
	_ = json.Unmarshal([]byte(body), &list)
	if code != 200 || len(list) != 2 || list[0].ID != capNew {
		t.Fatalf("list (newest first): %d %s", code, body)
	}
	if code, body := f.call(t, "GET", "/api/v1/captures/"+capOld, admin, nil); code != 200 || !strings.Contains(body, capOld) {
		t.Fatalf("get: %d %s", code, body)
	}
	req := httptest.NewRequest("GET", "/api/v1/captures/"+capNew+"/pcap", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	rec := httptest.NewRecorder()
	f.srv.ServeHTTP(rec, req)
	if rec.Code != 200 || rec.Body.String() != "pcap" || rec.Header().Get("Content-Type") != "application/vnd.tcpdump.pcap" {
		t.Fatalf("pcap: %d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
	if code, _ := f.call(t, "GET", "/api/v1/captures/20260101T000009Z-000000000009", admin, nil); code != 404 {
		t.Fatalf("unknown capture: %d", code)
	}
	if code, _ := f.call(t, "GET", "/api/v1/captures/20260101T000009Z-000000000009/pcap", admin, nil); code != 404 {
		t.Fatalf("unknown pcap: %d", code)
	}
	if code, body := f.call(t, "GET", "/api/v1/captures/..%2f..%2fetc/pcap", admin, nil); code != 400 && code != 404 {
		t.Fatalf("bad id: %d %s", code, body)
	}
	if code, body := f.call(t, "GET", "/api/v1/captures/not-an-id", admin, nil); code != 400 || !strings.Contains(errorOf(body), "capture id") {
		t.Fatalf("bad id: %d %s", code, body)
	}

	// Captures hold decrypted traffic: admins only.
	viewer := f.token(t, api.Principal{Name: "vic", Role: api.RoleViewer})
	editor := f.token(t, api.Principal{Name: "alice", Role: api.RoleNamespaceEditor, Namespace: "shop"})
	for _, tok := range []string{viewer, editor} {
		for _, c := range []struct{ method, path string }{
			{"GET", "/api/v1/captures"}, {"GET", "/api/v1/captures/" + capNew}, {"GET", "/api/v1/captures/" + capNew + "/pcap"},
			{"POST", "/api/v1/workloads/shop/web-0/captures"},
		} {
			if code, _ := f.call(t, c.method, c.path, tok, api.CaptureRequest{Duration: "5s"}); code != 403 {
				t.Errorf("non-admin %s %s: %d, want 403", c.method, c.path, code)
			}
		}
	}
}

func TestSensorRoutes(t *testing.T) {
	f := newFixture(t)
	if code, body := f.call(t, "POST", "/api/v1/policy/apply", admin, files("shop.yaml", shopPolicy)); code != 200 {
		t.Fatalf("apply: %d %s", code, body)
	}
	before := f.version(t)
	code, body := f.call(t, "PUT", "/api/v1/groups/shop/web/sensors/waf", admin, map[string]any{"paranoiaLevel": 2, "action": "block"})
	var v api.VersionResponse
	_ = json.Unmarshal([]byte(body), &v)
	if code != 200 || v.Version != before+1 {
		t.Fatalf("waf: %d %s (version before %d)", code, body, before)
	}
	code, body = f.call(t, "PUT", "/api/v1/groups/shop/web/sensors/dlp", admin, map[string]any{"patterns": []string{"credit-card"},
		"custom": []map[string]string{{"name": "order", "regex": "ORD-[0-9]{6}"}}, "action": "alert"})
	if code != 200 {
		t.Fatalf("dlp: %d %s", code, body)
	}
	exp := f.export(t)
	for _, want := range []string{"paranoiaLevel: 2", "action: block", "credit-card", "ORD-[0-9]{6}"} {
		if !strings.Contains(exp, want) {
			t.Fatalf("policy lacks %q after sensor PUT:\n%s", want, exp)
		}
	}
	for _, c := range []struct {
		path string
		body any
		code int
		want string
	}{
		{"/api/v1/groups/shop/web/sensors/waf", map[string]any{"paranoiaLevel": 5}, 400, "paranoiaLevel"},
		{"/api/v1/groups/shop/web/sensors/waf", map[string]any{"action": "drop"}, 400, "action"},
		{"/api/v1/groups/shop/web/sensors/waf", map[string]any{"anomalyThreshold": -1}, 400, "anomalyThreshold"},
		{"/api/v1/groups/shop/web/sensors/waf", map[string]any{"paranoia": 1}, 400, "paranoia"},
		{"/api/v1/groups/shop/web/sensors/dlp", map[string]any{"patterns": []string{"passport"}}, 400, "passport"},
		{"/api/v1/groups/shop/web/sensors/dlp", map[string]any{"action": "alert"}, 400, "patterns"},
		{"/api/v1/groups/shop/web/sensors/dlp", map[string]any{"custom": []map[string]string{{"name": "x", "regex": "("}}}, 400, "regex"},
		{"/api/v1/groups/shop/web/sensors/ids", map[string]any{}, 400, "waf or dlp"},
		{"/api/v1/groups/shop/nope/sensors/waf", map[string]any{"paranoiaLevel": 1}, 404, "no such group"},
	} {
		code, body := f.call(t, "PUT", c.path, admin, c.body)
		if code != c.code || !strings.Contains(errorOf(body), c.want) {
			t.Errorf("PUT %s %v: %d %s, want %d naming %q", c.path, c.body, code, body, c.code, c.want)
		}
	}
	// Namespace editors change their own namespace's groups only; viewers never.
	editor := f.token(t, api.Principal{Name: "alice", Role: api.RoleNamespaceEditor, Namespace: "shop"})
	other := f.token(t, api.Principal{Name: "bob", Role: api.RoleNamespaceEditor, Namespace: "bank"})
	viewer := f.token(t, api.Principal{Name: "vic", Role: api.RoleViewer})
	if code, _ := f.call(t, "PUT", "/api/v1/groups/shop/web/sensors/waf", other, map[string]any{"paranoiaLevel": 1}); code != 403 {
		t.Fatalf("editor of another namespace: %d", code)
	}
	if code, _ := f.call(t, "DELETE", "/api/v1/groups/shop/web/sensors/waf", viewer, nil); code != 403 {
		t.Fatalf("viewer delete: %d", code)
	}
	if code, body := f.call(t, "DELETE", "/api/v1/groups/shop/web/sensors/waf", editor, nil); code != 200 {
		t.Fatalf("editor delete: %d %s", code, body)
	}
	if code, _ := f.call(t, "DELETE", "/api/v1/groups/shop/web/sensors/dlp", admin, nil); code != 200 {
		t.Fatalf("admin delete: %d", code)
	}
	if exp := f.export(t); strings.Contains(exp, "sensors") {
		t.Fatalf("sensors left after both were deleted:\n%s", exp)
	}
}

// token creates a role token through the API.
func (f *fixture) token(t *testing.T, p api.Principal) string {
	t.Helper()
	code, body := f.call(t, "POST", "/api/v1/apitokens", admin, api.TokenRequest{Principal: p})
	var r api.TokenResponse
	_ = json.Unmarshal([]byte(body), &r)
	if code != 201 || r.Token == "" {
		t.Fatalf("create token %+v: %d %s", p, code, body)
	}
	return r.Token
}
