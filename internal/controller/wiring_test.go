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
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/lab"
	"github.com/meshguard/meshguard/internal/xds"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// TestSidecarGetsConfigAndReportsConnections is the controller's data-plane wiring end to end:
// lab state -> registry -> xdsgen -> xds server (mTLS with an SVID) -> sidecar client, a policy
// apply reaching the sidecar as a new snapshot, a connection report reaching the REST API, and
// the metrics that describe it all.
func TestSidecarGetsConfigAndReportsConnections(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	labDir := t.TempDir()
	st := lab.State{Version: 1, StateDir: labDir, Pods: []lab.PodState{
		{Pod: lab.Pod{Name: "web-0", Namespace: "shop", ServiceAccount: "web", Labels: map[string]string{"app": "web"}, Sidecar: true}, IP: "10.244.0.2"},
		{Pod: lab.Pod{Name: "cache-0", Namespace: "shop", ServiceAccount: "cache", Labels: map[string]string{"app": "cache"}, Sidecar: true}, IP: "10.244.0.3"},
		{Pod: lab.Pod{Name: "old-0", Namespace: "legacy", ServiceAccount: "old", Labels: map[string]string{"app": "old"}}, IP: "10.244.0.4"},
	}, Services: []lab.ServiceState{{Service: lab.Service{Name: "old", Namespace: "legacy", Selector: map[string]string{"app": "old"},
		Ports: []lab.ServicePort{{Port: 80, TargetPort: 8080}}}, VIP: "10.96.0.9"}}}
	b, _ := json.Marshal(st)
	if err := os.WriteFile(lab.StatePath(labDir), b, 0o600); err != nil {
		t.Fatal(err)
	}
	w := &readyWriter{ready: make(chan struct{})}
	cfg := testConfig(dir, w)
	cfg.LabStateDir = labDir
	cfg.PermissiveNamespaces, cfg.Egress = []string{"legacy"}, EgressAllowAny
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
	if err != nil || adm.XDS == "" {
		t.Fatalf("admin config %+v: %v", adm, err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(mustRead(t, adm.CAFile))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	call := func(method, path, body string) (int, string) {
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

	// The sidecar of shop/web-0 with an SVID from the controller's CA.
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
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{{Certificate: svid.Chain, PrivateKey: key}}})
	cc, err := grpc.NewClient(adm.XDS, grpc.WithTransportCredentials(creds))
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
	next := func(want string) *xdsv1.Snapshot {
		t.Helper()
		timeout := time.After(15 * time.Second)
		for {
			select {
			case s := <-snaps:
				if strings.Contains(string(s.GetPolicy()), want) {
					return s
				}
			case <-timeout:
				t.Fatalf("no snapshot with %q in its policy", want)
			}
		}
	}
	// Automatic groups appear in the policy and reach the sidecar.
	s := next(`"name":"web"`)
	if s.GetSelf().GetName() != "web-0" || len(s.GetPeers()) != 3 {
		t.Fatalf("snapshot self %v peers %d", s.GetSelf(), len(s.GetPeers()))
	}
	// The mesh-wide modes from the flags, and which peers are reached through the tunnel.
	if s.GetNamespaceMtls()["legacy"] != xdsv1.MTLSMode_MTLS_MODE_PERMISSIVE || s.GetNamespaceMtls()["shop"] != xdsv1.MTLSMode_MTLS_MODE_UNSPECIFIED ||
		s.GetEgressMode() != xdsv1.EgressMode_EGRESS_MODE_ALLOW_ANY {
		t.Fatalf("snapshot modes: mtls %v egress %v", s.GetNamespaceMtls(), s.GetEgressMode())
	}
	for _, p := range s.GetPeers() {
		if meshed := p.GetName() != "old-0"; meshed != (p.GetTunnelPort() == DefaultTunnelPort) {
			t.Errorf("peer %s: tunnel port %d (a pod without a sidecar must have none, the others %d)", p.GetName(), p.GetTunnelPort(), DefaultTunnelPort)
		}
	}

	rule := `{"files":[{"name":"r.yaml","content":"apiVersion: meshguard.io/v1alpha1\nkind: NetworkRule\nmetadata: {name: web-to-cache, namespace: shop}\nspec:\n  from: {group: web}\n  to: {group: cache}\n  ports: [tcp/6379]\n  applications: [redis]\n  action: allow\n"}]}`
	if code, body := call("POST", "/api/v1/policy/apply", rule); code != 200 {
		t.Fatalf("apply: %d %s", code, body)
	}
	next("web-to-cache")

	if err := cl.ReportConnections(ctx, []*xdsv1.ConnectionReport{{Direction: "inbound", SourceSpiffeId: "spiffe://example.org/ns/shop/sa/cache",
		SourceAddr: "10.244.0.3:5000", DestinationSpiffeId: id.String(), DestinationAddr: "10.244.0.2:8080", DestinationPort: 8080,
		AppProtocol: "http", Verdict: "allow", L7: map[string]string{"method": "GET", "path": "/"}}}, 0); err != nil {
		t.Fatal(err)
	}
	code, body := call("GET", "/api/v1/connections", "")
	if code != 200 || !strings.Contains(body, `"source":"shop/cache-0"`) || !strings.Contains(body, `"destination":"shop/web-0"`) {
		t.Fatalf("connections: %d %s", code, body)
	}
	// web is in discover mode and no rule covers cache -> web: the learner writes one, and it
	// reaches the sidecar like any other rule.
	learned := next("learned-")
	if !strings.Contains(string(learned.GetPolicy()), `"learned":true`) || !strings.Contains(string(learned.GetPolicy()), `"http"`) {
		t.Fatalf("learned rule: %s", learned.GetPolicy())
	}
	if code, body := call("GET", "/api/v1/rules?namespace=shop", ""); code != 200 || !strings.Contains(body, "learned-cache-web-http") {
		t.Fatalf("rules: %d %s", code, body)
	}
	// Deleting a learned rule lets the learner learn the flow again.
	if code, body := call("DELETE", "/api/v1/policy/rule/shop/learned-cache-web-http", ""); code != 200 {
		t.Fatalf("delete learned: %d %s", code, body)
	}
	for deadline := time.Now().Add(15 * time.Second); ; {
		if err := cl.ReportConnections(ctx, []*xdsv1.ConnectionReport{{Direction: "inbound", SourceAddr: "10.244.0.3:5001",
			DestinationAddr: "10.244.0.2:8080", DestinationPort: 8080, AppProtocol: "http", Verdict: "allow"}}, 0); err != nil {
			t.Fatal(err)
		}
		_, body := call("GET", "/api/v1/rules?namespace=shop", "")
		if strings.Contains(body, "learned-cache-web-http") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deleted learned rule not learned again: %s", body)
		}
		<-time.After(500 * time.Millisecond)
	}
	// The sidecar's word wins: plaintext refused under STRICT is a deny without a verdict;
	// plaintext accepted (PERMISSIVE) is shown unauthenticated; a protocol on a port
	// registered to another is flagged and raises a threat event.
	if err := cl.ReportConnections(ctx, []*xdsv1.ConnectionReport{
		{Direction: "inbound", SourceAddr: "10.244.0.4:5002", DestinationAddr: "10.244.0.2:8080", DestinationPort: 8080, CloseReason: "strict-refuse"},
		{Direction: "inbound", SourceAddr: "10.244.0.4:5003", DestinationAddr: "10.244.0.2:9090", DestinationPort: 9090, AppProtocol: "http", CloseReason: "closed"},
		{Direction: "inbound", Authenticated: true, SourceSpiffeId: "spiffe://example.org/ns/shop/sa/cache", SourceAddr: "10.244.0.3:5004",
			DestinationSpiffeId: id.String(), DestinationAddr: "10.244.0.2:6379", DestinationPort: 6379, AppProtocol: "ssh",
			Verdict: "deny", RuleId: "shop/no-ssh", L7: map[string]string{"mismatch": "true"}},
		// An allowed stream on which the sidecar refused one Redis command.
		{Direction: "inbound", Authenticated: true, SourceSpiffeId: "spiffe://example.org/ns/shop/sa/cache", SourceAddr: "10.244.0.3:5006",
			DestinationSpiffeId: id.String(), DestinationAddr: "10.244.0.2:6380", DestinationPort: 6380, AppProtocol: "redis", Verdict: "allow",
			L7: map[string]string{"command": "FLUSHALL", "reason": "denied by rule shop/no-flush", "denied_requests": "1"}},
		// web-0's DNS proxy asking the pod's resolver: recorded, never a violation.
		{Direction: "outbound", SourceSpiffeId: id.String(), SourceAddr: "127.0.0.1:40000", DestinationAddr: "10.244.0.1:53",
			DestinationPort: 53, AppProtocol: "dns", CloseReason: "closed", L7: map[string]string{"resolver": "true", "qname": "web.shop.svc.cluster.local."}},
		// web-0's sidecar calling the unmeshed legacy pod through its service VIP, directly.
		{Direction: "outbound", SourceSpiffeId: id.String(), SourceAddr: "10.244.0.2", DestinationAddr: "10.96.0.9", DestinationPort: 80,
			AppProtocol: "http", CloseReason: "closed"},
	}, 0); err != nil {
		t.Fatal(err)
	}
	var conns []api.Connection
	_, body = call("GET", "/api/v1/connections", "")
	if err := json.Unmarshal([]byte(body), &conns); err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, x := range conns {
		if x.Source != "legacy/old-0" && x.Port != 6379 {
			continue
		}
		found++
		switch x.Port {
		case 8080:
			if x.Verdict != "deny" || x.Authenticated {
				t.Errorf("STRICT refusal shown as %+v, want an unauthenticated deny", x)
			}
		case 9090:
			if x.Verdict != "allow" || x.Authenticated {
				t.Errorf("PERMISSIVE plaintext shown as %+v, want an unauthenticated allow", x)
			}
		case 6379:
			if x.Verdict != "deny" || x.RuleID != "shop/no-ssh" || !x.Mismatch || !x.Authenticated {
				t.Errorf("sidecar deny with mismatch shown as %+v", x)
			}
		}
	}
	direct := false
	for _, x := range conns {
		direct = direct || (x.Source == "shop/web-0" && x.Destination == "legacy/old-0" && x.Port == 80 && !x.Authenticated)
	}
	if !direct {
		t.Errorf("a call through a one-endpoint VIP is not attributed to its workload: %s", body)
	}
	if found != 3 {
		t.Fatalf("want 3 reported flows, got %d: %s", found, body)
	}
	// Events reach the store through the pipeline, asynchronously.
	eventually := func(path string, want ...string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; {
			_, body := call("GET", path, "")
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(body, w)
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s lacks %q: %s", path, want, body)
			}
			<-time.After(100 * time.Millisecond)
		}
	}
	eventually("/api/v1/events?kind=violation", "namespace is STRICT", "1 request(s) refused on an allowed connection: denied by rule shop/no-flush")
	// The inbound sidecar reports a protocol mismatch as a threat itself; the controller must
	// not add a second event from the connection report.
	if _, body := call("GET", "/api/v1/events?kind=violation", ""); strings.Contains(body, "10.244.0.1:53") {
		t.Errorf("a DNS proxy exchange with the resolver was judged as a violation: %s", body)
	}
	if _, body := call("GET", "/api/v1/events?kind=threat", ""); strings.Contains(body, "protocol-mismatch") {
		t.Errorf("the controller duplicated the inbound sidecar's mismatch threat: %s", body)
	}
	if _, body := call("GET", "/api/v1/events?kind=connection", ""); strings.Contains(body, "denied_requests") || !strings.Contains(body, `"l7":"command=FLUSHALL"`) {
		t.Errorf("the sidecar's decision leaked into (or the command is missing from) the L7 summary: %s", body)
	}
	_, body = call("GET", "/api/v1/graph", "")
	if !strings.Contains(body, `"mismatch":true`) || !strings.Contains(body, `"unauthenticated":`) {
		t.Fatalf("graph lacks mismatch/unauthenticated: %s", body)
	}

	if code, body := call("GET", "/api/v1/sidecars", ""); code != 200 || !strings.Contains(body, `"workload":"web-0"`) {
		t.Fatalf("sidecars: %d %s", code, body)
	}
	code, body = call("GET", "/metrics", "")
	for _, want := range []string{"meshguard_policy_version ", "meshguard_xds_sidecars_connected 1", `meshguard_sidecar_config_version{sidecar="shop/web-0"}`, "meshguard_xds_push_latency_seconds_bucket"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("metrics lack %q (%d)", want, code)
		}
	}

	// Workloads are listed with their (automatic) groups.
	if code, body := call("GET", "/api/v1/workloads", ""); code != 200 || !strings.Contains(body, "shop/web") {
		t.Fatalf("workloads: %d %s", code, body)
	}
}
