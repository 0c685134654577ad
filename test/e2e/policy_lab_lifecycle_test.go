package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// lifecycleTopology: a meshed client and an intruder, a web server (nginx) and a redis.
const lifecycleTopology = `pods:
  - name: client
    namespace: shop
    serviceAccount: client
    labels: {app: client}
    command: ["sleep", "infinity"]
  - name: intruder
    namespace: shop
    serviceAccount: intruder
    labels: {app: intruder}
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

// lifecyclePolicy: web and cache are protected; clients may GET and POST on web but never POST
// under /admin (an explicit deny rule), and may use redis except CONFIG, FLUSHALL and DEL. Nothing
// allows the intruders anything.
const lifecyclePolicy = `apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: frontend, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, mode: protect}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: cache, namespace: shop}
spec: {selector: {matchLabels: {app: redis}}, mode: protect}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: clients, namespace: shop}
spec: {selector: {matchLabels: {app: client}}, mode: monitor}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: intruders, namespace: shop}
spec: {selector: {matchLabels: {app: intruder}}, mode: protect}
---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: client-reads-web, namespace: shop}
spec:
  from: {group: clients}
  to: {group: frontend}
  ports: ["tcp/8080"]
  applications: [http]
  l7: {http: {methods: [GET], paths: ["/"]}}
  action: allow
---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: client-posts-web, namespace: shop}
spec:
  from: {group: clients}
  to: {group: frontend}
  ports: ["tcp/8080"]
  applications: [http]
  l7: {http: {methods: [POST]}}
  action: allow
---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: no-admin-posts, namespace: shop}
spec:
  from: {group: clients}
  to: {group: frontend}
  ports: ["tcp/8080"]
  applications: [http]
  l7: {http: {methods: [POST], paths: ["/admin"]}}
  action: deny
---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: client-to-cache, namespace: shop}
spec:
  from: {group: clients}
  to: {group: cache}
  ports: ["tcp/6379"]
  applications: [redis]
  l7: {redis: {denyCommands: [CONFIG, FLUSHALL, DEL]}}
  action: allow
`

// lifecycleRequest is one request the test makes from a pod, and what its decision must look
// like the first time (every substring in want must appear in "exit N" + stdout + stderr).
type lifecycleRequest struct {
	name string
	pod  string
	argv []string
	want []string
}

func lifecycleRequests() []lifecycleRequest {
	const web, redis = "http://web.shop.svc.cluster.local", "redis.shop.svc.cluster.local"
	curl := func(method, path string) []string {
		return []string{"curl", "-sS", "-m", "5", "-X", method, "-w", "\n%{http_code}", web + path}
	}
	rcli := func(args ...string) []string { return append([]string{"redis-cli", "-h", redis}, args...) }
	return []lifecycleRequest{
		{"GET /", "client", curl("GET", "/"), []string{"exit 0", "hello from web", "\n200"}},
		{"GET /shop/items", "client", curl("GET", "/shop/items"), []string{"exit 0", "hello from web", "\n200"}},
		{"POST /orders", "client", curl("POST", "/orders"), []string{"exit 0", "hello from web", "\n200"}},
		{"POST /admin", "client", curl("POST", "/admin"), []string{"exit 0", "denied by meshguard", "shop/no-admin-posts", "\n403"}},
		{"POST /admin/users", "client", curl("POST", "/admin/users"), []string{"exit 0", "denied by meshguard", "shop/no-admin-posts", "\n403"}},
		{"DELETE /", "client", curl("DELETE", "/"), []string{"exit 0", "denied by meshguard", "no rule matched", "protect", "\n403"}},
		{"redis SET", "client", rcli("SET", "k", "v"), []string{"exit 0\nOK\n"}},
		{"redis GET", "client", rcli("GET", "k"), []string{"exit 0\nv\n"}},
		// DEL is refused by the policy alone; CONFIG and FLUSHALL are on the rule's deny list
		// too, but threat detection may refuse them first (either way, the same every time).
		{"redis DEL", "client", rcli("DEL", "k"), []string{"denied by meshguard", "rule shop/client-to-cache allows the connection but not this request"}},
		{"redis CONFIG", "client", rcli("CONFIG", "GET", "maxmemory"), []string{"denied by meshguard"}},
		{"redis FLUSHALL", "client", rcli("FLUSHALL"), []string{"denied by meshguard"}},
		{"redis GET after the refusals", "client", rcli("GET", "k"), []string{"exit 0\nv\n"}},
		{"intruder redis PING", "intruder", rcli("PING"), []string{"no rule matched", "shop/cache"}},
		{"intruder GET /", "intruder", curl("GET", "/"), []string{"no rule matched", "shop/frontend"}},
	}
}

// lifecycleTraffic makes every request once, in order, and returns each outcome ("exit N",
// stdout, stderr), failing the test where an outcome lacks what the policy says it must show.
func lifecycleTraffic(t *testing.T) []string {
	t.Helper()
	var got []string
	for _, rq := range lifecycleRequests() {
		r := Run(t, append([]string{"lab", "exec", rq.pod, "--"}, rq.argv...)...)
		out := "exit " + strconv.Itoa(r.Code) + "\n" + strings.TrimSpace(r.Stdout) + "\n" + strings.TrimSpace(r.Stderr)
		for _, w := range rq.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s from %s: outcome lacks %q:\n%s", rq.name, rq.pod, w, out)
			}
		}
		if rq.name == "intruder GET /" && strings.Contains(out, "hello from web") {
			t.Errorf("intruder reached web:\n%s", out)
		}
		t.Logf("%s from %s: %q", rq.name, rq.pod, out)
		got = append(got, out)
	}
	return got
}

// lifecycleReady waits (bounded) until the servers listen and the sidecars enforce the
// applied policy: an allowed request passes and a denied one is refused, on web and redis.
func lifecycleReady(t *testing.T) {
	t.Helper()
	for _, c := range []struct {
		pod, want string
		argv      []string
	}{
		{"client", "hello from web", []string{"curl", "-sS", "-m", "5", "http://web.shop.svc.cluster.local/"}},
		{"client", "shop/no-admin-posts", []string{"curl", "-sS", "-m", "5", "-X", "POST", "http://web.shop.svc.cluster.local/admin"}},
		{"client", "PONG", []string{"redis-cli", "-h", "redis.shop.svc.cluster.local", "PING"}},
		{"intruder", "no rule matched", []string{"redis-cli", "-h", "redis.shop.svc.cluster.local", "PING"}},
	} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := Run(t, append([]string{"lab", "exec", c.pod, "--"}, c.argv...)...)
			if strings.Contains(r.Stdout+r.Stderr, c.want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("lab exec %s -- %s: never showed %q; last exit %d\nstdout: %s\nstderr: %s",
					c.pod, strings.Join(c.argv, " "), c.want, r.Code, r.Stdout, r.Stderr)
			}
			time.Sleep(200 * time.Millisecond) // poll interval of a bounded readiness wait
		}
	}
}

// TestPolicyLabLifecycle: the policy exported from a lab, applied to a brand-new lab (after
// lab down left nothing behind), takes the same decision on every request of the same real
// traffic: HTTP allow/deny by method and path, Redis commands, and flows no rule allows.
func TestPolicyLabLifecycle(t *testing.T) {
	labRequire(t, "redis-server", "redis-cli", "curl", "nginx")
	ex, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	topo := labUp(t, strings.ReplaceAll(lifecycleTopology, `"NGINX"`, strconv.Quote(filepath.Join(ex, "nginx-pod.sh"))))
	t.Cleanup(func() { // before lab down
		if t.Failed() {
			t.Logf("events:\n%s", Run(t, "get", "events", "--limit", "40").Stdout)
			t.Logf("sidecars:\n%s", Run(t, "get", "sidecars").Stdout)
		}
	})
	tmp := t.TempDir()
	policyFile := filepath.Join(tmp, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(lifecyclePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	MustRun(t, "apply", "-f", policyFile)
	lifecycleReady(t)
	first := lifecycleTraffic(t)
	if t.Failed() {
		t.FailNow() // the first lab must decide as the policy says before comparing labs
	}

	export := MustRun(t, "policy", "export").Stdout
	exportFile := filepath.Join(tmp, "export.yaml")
	if err := os.WriteFile(exportFile, []byte(export), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"name: no-admin-posts", "name: client-to-cache", "name: intruders"} {
		if !strings.Contains(export, name) {
			t.Fatalf("export lacks %s:\n%s", name, export)
		}
	}

	st := labState(t)
	MustRun(t, "lab", "down")
	labAssertGone(t, st)
	if t.Failed() {
		t.FailNow()
	}

	// A new lab: its controller starts from an empty data dir, so none of the policy is there.
	MustRun(t, "lab", "up", "-f", topo)
	if again := labEventuallyCLI(t, []string{"client"}, "policy", "export"); strings.Contains(again, "no-admin-posts") || strings.Contains(again, "intruders") {
		t.Fatalf("the new lab's controller already holds the old policy:\n%s", again)
	}
	MustRun(t, "apply", "-f", exportFile)
	lifecycleReady(t)
	second := lifecycleTraffic(t)
	for i, rq := range lifecycleRequests() {
		if first[i] != second[i] {
			t.Errorf("%s from %s: decision changed after export, lab down/up, apply\nfirst lab:\n%s\nsecond lab:\n%s", rq.name, rq.pod, first[i], second[i])
		}
	}
	if got := MustRun(t, "policy", "export").Stdout; got != export {
		t.Errorf("the new lab's export differs from the applied one:\n%s\nwant\n%s", got, export)
	}
}
