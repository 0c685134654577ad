package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/events"
)

// enforcePolicy: the client may use the cache (redis) except FLUSHALL, and may only GET from
// web; both are protected. Nothing allows web -> cache.
const enforcePolicy = `apiVersion: meshguard.io/v1alpha1
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
spec: {selector: {matchLabels: {app: client}}, mode: discover}
---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: client-to-cache, namespace: shop}
spec:
  from: {group: clients}
  to: {group: cache}
  ports: ["tcp/6379"]
  applications: [redis]
  l7: {redis: {denyCommands: [FLUSHALL]}}
  action: allow
---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: client-reads-web, namespace: shop}
spec:
  from: {group: clients}
  to: {group: frontend}
  ports: ["tcp/8080"]
  applications: [http]
  l7: {http: {methods: [GET]}}
  action: allow
`

// TestLabEnforcesPolicy: in protect mode the sidecars decide every connection and every
// request: allowed Redis commands and HTTP GETs pass, FLUSHALL is refused with a Redis error
// while the same connection keeps working, DELETE gets 403, and a flow no rule allows
// (web -> cache) is refused with a violation event saying no rule matched. In monitor mode
// that flow passes, as a violation.
func TestLabEnforcesPolicy(t *testing.T) {
	labRequire(t, "redis-server", "redis-cli", "curl", "nginx")
	ex, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	labUp(t, strings.ReplaceAll(learnTopology, `"NGINX"`, strconv.Quote(filepath.Join(ex, "nginx-pod.sh"))))
	t.Cleanup(func() { // before lab down
		if t.Failed() {
			t.Logf("events:\n%s", Run(t, "get", "events", "--limit", "40").Stdout)
			t.Logf("sidecars:\n%s", Run(t, "get", "sidecars").Stdout)
			if b, err := os.ReadFile(filepath.Join(labState(t).StateDir, "controller.log")); err == nil {
				t.Logf("controller log:\n%s", tail(string(b), 4000))
			}
		}
	})
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, []byte(enforcePolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	MustRun(t, "apply", "-f", file)

	// Allowed traffic works (retried: pods start listening and sidecars get the policy).
	labEventually(t, "client", "PONG", "redis-cli", "-h", "redis.shop.svc.cluster.local", "ping")
	labEventually(t, "client", "hello from web", "curl", "-sS", "-m", "5", "http://web.shop.svc.cluster.local/")

	// One redis connection: FLUSHALL is refused, the commands around it work, and CLIENT ID
	// shows the connection is the same one before and after.
	out := MustRun(t, "lab", "exec", "client", "--", "sh", "-c",
		`printf 'CLIENT ID\nSET k v\nFLUSHALL\nGET k\nCLIENT ID\n' | redis-cli -h redis.shop.svc.cluster.local`).Stdout
	var lines []string // redis-cli follows an error with an empty line
	for l := range strings.Lines(out) {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) != 5 || lines[1] != "OK" || !strings.Contains(lines[2], "denied by meshguard") ||
		!strings.Contains(lines[2], "client-to-cache") || lines[3] != "v" || lines[0] != lines[4] {
		t.Fatalf("redis session (want id, OK, a meshguard refusal naming the rule, v, the same id):\n%s", out)
	}

	// HTTP: GET passes, DELETE is refused with 403 and never reaches nginx.
	del := Run(t, "lab", "exec", "client", "--", "curl", "-sS", "-m", "5", "-X", "DELETE", "-w", "\n%{http_code}", "http://web.shop.svc.cluster.local/")
	if !strings.HasSuffix(strings.TrimSpace(del.Stdout), "403") || !strings.Contains(del.Stdout, "denied by meshguard") {
		t.Fatalf("DELETE: exit %d\nstdout: %s\nstderr: %s", del.Code, del.Stdout, del.Stderr)
	}

	// A flow no rule allows: web -> cache is refused, and the event says why.
	refused := Run(t, "lab", "exec", "web", "--", "redis-cli", "-h", "redis.shop.svc.cluster.local", "ping")
	if strings.Contains(refused.Stdout, "PONG") || !strings.Contains(refused.Stdout+refused.Stderr, "no rule matched") {
		t.Fatalf("web -> cache in protect mode: exit %d\nstdout: %s\nstderr: %s", refused.Code, refused.Stdout, refused.Stderr)
	}
	webViolation(t, "deny", "protect")

	// Monitor: the same flow passes and is reported as a violation.
	MustRun(t, "mode", "set", "shop/cache", "monitor")
	labEventually(t, "web", "PONG", "redis-cli", "-h", "redis.shop.svc.cluster.local", "ping")
	webViolation(t, "allow", "monitor")
}

// webViolation waits (bounded) for a violation event of web -> redis with the action and a
// reason that says no rule matched in the given mode.
func webViolation(t *testing.T, action, mode string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		last = Run(t, "get", "events", "--kind", "violation", "--since", "10m", "-o", "json").Stdout
		var evs []events.Event
		if json.Unmarshal([]byte(last), &evs) == nil {
			for _, e := range evs {
				if e.Source.Workload == "shop/web" && e.Destination.Workload == "shop/redis" && e.Action == action &&
					strings.Contains(e.Reason, "no rule matched") && strings.Contains(e.Reason, mode) {
					return
				}
			}
		}
		<-time.After(250 * time.Millisecond) // poll interval of a bounded wait for the report
	}
	t.Fatalf("no %s violation for shop/web -> shop/redis saying no rule matched (%s mode):\n%s", action, mode, last)
}
