package api_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/identity"
)

const admin = "admin-token-0123456789abcdef"

// fakeIdentity records calls and refuses bad IDs the way the real service does.
type fakeIdentity struct{ revoked, rotated []string }

func (f *fakeIdentity) CreateToken(_ context.Context, id string, ttl time.Duration) (string, time.Time, error) {
	if !strings.HasPrefix(id, "spiffe://") {
		_, err := identity.ParseWorkloadID(spiffeid.RequireTrustDomainFromString("td"), id)
		return "", time.Time{}, identity.Invalid(err)
	}
	return "tok-for-" + id + "-" + ttl.String(), time.Unix(0, 0), nil
}
func (f *fakeIdentity) Rotate(_ context.Context, root bool) error {
	f.rotated = append(f.rotated, map[bool]string{true: "root", false: "intermediate"}[root])
	return nil
}
func (f *fakeIdentity) Revoke(_ context.Context, id string) error {
	f.revoked = append(f.revoked, id)
	return nil
}

func start(t *testing.T) (*http.Client, string, *fakeIdentity, *events.Ring) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ca, err := identity.LoadCA(identity.CAConfig{Dir: t.TempDir(), TrustDomain: spiffeid.RequireTrustDomainFromString("td"), Clock: clockwork.NewRealClock(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fi, ring := &fakeIdentity{}, events.NewRing(10)
	srv, err := api.New(api.Config{Listener: ln, GetCertificate: ca.ServerCertificate([]string{"127.0.0.1"}), AdminToken: admin, Identity: fi, Events: ring, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	roots := x509.NewCertPool()
	for _, r := range ca.Bundle() {
		roots.AddCert(r)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	return c, "https://" + ln.Addr().String(), fi, ring
}

func do(t *testing.T, c *http.Client, method, url, token, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestAPIAuthAndIdentityRoutes(t *testing.T) {
	c, base, fi, ring := start(t)
	if code, _ := do(t, c, "POST", base+"/api/v1/ca/rotate", "", `{}`); code != 401 {
		t.Fatalf("no token: %d, want 401", code)
	}
	if code, _ := do(t, c, "POST", base+"/api/v1/ca/rotate", "wrong-token-0123456789", `{}`); code != 401 {
		t.Fatalf("wrong token: %d, want 401", code)
	}
	code, out := do(t, c, "POST", base+"/api/v1/tokens", admin, `{"spiffeId":"spiffe://td/ns/a/sa/b","ttl":"5m"}`)
	if code != 201 || out["token"] != "tok-for-spiffe://td/ns/a/sa/b-5m0s" {
		t.Fatalf("create token: %d %v", code, out)
	}
	if code, out := do(t, c, "POST", base+"/api/v1/tokens", admin, `{"spiffeId":"nope"}`); code != 400 || !strings.Contains(out["error"].(string), "spiffe id") {
		t.Fatalf("bad id: %d %v", code, out)
	}
	if code, _ := do(t, c, "POST", base+"/api/v1/tokens", admin, `{"spiffeId":"spiffe://td/ns/a/sa/b","bogus":1}`); code != 400 {
		t.Fatalf("unknown field: %d, want 400", code)
	}
	if code, _ := do(t, c, "POST", base+"/api/v1/ca/rotate", admin, `{"root":true}`); code != 200 || len(fi.rotated) != 1 || fi.rotated[0] != "root" {
		t.Fatalf("rotate: %d %v", code, fi.rotated)
	}
	if code, _ := do(t, c, "POST", base+"/api/v1/svids/revoke", admin, `{"spiffeId":"spiffe://td/ns/a/sa/b"}`); code != 200 || len(fi.revoked) != 1 {
		t.Fatalf("revoke: %d %v", code, fi.revoked)
	}
	ring.Emit(context.Background(), events.Event{Kind: events.KindAudit, Name: "svid.issued"})
	ring.Emit(context.Background(), events.Event{Kind: events.KindThreat, Name: "sqli"})
	code, out = do(t, c, "GET", base+"/api/v1/events?kind=audit", admin, "")
	evs, _ := out["events"].([]any)
	if code != 200 || len(evs) != 1 || evs[0].(map[string]any)["name"] != "svid.issued" {
		t.Fatalf("events: %d %v", code, out)
	}
	if code, _ := do(t, c, "GET", base+"/api/v1/events?kind=bogus", admin, ""); code != 400 {
		t.Fatalf("bad kind: %d", code)
	}
}
