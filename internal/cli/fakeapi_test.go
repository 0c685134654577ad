package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/meshguard/meshguard/internal/api"
)

// apiCall is one request the fake REST API received.
type apiCall struct {
	Method, Path, Body, Auth string
}

// fakeAPI stands in for the controller's REST API: a real HTTPS server with the routes a test
// gives, recording every request, plus an admin.conf pointing at it.
type fakeAPI struct {
	conf  string
	mu    sync.Mutex
	calls []apiCall
}

const fakeToken = "test-admin-token"

func newFakeAPI(t *testing.T, routes map[string]http.HandlerFunc) *fakeAPI {
	t.Helper()
	f := &fakeAPI{}
	mux := http.NewServeMux()
	for pattern, h := range routes {
		mux.HandleFunc(pattern, h)
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.calls = append(f.calls, apiCall{Method: r.Method, Path: r.URL.RequestURI(), Body: string(body), Auth: r.Header.Get("Authorization")})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	f.conf = filepath.Join(dir, "admin.conf")
	if err := api.WriteAdminConfig(f.conf, api.AdminConfig{Server: srv.URL, CAFile: caFile, Token: fakeToken}); err != nil {
		t.Fatal(err)
	}
	return f
}

// run executes the CLI against the fake API.
func (f *fakeAPI) run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Execute(context.Background(), append([]string{"--config", f.conf}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func (f *fakeAPI) Calls() []apiCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]apiCall(nil), f.calls...)
}

// only asserts exactly one request was made and returns it.
func (f *fakeAPI) only(t *testing.T) apiCall {
	t.Helper()
	calls := f.Calls()
	if len(calls) != 1 {
		t.Fatalf("want 1 API call, got %d: %+v", len(calls), calls)
	}
	if calls[0].Auth != "Bearer "+fakeToken {
		t.Errorf("Authorization = %q, want the admin token", calls[0].Auth)
	}
	return calls[0]
}

func (f *fakeAPI) reset() {
	f.mu.Lock()
	f.calls = nil
	f.mu.Unlock()
}

func writeJSONReply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func replyJSON(status int, v any) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { writeJSONReply(w, status, v) }
}

// jsonEqual compares a request body with the expected JSON, ignoring key order.
func jsonEqual(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("body %q is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Errorf("body = %s, want %s", gb, wb)
	}
}
