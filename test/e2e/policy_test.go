package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/lab"
	"github.com/meshguard/meshguard/internal/policy"
)

const e2ePolicy = `apiVersion: meshguard.io/v1alpha1
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
  l7: {redis: {denyCommands: [FLUSHALL, CONFIG]}}
  action: allow
`

// fakeLabState writes a lab state file (what `lab up` maintains) so the controller's lab
// feeder registers workloads without network namespaces or root.
func fakeLabState(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lab")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	pod := func(name, app, ip string) lab.PodState {
		return lab.PodState{Pod: lab.Pod{Name: name, Namespace: "shop", ServiceAccount: app, Labels: map[string]string{"app": app}}, IP: ip, State: "running"}
	}
	st := lab.State{Version: 1, StateDir: dir, Phase: "ready",
		Pods: []lab.PodState{pod("web-0", "web", "10.244.0.10"), pod("cache-0", "cache", "10.244.0.11"), pod("client", "client", "10.244.0.12")},
		Services: []lab.ServiceState{{Service: lab.Service{Name: "cache", Namespace: "shop", Selector: map[string]string{"app": "cache"},
			Ports: []lab.ServicePort{{Port: 6379, TargetPort: 6379}}}, VIP: "10.96.0.20"}}}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lab.StatePath(dir), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// eventually runs a CLI verb until its stdout contains want (bounded).
func (c *Controller) eventually(t *testing.T, want string, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := c.CLI(t, args...)
		if r.Code == 0 && strings.Contains(r.Stdout, want) {
			return r.Stdout
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshguard %s: no %q after 20s (exit %d)\nstdout: %s\nstderr: %s", strings.Join(args, " "), want, r.Code, r.Stdout, r.Stderr)
		}
		<-time.After(200 * time.Millisecond)
	}
}

func mustCLI(t *testing.T, c *Controller, args ...string) string {
	t.Helper()
	r := c.CLI(t, args...)
	if r.Code != 0 {
		t.Fatalf("meshguard %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

func TestPolicyLifecycle(t *testing.T) {
	labDir := fakeLabState(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	c := StartController(t, dataDir, "--lab-state", labDir)
	tmp := t.TempDir()
	policyFile := filepath.Join(tmp, "shop.yaml")
	if err := os.WriteFile(policyFile, []byte(e2ePolicy), 0o600); err != nil {
		t.Fatal(err)
	}

	// Workloads come from the lab state; each gets its automatic group in the policy.
	out := c.eventually(t, "shop/client", "get", "workloads", "-n", "shop")
	if !strings.Contains(out, "10.244.0.10") || !strings.Contains(out, "SERVICE-ACCOUNT") {
		t.Fatalf("get workloads:\n%s", out)
	}
	c.eventually(t, "client", "get", "groups")

	out = mustCLI(t, c, "apply", "-f", policyFile)
	if !strings.Contains(out, "NetworkRule shop/web-to-cache applied") || !strings.Contains(out, "policy version") {
		t.Fatalf("apply:\n%s", out)
	}
	var groups []api.GroupView
	if err := json.Unmarshal([]byte(mustCLI(t, c, "get", "groups", "-n", "shop", "-o", "json")), &groups); err != nil {
		t.Fatal(err)
	}
	modes := map[string]string{}
	for _, g := range groups {
		modes[g.Metadata.Name] = string(g.Spec.Mode)
	}
	if modes["web"] != "discover" || modes["cache"] != "protect" || modes["client"] != "discover" {
		t.Fatalf("groups: %v", modes)
	}
	if out := mustCLI(t, c, "get", "rules", "-o", "yaml"); !strings.Contains(out, "FLUSHALL") {
		t.Fatalf("get rules -o yaml:\n%s", out)
	}
	if out := mustCLI(t, c, "get", "services"); !strings.Contains(out, "10.96.0.20") || !strings.Contains(out, "shop/cache-0") {
		t.Fatalf("get services:\n%s", out)
	}

	// Explain: the rule allows web, protect mode refuses the client.
	out = mustCLI(t, c, "explain", "--from", "shop/web-0", "--to", "shop/cache-0:6379", "--app", "redis")
	if !strings.HasPrefix(out, "ALLOW") || !strings.Contains(out, "shop/web-to-cache") {
		t.Fatalf("explain web:\n%s", out)
	}
	out = mustCLI(t, c, "explain", "--from", "shop/client", "--to", "shop/cache:6379", "--app", "redis") // the service
	if !strings.HasPrefix(out, "DENY") || !strings.Contains(out, "protect") {
		t.Fatalf("explain client:\n%s", out)
	}

	// Mode set changes the decision.
	if out := mustCLI(t, c, "mode", "set", "shop/cache", "monitor"); !strings.Contains(out, "monitor") {
		t.Fatalf("mode set:\n%s", out)
	}
	out = mustCLI(t, c, "explain", "--from", "shop/client", "--to", "shop/cache-0:6379", "--app", "redis", "-o", "json")
	var ex api.ExplainResponse
	if err := json.Unmarshal([]byte(out), &ex); err != nil || ex.Decision.Verdict.String() != "allow" || !ex.Decision.Violation {
		t.Fatalf("explain in monitor mode: %v\n%s", err, out)
	}
	if r := c.CLI(t, "mode", "set", "shop/cache", "sleepy"); r.Code == 0 || !strings.Contains(r.Stderr, "discover, monitor or protect") {
		t.Fatalf("bad mode accepted: %+v", r)
	}

	// Export, delete, re-apply the export: the identical policy.
	export := mustCLI(t, c, "policy", "export")
	exportFile := filepath.Join(tmp, "export.yaml")
	if err := os.WriteFile(exportFile, []byte(export), 0o600); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, c, "delete", "rule", "shop/web-to-cache")
	if strings.Contains(mustCLI(t, c, "policy", "export"), "web-to-cache") {
		t.Fatal("deleted rule still exported")
	}
	if r := c.CLI(t, "delete", "group", "shop/nothing"); r.Code == 0 || !strings.Contains(r.Stderr, "no Group") {
		t.Fatalf("delete missing: %+v", r)
	}
	mustCLI(t, c, "apply", "-f", exportFile)
	if again := mustCLI(t, c, "policy", "export"); again != export {
		t.Fatalf("export after re-applying the export differs:\n%s\nwant\n%s", again, export)
	}

	// Bad YAML is refused with file:line and field, nothing applied.
	bad := filepath.Join(tmp, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: meshguard.io/v1alpha1\nkind: Group\nmetadata: {name: x, namespace: shop}\nspec:\n  mode: protect\n  selectr: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := c.CLI(t, "apply", "-f", bad)
	if r.Code == 0 || !strings.Contains(r.Stderr, bad+":6") || !strings.Contains(r.Stderr, "spec.selectr") || !strings.Contains(r.Stderr, "selector") {
		t.Fatalf("bad yaml: exit %d\nstderr: %s", r.Code, r.Stderr)
	}
	unknown := filepath.Join(tmp, "unknown.yaml")
	if err := os.WriteFile(unknown, []byte("apiVersion: meshguard.io/v1alpha1\nkind: NetworkRule\nmetadata: {name: r, namespace: shop}\nspec:\n  from: {group: web}\n  to: {group: nosuch}\n  ports: [any]\n  applications: [any]\n  action: allow\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := c.CLI(t, "apply", "-f", unknown); r.Code == 0 || !strings.Contains(r.Stderr, unknown+":") || !strings.Contains(r.Stderr, "spec.to.group") {
		t.Fatalf("unknown group: exit %d\nstderr: %s", r.Code, r.Stderr)
	}
	if got := mustCLI(t, c, "policy", "export"); got != export {
		t.Fatal("a refused apply changed the policy")
	}

	// Every change is audited with who and what.
	out = mustCLI(t, c, "get", "events", "--kind", "audit", "--since", "10m", "-o", "json")
	for _, want := range []string{"policy.apply", "policy.mode", "policy.delete", "refuse", "admin"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit events lack %q:\n%s", want, out)
		}
	}

	// policy test: nothing recorded yet, nothing changes, nothing is applied.
	if out := mustCLI(t, c, "policy", "test", "-f", policyFile); !strings.Contains(out, "0 of 0 recorded flows") {
		t.Fatalf("policy test:\n%s", out)
	}
	if out := mustCLI(t, c, "graph"); !strings.Contains(out, "no connections reported yet") {
		t.Fatalf("graph:\n%s", out)
	}
	if out := mustCLI(t, c, "graph", "-o", "dot"); !strings.HasPrefix(out, "digraph meshguard {") {
		t.Fatalf("graph -o dot:\n%s", out)
	}
	if out := mustCLI(t, c, "get", "sidecars"); !strings.Contains(out, "config version") {
		t.Fatalf("get sidecars:\n%s", out)
	}
	if r := c.CLI(t, "get", "pods"); r.Code == 0 || !strings.Contains(r.Stderr, "want one of groups") {
		t.Fatalf("get pods: %+v", r)
	}

	// --follow prints history, then changes as they happen.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	follow := exec.CommandContext(ctx, bin, "--config", c.ConfigPath(), "get", "events", "--kind", "audit", "--follow", "-o", "json")
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = follow.Wait() }()
	lines := bufio.NewScanner(stdout)
	mustCLI(t, c, "mode", "set", "shop/web", "protect")
	for found := false; !found; {
		if !lines.Scan() {
			t.Fatalf("follow ended without the mode change: %v", lines.Err())
		}
		found = strings.Contains(lines.Text(), "mode set shop/web protect")
	}
	mustCLI(t, c, "mode", "set", "shop/web", "discover")
	for found := false; !found; {
		if !lines.Scan() {
			t.Fatalf("follow ended without the second mode change: %v", lines.Err())
		}
		found = strings.Contains(lines.Text(), "mode set shop/web discover")
	}
	export = mustCLI(t, c, "policy", "export")
	if err := os.WriteFile(exportFile, []byte(export), 0o600); err != nil {
		t.Fatal(err)
	}

	// The policy survives a restart, and a fresh controller given the export has the same.
	c.Stop(t)
	c2 := StartController(t, dataDir, "--lab-state", labDir)
	if got := mustCLI(t, c2, "policy", "export"); got != export {
		t.Fatalf("export after restart differs:\n%s", got)
	}
	c3 := StartController(t, "")
	mustCLI(t, c3, "apply", "-f", exportFile)
	if got := mustCLI(t, c3, "policy", "export"); got != export {
		t.Fatalf("export applied to a fresh controller differs:\n%s", got)
	}
}

// labEventuallyCLI runs a verb against the lab's controller (~/.meshguard/config, written by
// lab up) until its stdout contains every want (bounded).
func labEventuallyCLI(t *testing.T, want []string, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := Run(t, args...)
		ok := r.Code == 0
		for _, w := range want {
			ok = ok && strings.Contains(r.Stdout, w)
		}
		if ok {
			return r.Stdout
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshguard %s: want %q after 30s (exit %d)\nstdout: %s\nstderr: %s", strings.Join(args, " "), want, r.Code, r.Stdout, r.Stderr)
		}
		<-time.After(250 * time.Millisecond)
	}
}

// TestLabControllerRegistersWorkloads: the controller `lab up` starts reads the lab's state,
// so its pods are workloads with SPIFFE IDs and automatic groups, and its services have VIPs.
func TestLabControllerRegistersWorkloads(t *testing.T) {
	labRequire(t, "python3", "redis-server")
	labUp(t, labTopology)
	st := labState(t)
	var want []string
	for _, p := range st.Pods {
		want = append(want, p.IP)
	}
	labEventuallyCLI(t, want, "get", "workloads", "-n", "shop")
	out := labEventuallyCLI(t, []string{`"spiffeId": "spiffe://cluster.local/ns/shop/sa/web"`}, "get", "workloads", "-o", "json")
	if !strings.Contains(out, `"shop/web"`) || !strings.Contains(out, `"shop/redis"`) {
		t.Fatalf("workload groups:\n%s", out)
	}
	var groups []api.GroupView
	gout := labEventuallyCLI(t, []string{`"redis"`, `"web"`, `"default"`}, "get", "groups", "-n", "shop", "-o", "json")
	if err := json.Unmarshal([]byte(gout), &groups); err != nil {
		t.Fatal(err)
	}
	members := map[string]int{}
	for _, g := range groups {
		members[g.Metadata.Name] = len(g.Members)
		if g.Spec.Mode != "discover" || g.Metadata.Labels["meshguard.io/auto"] == "" {
			t.Errorf("automatic group %s: mode %q labels %v", g.Metadata.Name, g.Spec.Mode, g.Metadata.Labels)
		}
	}
	if members["web"] != 2 || members["redis"] != 1 || members["default"] != 1 {
		t.Fatalf("group members: %v\n%s", members, gout)
	}
	labEventuallyCLI(t, []string{"shop/web-0,shop/web-1", "10.96.0."}, "get", "services", "-n", "shop")
	// explain works on lab workloads: everything is in discover mode, so allowed and learnable.
	out = MustRun(t, "explain", "--from", "shop/client", "--to", "shop/redis:6379", "--app", "redis", "-o", "json").Stdout
	if !strings.Contains(out, `"verdict": "allow"`) || !strings.Contains(out, `"learn": true`) {
		t.Fatalf("explain:\n%s", out)
	}
}

// learnTopology: a client talking to a web server and a redis, all meshed.
const learnTopology = `pods:
  - name: client
    namespace: shop
    serviceAccount: client
    labels: {app: client}
    command: ["sleep", "infinity"]
  - name: web
    namespace: shop
    serviceAccount: web
    labels: {app: web}
    command: ["NGINX", "8080"]
    user: www-data
  - name: redis
    namespace: shop
    serviceAccount: redis
    labels: {app: redis}
    command: ["redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
    user: redis
services:
  - name: web
    namespace: shop
    selector: {app: web}
    ports: [{port: 80, targetPort: 8080}]
  - name: redis
    namespace: shop
    selector: {app: redis}
    ports: [{port: 6379}]
`

// TestLabDiscoverLearnsFlows: in discover mode (the default of automatic groups) the
// controller learns exactly the flows real clients make, with their applications, from the
// sidecars' connection reports; they show in get rules, get connections and the graph.
func TestLabDiscoverLearnsFlows(t *testing.T) {
	labRequire(t, "redis-server", "redis-cli", "curl", "nginx")
	ex, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	labUp(t, strings.ReplaceAll(learnTopology, `"NGINX"`, strconv.Quote(filepath.Join(ex, "nginx-pod.sh"))))
	t.Cleanup(func() { // before lab down
		if t.Failed() {
			t.Logf("connections:\n%s", Run(t, "get", "connections", "--include-system", "-o", "json").Stdout)
			t.Logf("events:\n%s", Run(t, "get", "events", "--limit", "30").Stdout)
			t.Logf("sidecars:\n%s", Run(t, "get", "sidecars").Stdout)
			if b, err := os.ReadFile(filepath.Join(labState(t).StateDir, "controller.log")); err == nil {
				t.Logf("controller log:\n%s", tail(string(b), 4000))
			}
		}
	})

	labEventually(t, "client", "hello from web", "curl", "-sS", "-m", "5", "http://web.shop.svc.cluster.local/")
	labEventually(t, "client", "PONG", "redis-cli", "-h", "redis.shop.svc.cluster.local", "ping")

	out := labEventuallyCLI(t, []string{"learned-client-web-http", "learned-client-redis-redis"}, "get", "rules", "-n", "shop")
	var rules []policy.NetworkRule
	if err := json.Unmarshal([]byte(MustRun(t, "get", "rules", "-n", "shop", "-o", "json").Stdout), &rules); err != nil {
		t.Fatal(err)
	}
	learned := map[string]string{}
	for _, r := range rules {
		if r.Spec.Learned {
			learned[r.Spec.From.Group+"->"+r.Spec.To.Group] = strings.Join(r.Spec.Applications, ",")
		}
	}
	if len(learned) != 2 || learned["client->web"] != "http" || learned["client->redis"] != "redis" {
		t.Fatalf("learned rules %v, want exactly client->web http and client->redis redis\n%s", learned, out)
	}
	conns := labEventuallyCLI(t, []string{"shop/client", "shop/web", "shop/redis"}, "get", "connections", "-n", "shop")
	graph := MustRun(t, "graph").Stdout
	if !strings.Contains(graph, "shop/client -> shop/web") || !strings.Contains(graph, "http") || !strings.Contains(graph, "redis") {
		t.Fatalf("graph:\n%s\nconnections:\n%s", graph, conns)
	}
	// The learned rules now decide: explain names them.
	if out := MustRun(t, "explain", "--from", "shop/client", "--to", "shop/redis:6379", "--app", "redis").Stdout; !strings.Contains(out, "learned-client-redis-redis") {
		t.Fatalf("explain:\n%s", out)
	}

	// Monitor: learning stops, a new flow (web -> redis) passes and is reported as a violation
	// that says no rule matched; the known flow is no violation.
	MustRun(t, "mode", "set", "shop/redis", "monitor")
	labEventually(t, "web", "PONG", "redis-cli", "-h", "redis.shop.svc.cluster.local", "ping")
	MustRun(t, "lab", "exec", "client", "--", "redis-cli", "-h", "redis", "ping")
	vio := labEventuallyCLI(t, []string{`"workload": "shop/web"`}, "get", "events", "--kind", "violation", "--since", "5m", "-o", "json")
	var evs []events.Event
	if err := json.Unmarshal([]byte(vio), &evs); err != nil {
		t.Fatal(err)
	}
	var webToRedis int
	for _, e := range evs {
		if e.Destination.Workload != "shop/redis" {
			continue
		}
		if e.Source.Workload == "shop/client" {
			t.Errorf("the learned flow client -> redis was reported as a violation: %+v", e)
		}
		if e.Source.Workload == "shop/web" {
			webToRedis++
			if !strings.Contains(e.Reason, "no rule matched") || !strings.Contains(e.Reason, "monitor") || e.Action != "allow" {
				t.Errorf("violation: %+v", e)
			}
		}
	}
	if webToRedis == 0 {
		t.Fatalf("no violation for web -> redis:\n%s", vio)
	}
	if strings.Contains(MustRun(t, "get", "rules", "-n", "shop").Stdout, "learned-web-redis") {
		t.Fatal("a group in monitor mode kept learning")
	}
}
