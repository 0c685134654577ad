package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/capture"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/policy"
)

// These tests drive the CLI against the real REST API server (internal/api) with in-memory
// subsystems behind it, so the CLI and the API agree on routes, JSON shapes and errors.

type memQuarantines struct {
	mu sync.Mutex
	q  map[string]api.QuarantineStatus
}

func (m *memQuarantines) Quarantine(_ context.Context, ns, name, reason string) (api.QuarantineStatus, error) {
	if ns != "shop" {
		return api.QuarantineStatus{}, api.NotFound(fmt.Errorf("workload %s/%s is not registered", ns, name))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := api.QuarantineStatus{Workload: ns + "/" + name, Since: time.Now(), Reason: reason}
	m.q[st.Workload] = st
	return st, nil
}

func (m *memQuarantines) Release(_ context.Context, ns, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.q, ns+"/"+name)
	return nil
}

func (m *memQuarantines) Quarantined() []api.QuarantineStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []api.QuarantineStatus
	for _, s := range m.q {
		out = append(out, s)
	}
	return out
}

type memCaptures struct{ pcap []byte }

func (m *memCaptures) info() capture.Info {
	return capture.Info{ID: testCaptureID, Created: time.Now(), Workload: "shop/web-0", Connections: 1, Bytes: int64(len(m.pcap))}
}
func (m *memCaptures) List() ([]capture.Info, error) { return []capture.Info{m.info()}, nil }
func (m *memCaptures) Get(id string) (capture.Info, error) {
	if id != testCaptureID {
		return capture.Info{}, api.NotFound(errors.New("no capture " + id))
	}
	return m.info(), nil
}
func (m *memCaptures) Open(string) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(m.pcap)), nil
}
func (m *memCaptures) Request(_ context.Context, ns, name string, d time.Duration) (capture.Info, error) {
	if d != 3*time.Second {
		return capture.Info{}, api.Invalid(fmt.Errorf("test expected 3s, got %v", d))
	}
	return m.info(), nil
}

type memSensors struct {
	mu      sync.Mutex
	sensors map[string]*policy.Sensors
}

func (m *memSensors) SetSensors(_ context.Context, _, group string, edit func(*policy.Sensors)) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sensors[group]
	if s == nil {
		s = &policy.Sensors{}
		m.sensors[group] = s
	}
	edit(s)
	return 42, nil
}

type noIdentity struct{}

func (noIdentity) CreateToken(context.Context, string, time.Duration) (string, time.Time, error) {
	return "", time.Time{}, errors.New("unused")
}
func (noIdentity) Rotate(context.Context, bool) error   { return errors.New("unused") }
func (noIdentity) Revoke(context.Context, string) error { return errors.New("unused") }
func (noIdentity) List(events.Filter) []events.Event    { return nil }

// realAPI serves the real api.Server over HTTPS and returns an admin.conf for it.
func realAPI(t *testing.T, q api.Quarantines, c api.Captures, s api.SensorAdmin) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0") // required by Config; httptest serves instead
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	const token = "real-api-admin-token"
	srv, err := api.New(api.Config{
		Listener:       ln,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, errors.New("unused") },
		AdminToken:     token,
		Identity:       noIdentity{},
		Events:         noIdentity{},
		Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		Quarantines:    q,
		Captures:       c,
		Sensors:        s,
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv)
	t.Cleanup(ts.Close)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "admin.conf")
	if err := api.WriteAdminConfig(conf, api.AdminConfig{Server: ts.URL, CAFile: caFile, Token: token}); err != nil {
		t.Fatal(err)
	}
	return conf
}

func TestThreatVerbsAgainstRealAPI(t *testing.T) {
	q := &memQuarantines{q: map[string]api.QuarantineStatus{}}
	caps := &memCaptures{pcap: fakePCAP}
	sens := &memSensors{sensors: map[string]*policy.Sensors{}}
	conf := realAPI(t, q, caps, sens)
	run := func(args ...string) (int, string, string) {
		return runCLI(append([]string{"--config", conf}, args...)...)
	}

	if code, out, errs := run("quarantine", "shop/web-0", "--reason", "dns tunnel"); code != 0 || out != "quarantined shop/web-0\n" {
		t.Fatalf("quarantine: %d %q %q", code, out, errs)
	}
	if st := q.Quarantined(); len(st) != 1 || !strings.HasPrefix(st[0].Reason, "dns tunnel") {
		t.Fatalf("the API did not receive the reason: %+v", st)
	}
	if code, out, _ := run("quarantine", "list"); code != 0 || !strings.Contains(out, "shop/web-0") || !strings.Contains(out, "dns tunnel") {
		t.Errorf("list: %d %q", code, out)
	}
	if code, _, errs := run("quarantine", "other/x"); code == 0 || !strings.Contains(errs, "workload other/x is not registered") {
		t.Errorf("not found must surface: %d %q", code, errs)
	}
	if code, out, _ := run("quarantine", "shop/web-0", "--release"); code != 0 || out != "released shop/web-0\n" || len(q.Quarantined()) != 0 {
		t.Errorf("release: %d %q, left %+v", code, out, q.Quarantined())
	}

	out := filepath.Join(t.TempDir(), "c.pcap")
	if code, stdout, errs := run("capture", "shop/web-0", "--duration", "3s", "-o", out); code != 0 || !strings.HasPrefix(stdout, "wrote "+out) {
		t.Fatalf("capture: %d %q %q", code, stdout, errs)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, fakePCAP) {
		t.Error("captured file differs from the stored pcap")
	}
	assertMode0600(t, out)
	if code, stdout, _ := run("capture", "get", testCaptureID, "-o", "-"); code != 0 || stdout != string(fakePCAP) {
		t.Errorf("capture get -o -: %d, %d bytes", code, len(stdout))
	}
	if code, _, errs := run("capture", "get", "20261125T044107Z-ffffffffffff", "-o", "-"); code == 0 || !strings.Contains(errs, "no capture") {
		t.Errorf("unknown capture: %d %q", code, errs)
	}

	if code, _, errs := run("sensor", "enable", "shop/web", "waf", "--paranoia-level", "2", "--action", "block"); code != 0 {
		t.Fatalf("sensor enable waf: %d %q", code, errs)
	}
	if code, _, errs := run("sensor", "enable", "shop/web", "dlp", "--patterns", "credit-card,aws-access-key", "--custom", "emp=EMP-[0-9]{6}"); code != 0 {
		t.Fatalf("sensor enable dlp: %d %q", code, errs)
	}
	got := sens.sensors["shop/web"]
	if got == nil || got.WAF == nil || got.WAF.ParanoiaLevel != 2 || got.WAF.Action != policy.SensorBlock || got.WAF.AnomalyThreshold != 0 {
		t.Fatalf("waf sensor as the API decoded it: %+v", got)
	}
	if got.DLP == nil || strings.Join(got.DLP.Patterns, ",") != "credit-card,aws-access-key" || len(got.DLP.Custom) != 1 || got.DLP.Custom[0].Regex != "EMP-[0-9]{6}" {
		t.Fatalf("dlp sensor as the API decoded it: %+v", got.DLP)
	}
	if code, out, _ := run("sensor", "disable", "shop/web", "waf"); code != 0 || !strings.Contains(out, "policy version 42") || got.WAF != nil {
		t.Errorf("sensor disable: %d %q, waf %+v", code, out, got.WAF)
	}
}
