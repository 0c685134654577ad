package controller

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	"github.com/meshguard/meshguard/internal/api"
)

// readyWriter captures logs and signals the first line containing "ready".
type readyWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	once  sync.Once
	ready chan struct{}
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if bytes.Contains(p, []byte("ready")) {
		w.once.Do(func() { close(w.ready) })
	}
	return w.buf.Write(p)
}

func testConfig(dir string, w io.Writer) Config {
	return Config{DataDir: dir, TrustDomain: "example.org", ListenAPI: "127.0.0.1:0", ListenIdentity: "127.0.0.1:0", TunnelPort: DefaultTunnelPort, EventRetention: time.Hour,
		SVIDTTL: time.Hour, Clock: clockwork.NewRealClock(), Log: slog.New(slog.NewTextHandler(w, nil))}
}

func runController(t *testing.T, dir string) (api.AdminConfig, func()) {
	t.Helper()
	w := &readyWriter{ready: make(chan struct{})}
	c, err := New(testConfig(dir, w))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-w.ready:
	case err := <-done:
		t.Fatalf("controller stopped before ready: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("controller not ready after 20s")
	}
	adm, err := api.LoadAdminConfig(c.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	return adm, func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("controller did not stop within 20s of cancel")
		}
	}
}

func TestControllerServesAPIAndRestartsWithSameCAAndToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	adm, stop := runController(t, dir)
	if fi, _ := os.Stat(filepath.Join(dir, "admin.conf")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.conf mode %v", fi.Mode().Perm())
	}
	if !strings.HasPrefix(adm.Server, "https://127.0.0.1:") || strings.HasSuffix(adm.Server, ":0") {
		t.Fatalf("server %q: want the bound https address", adm.Server)
	}
	call := func(adm api.AdminConfig, method, path, body string) (int, string) {
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(mustRead(t, adm.CAFile))
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
		req, _ := http.NewRequest(method, adm.Server+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adm.Token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	get := func(adm api.AdminConfig) int {
		code, _ := call(adm, "GET", "/api/v1/events?kind=audit", "")
		return code
	}
	if code, _ := call(adm, "POST", "/api/v1/tokens", `{"spiffeId":"spiffe://example.org/ns/default/sa/web"}`); code != 201 {
		t.Fatalf("POST tokens: %d", code)
	}
	// The identity service's audit events reach the API's event list.
	if code, body := call(adm, "GET", "/api/v1/events?kind=audit", ""); code != 200 || !strings.Contains(body, `"name":"token.created"`) {
		t.Fatalf("GET events: %d %s", code, body)
	}
	bundle := mustRead(t, adm.CAFile)
	stop()

	adm2, stop2 := runController(t, dir)
	defer stop2()
	if adm2.Token != adm.Token || !bytes.Equal(bundle, mustRead(t, adm2.CAFile)) {
		t.Fatal("admin token or CA changed across restart")
	}
	if code := get(adm2); code != 200 {
		t.Fatalf("GET events after restart: %d", code)
	}
}

func TestConfigValidation(t *testing.T) {
	base := testConfig("/tmp/x", io.Discard)
	for name, mut := range map[string]func(*Config){
		"no data dir":      func(c *Config) { c.DataDir = "" },
		"bad trust domain": func(c *Config) { c.TrustDomain = "Not A Domain" },
		"bad listen":       func(c *Config) { c.ListenAPI = "7443" },
		"ttl too short":    func(c *Config) { c.SVIDTTL = time.Minute },
		"ttl too long":     func(c *Config) { c.SVIDTTL = 25 * time.Hour },
		"cert without key": func(c *Config) { c.CACertFile = "x.pem" },
		"bad egress":       func(c *Config) { c.Egress = "ALLOW_ANY" },
		"bad namespace":    func(c *Config) { c.PermissiveNamespaces = []string{"Legacy"} },
		"empty namespace":  func(c *Config) { c.PermissiveNamespaces = []string{""} },
		"webhook, no key":  func(c *Config) { c.WebhookURL = "https://hooks.example/x" },
		"key, no webhook":  func(c *Config) { c.WebhookSecretFile = "/tmp/secret" },
	} {
		c := base
		mut(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(base); err != nil {
		t.Fatal(err)
	}
}

func TestSuperviseStopsAllWhenOneFails(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	boom := errors.New("boom")
	stopped := make(chan string, 2)
	err := Supervise(context.Background(), log,
		Subsystem{Name: "waits", Run: func(ctx context.Context) error { <-ctx.Done(); stopped <- "waits"; return nil }},
		Subsystem{Name: "fails", Run: func(context.Context) error { return boom }},
	)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "fails") {
		t.Fatalf("Supervise = %v, want the failing subsystem's error", err)
	}
	if <-stopped != "waits" {
		t.Fatal("healthy subsystem was not stopped")
	}
	// Clean cancel: nil.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Supervise(ctx, log, Subsystem{Name: "a", Run: func(ctx context.Context) error { <-ctx.Done(); return nil }}); err != nil {
		t.Fatalf("clean shutdown: %v", err)
	}
	// A subsystem returning nil early is a failure too.
	if err := Supervise(context.Background(), log, Subsystem{Name: "quits", Run: func(context.Context) error { return nil }}); err == nil {
		t.Fatal("early nil return not reported")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMeshModesFromFlags(t *testing.T) {
	c := testConfig("/tmp/x", io.Discard)
	ns, eg, err := c.meshModes()
	if err != nil || len(ns) != 0 || eg != xdsv1.EgressMode_EGRESS_MODE_REGISTRY_ONLY {
		t.Fatalf("defaults: %v %v %v (want every namespace STRICT, registry-only)", ns, eg, err)
	}
	c.PermissiveNamespaces, c.Egress = []string{"legacy", "old-shop"}, EgressAllowAny
	ns, eg, err = c.meshModes()
	if err != nil || eg != xdsv1.EgressMode_EGRESS_MODE_ALLOW_ANY || len(ns) != 2 ||
		ns["legacy"] != xdsv1.MTLSMode_MTLS_MODE_PERMISSIVE || ns["old-shop"] != xdsv1.MTLSMode_MTLS_MODE_PERMISSIVE {
		t.Fatalf("got %v %v %v", ns, eg, err)
	}
	c.Egress = "everything"
	if _, err := New(c); err == nil || !strings.Contains(err.Error(), "--egress") {
		t.Fatalf("bad egress: %v (want an error naming --egress)", err)
	}
}
