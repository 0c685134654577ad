package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/lab"
	"github.com/meshguard/meshguard/internal/xds"
)

// fakeQuarantiner records quarantines instead of touching nftables.
type fakeQuarantiner struct {
	mu    sync.Mutex
	calls []string
	done  chan string
}

func (f *fakeQuarantiner) Quarantine(_ context.Context, ns, pod string) error {
	f.mu.Lock()
	f.calls = append(f.calls, ns+"/"+pod)
	f.mu.Unlock()
	f.done <- ns + "/" + pod
	return nil
}
func (f *fakeQuarantiner) Release(context.Context, string, string) error { return nil }
func (f *fakeQuarantiner) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// TestReportedThreatQuarantinesAndSensorsReachSidecar drives the controller as a sidecar
// would: a reported dns-tunnel threat matching a ResponseRule [quarantine] quarantines the
// source workload once and lands in the event store with the action and the sidecar's capture
// reference; a sensor enabled over REST reaches the sidecar in its next snapshot.
func TestReportedThreatQuarantinesAndSensorsReachSidecar(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	labDir := t.TempDir()
	st := lab.State{Version: 1, StateDir: labDir, Pods: []lab.PodState{
		{Pod: lab.Pod{Name: "web-0", Namespace: "shop", ServiceAccount: "web", Labels: map[string]string{"app": "web"}, Sidecar: true}, IP: "10.244.0.2"},
		{Pod: lab.Pod{Name: "cache-0", Namespace: "shop", ServiceAccount: "cache", Labels: map[string]string{"app": "cache"}, Sidecar: true}, IP: "10.244.0.3"},
	}}
	b, _ := json.Marshal(st)
	if err := os.WriteFile(lab.StatePath(labDir), b, 0o600); err != nil {
		t.Fatal(err)
	}
	w := &readyWriter{ready: make(chan struct{})}
	cfg := testConfig(dir, w)
	cfg.LabStateDir = labDir
	fq := &fakeQuarantiner{done: make(chan string, 4)}
	cfg.Quarantiner = fq
	// A webhook receiver that checks the HMAC signature.
	secret := []byte("hook-secret-0123456789")
	hooks := make(chan events.Event, 8)
	hook := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !events.VerifySignature(secret, body, r.Header.Get(events.HeaderSignature)) {
			t.Errorf("webhook signature %q does not verify", r.Header.Get(events.HeaderSignature))
		}
		var ev events.Event
		_ = json.Unmarshal(body, &ev)
		hooks <- ev
	}))
	defer hook.Close()
	cfg.WebhookURL, cfg.WebhookSecretFile = hook.URL, filepath.Join(t.TempDir(), "hook.key")
	if err := os.WriteFile(cfg.WebhookSecretFile, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case <-w.ready:
	case err := <-done:
		t.Fatalf("controller stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("controller not ready")
	}
	adm, err := api.LoadAdminConfig(c.AdminConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(mustRead(t, adm.CAFile))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	call := func(method, path, body string) (int, string) {
		t.Helper()
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

	// The sidecar of shop/web-0, with an SVID from the controller's CA.
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ca, err := identity.LoadCA(identity.CAConfig{Dir: filepath.Join(dir, "ca"), TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), Clock: clockwork.NewRealClock(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web")
	svid, err := ca.SignSVID(key.Public(), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(adm.XDS, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{{Certificate: svid.Chain, PrivateKey: key}}})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	snaps := make(chan *xdsv1.Snapshot, 16)
	cl, err := xds.NewClient(xds.ClientConfig{Conn: cc, Clock: clockwork.NewRealClock(), Log: log,
		SpiffeID: id.String(), Namespace: "shop", Workload: "web-0",
		Applier: xds.ApplierFunc(func(_ uint64, s *xdsv1.Snapshot) error { snaps <- s; return nil })})
	if err != nil {
		t.Fatal(err)
	}
	go cl.Run(ctx)
	next := func(want string) {
		t.Helper()
		timeout := time.After(15 * time.Second)
		for {
			select {
			case s := <-snaps:
				if strings.Contains(string(s.GetPolicy()), want) {
					return
				}
			case <-timeout:
				t.Fatalf("no snapshot with %q in its policy", want)
			}
		}
	}
	next(`"name":"web"`) // automatic groups are in

	rule := `{"files":[{"name":"r.yaml","content":"apiVersion: meshguard.io/v1alpha1\nkind: ResponseRule\nmetadata: {name: tunnel}\nspec:\n  match: {kind: threat, name: dns-tunnel}\n  actions: [quarantine, capture, webhook]\n"}]}`
	if code, body := call("POST", "/api/v1/policy/apply", rule); code != 200 {
		t.Fatalf("apply: %d %s", code, body)
	}
	next("dns-tunnel") // the controller's engine follows the same policy change

	const capRef = "20260101T000000Z-0123456789ab"
	threat := &xdsv1.ThreatEvent{Name: "dns-tunnel", Category: "exfiltration", Severity: "high", Action: "alert",
		Reason: "high-entropy labels under evil.example", Evidence: []byte("aGVsbG8.evil.example"), CaptureRef: capRef,
		SourceWorkload: "shop/web-0", SourceSpiffeId: id.String(), SourceAddr: "10.244.0.2:40000",
		DestinationAddr: "10.9.9.9:53", Protocol: "dns", L7: "TXT aGVsbG8.evil.example", Mode: "monitor",
		TimeUnixNano: time.Now().UnixNano(), Rules: []string{"tunnel"}}
	// A report aimed at a workload the reporter is not part of is refused.
	forged := &xdsv1.ThreatEvent{Name: "dns-tunnel", Severity: "high", SourceWorkload: "shop/cache-0", DestinationAddr: "10.9.9.9:53"}
	if err := cl.ReportThreats(ctx, []*xdsv1.ThreatEvent{forged, threat}, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-fq.done:
		if got != "shop/web-0" {
			t.Fatalf("quarantined %s, want shop/web-0", got)
		}
	case <-time.After(15 * time.Second):
		w.mu.Lock()
		t.Log(w.buf.String())
		w.mu.Unlock()
		t.Fatal("the reported threat did not quarantine its source")
	}
	var ev events.Event
	for deadline := time.Now().Add(15 * time.Second); ; {
		_, body := call("GET", "/api/v1/events?kind=threat", "")
		var resp api.EventsResponse
		_ = json.Unmarshal([]byte(body), &resp)
		if len(resp.Events) > 0 {
			ev = resp.Events[len(resp.Events)-1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no threat event: %s", body)
		}
		<-time.After(100 * time.Millisecond)
	}
	if ev.Name != "dns-tunnel" || ev.CaptureRef != capRef || !strings.Contains(ev.Action, "quarantine") || !strings.Contains(ev.Action, "capture") ||
		ev.Source.Workload != "shop/web-0" || string(ev.Evidence) != "aGVsbG8.evil.example" || ev.Severity != events.SeverityHigh {
		t.Fatalf("threat event %+v", ev)
	}
	select {
	case h := <-hooks:
		if h.Name != "dns-tunnel" || h.CaptureRef != capRef {
			t.Fatalf("webhook got %+v", h)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no webhook delivery for the threat")
	}
	// A second report: no second quarantine.
	if err := cl.ReportThreats(ctx, []*xdsv1.ThreatEvent{threat}, 0); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); ; {
		_, body := call("GET", "/api/v1/events?kind=threat", "")
		if strings.Count(body, `"name":"dns-tunnel"`) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second threat event missing: %s", body)
		}
		<-time.After(100 * time.Millisecond)
	}
	if n := fq.count(); n != 1 {
		t.Fatalf("quarantiner called %d times, want once", n)
	}
	if code, body := call("GET", "/api/v1/quarantines", ""); code != 200 || !strings.Contains(body, `"workload":"shop/web-0"`) || !strings.Contains(body, "dns-tunnel") {
		t.Fatalf("quarantines: %d %s", code, body)
	}

	// A sensor enabled over REST reaches the sidecar.
	if code, body := call("PUT", "/api/v1/groups/shop/web/sensors/waf", `{"paranoiaLevel":2,"action":"block"}`); code != 200 {
		t.Fatalf("sensor put: %d %s", code, body)
	}
	next(`"paranoiaLevel":2`)
	// On-demand capture of a workload whose sidecar has no command stream open: 409.
	if code, body := call("POST", "/api/v1/workloads/shop/cache-0/captures", `{"duration":"1s"}`); code != 409 {
		t.Fatalf("capture without a sidecar stream: %d %s", code, body)
	}
	if code, body := call("POST", "/api/v1/workloads/shop/ghost/captures", `{"duration":"1s"}`); code != 404 {
		t.Fatalf("capture of an unknown workload: %d %s", code, body)
	}
	// web-0's sidecar answers capture commands with an upload naming the request.
	const onDemand = "20260101T000001Z-00000000abcd"
	pcap := []byte("\xd4\xc3\xb2\xa1 pcap bytes")
	go cl.RunCommands(ctx, func(ctx context.Context, cmd *xdsv1.Command) {
		if cmd.GetCapture().GetDurationMillis() != 1000 {
			t.Errorf("capture command %v, want 1000ms", cmd)
		}
		go func() {
			_ = cl.UploadCapture(ctx, &xdsv1.UploadCaptureRequest{CaptureId: onDemand, RequestId: cmd.GetId(), Reason: "on-demand",
				Connections: 2, Pcap: pcap, Workload: "cache-0"}) // the claimed workload is overwritten
		}()
	})
	var code int
	var body string
	for deadline := time.Now().Add(15 * time.Second); ; { // until the command stream is open
		if code, body = call("POST", "/api/v1/workloads/shop/web-0/captures", `{"duration":"1s"}`); code != 409 || time.Now().After(deadline) {
			break
		}
		<-time.After(100 * time.Millisecond)
	}
	if code != 201 || !strings.Contains(body, onDemand) || !strings.Contains(body, `"workload":"shop/web-0"`) {
		t.Fatalf("on-demand capture: %d %s", code, body)
	}
	if code, got := call("GET", "/api/v1/captures/"+onDemand+"/pcap", ""); code != 200 || got != string(pcap) {
		t.Fatalf("pcap download: %d %q", code, got)
	}
	if fi, err := os.Stat(filepath.Join(dir, "captures")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("capture dir: %v %v, want 0700", fi, err)
	}
}

// TestThreatInputBoundsSidecarInput: what a sidecar reports is bounded and normalised before
// it reaches events and the response engine.
func TestThreatInputBoundsSidecarInput(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	in := threatInput(&xdsv1.ThreatEvent{
		Name: strings.Repeat("n", 500), Severity: "apocalyptic", Action: "explode", Reason: "line1\nline2\x1b[31m",
		Evidence: make([]byte, 10000), Mode: "paranoid", SensorAction: "maybe", TimeUnixNano: now.Add(time.Hour).UnixNano(),
		SourceWorkload: "shop/web-0", ConnId: strings.Repeat("c", 1000), L7: strings.Repeat("é", 2000),
	}, now)
	ev := in.Event
	switch {
	case len(ev.Name) != maxNameLen, len(in.ConnID) != maxNameLen:
		t.Errorf("name %d / conn id %d bytes, want %d", len(ev.Name), len(in.ConnID), maxNameLen)
	case len(ev.Evidence) != events.MaxEvidence:
		t.Errorf("evidence %d bytes, want %d", len(ev.Evidence), events.MaxEvidence)
	case ev.Severity != events.SeverityMedium || ev.Action != "" || in.Mode != "" || in.SensorAction != "":
		t.Errorf("unknown values kept: severity %q action %q mode %q sensor %q", ev.Severity, ev.Action, in.Mode, in.SensorAction)
	case strings.ContainsAny(ev.Reason, "\n\x1b"):
		t.Errorf("control characters kept in reason %q", ev.Reason)
	case !ev.Time.Equal(now):
		t.Errorf("time %v from the future kept, want now", ev.Time)
	case len(ev.L7) > maxTextLen || !utf8.ValidString(ev.L7):
		t.Errorf("l7 %d bytes valid=%v", len(ev.L7), utf8.ValidString(ev.L7))
	case ev.Kind != events.KindThreat:
		t.Errorf("kind %q", ev.Kind)
	}
	ok := threatInput(&xdsv1.ThreatEvent{Name: "sqli", Severity: "critical", Action: "block", Mode: "protect", SensorAction: "block",
		TimeUnixNano: now.Add(-time.Second).UnixNano()}, now)
	if ok.Mode != "protect" || ok.SensorAction != "block" || ok.Event.Action != "block" || !ok.Event.Time.Equal(now.Add(-time.Second)) {
		t.Errorf("valid values not kept: %+v", ok)
	}
}
