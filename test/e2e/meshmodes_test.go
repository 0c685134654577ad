package e2e

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/api"
)

// meshModesTopology: STRICT shop/web, PERMISSIVE legacy/oldweb (from the topology's mesh:
// settings), a pod without a sidecar calling both, and a server without a sidecar that a
// meshed client calls.
const meshModesTopology = `mesh:
  permissiveNamespaces: [legacy]
  egress: allow-any
pods:
  - name: client
    namespace: shop
    serviceAccount: client
    labels: {app: client}
    command: ["sleep", "infinity"]
  - name: outsider
    namespace: shop
    labels: {app: outsider}
    command: ["sleep", "infinity"]
    sidecar: false
  - name: web
    namespace: shop
    serviceAccount: web
    labels: {app: web}
    command: ["NGINX", "8080"]
    user: www-data
  - name: oldweb
    namespace: legacy
    serviceAccount: oldweb
    labels: {app: oldweb}
    command: ["NGINX", "8080"]
    user: www-data
  - name: bare
    namespace: shop
    serviceAccount: bare
    labels: {app: bare}
    command: ["NGINX", "8080"]
    user: www-data
    sidecar: false
  - name: oddweb
    namespace: shop
    serviceAccount: oddweb
    labels: {app: oddweb}
    command: ["NGINX", "6379"]
    user: www-data
services:
  - name: web
    namespace: shop
    selector: {app: web}
    ports: [{port: 80, targetPort: 8080}]
  - name: oldweb
    namespace: legacy
    selector: {app: oldweb}
    ports: [{port: 80, targetPort: 8080}]
  - name: bare
    namespace: shop
    selector: {app: bare}
    ports: [{port: 80, targetPort: 8080}]
  - name: oddweb
    namespace: shop
    selector: {app: oddweb}
    ports: [{port: 6379}]
`

// TestLabMeshModes: STRICT refuses plaintext, a PERMISSIVE namespace (set in the topology,
// passed by lab up to its controller) accepts it and the connection is listed as
// unauthenticated; a meshed client reaches a pod without a sidecar directly; HTTP on the Redis
// port is flagged as a mismatch and raises a protocol-mismatch threat event; egress allow-any
// lets a meshed pod reach an address the registry does not know.
func TestLabMeshModes(t *testing.T) {
	labRequire(t, "nginx", "curl")
	ex, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	labUp(t, strings.ReplaceAll(meshModesTopology, `"NGINX"`, strconv.Quote(filepath.Join(ex, "nginx-pod.sh"))))
	st := labState(t)
	if ns := st.Mesh.PermissiveNamespaces; len(ns) != 1 || ns[0] != "legacy" {
		t.Fatalf("lab state mesh settings: %+v", st.Mesh)
	}
	var last string    // the last `get connections -o json`
	t.Cleanup(func() { // before lab down removes the logs
		if t.Failed() {
			ctrlLog, _ := os.ReadFile(filepath.Join(st.StateDir, "controller.log"))
			t.Logf("last get connections: %s", last)
			for _, p := range st.Pods {
				if b, err := os.ReadFile(p.SidecarLog); err == nil {
					t.Logf("sidecar log of %s:\n%s", p.Name, tail(string(b), 3000))
				}
			}
			t.Logf("controller log:\n%s", tail(string(ctrlLog), 3000))
		}
	})

	// A meshed client reaches everyone, including the pod without a sidecar (directly).
	labEventually(t, "client", "hello from web", "curl", "-sS", "-m", "5", "http://web.shop.svc.cluster.local/")
	labEventually(t, "client", "hello from oldweb", "curl", "-sS", "-m", "5", "http://oldweb.legacy.svc.cluster.local/")
	labEventually(t, "client", "hello from bare", "curl", "-sS", "-m", "5", "http://bare.shop.svc.cluster.local/")

	// No sidecar: STRICT shop/web refuses, PERMISSIVE legacy/oldweb accepts.
	if r := Run(t, "lab", "exec", "outsider", "--", "curl", "-sS", "-m", "5", "http://web.shop.svc.cluster.local/"); r.Code == 0 || strings.Contains(r.Stdout, "hello") {
		t.Errorf("unmeshed pod reached a STRICT pod: exit %d %q", r.Code, r.Stdout)
	}
	labEventually(t, "outsider", "hello from oldweb", "curl", "-sS", "-m", "5", "http://oldweb.legacy.svc.cluster.local/")
	// By pod IP as well as by VIP: either way the destination's sidecar sees the pod's own
	// address (the lab DNATs VIPs inside unmeshed pods, no hairpin masquerade).
	web, oldweb := podByName(t, st, "web"), podByName(t, st, "oldweb")
	labEventually(t, "outsider", "hello from oldweb", "curl", "-sS", "-m", "5", "http://"+oldweb.IP+":8080/")
	if r := Run(t, "lab", "exec", "outsider", "--", "curl", "-sS", "-m", "5", "http://"+web.IP+":8080/"); r.Code == 0 {
		t.Errorf("unmeshed pod reached a STRICT pod by IP: %q", r.Stdout)
	}

	// The connections view tells them apart.
	waitFor(t, "plaintext and mTLS connections listed", func() bool {
		r := Run(t, "get", "connections", "-o", "json")
		last = r.Stdout
		var conns []api.Connection
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &conns) != nil {
			return false
		}
		var permissive, strictDeny, meshed, direct bool
		for _, c := range conns {
			switch {
			case c.Source == st.Gateway:
				t.Fatalf("a pod's connection shows the bridge gateway as its source (masqueraded): %+v", c)
			case c.Source == "shop/outsider" && c.Destination == "legacy/oldweb":
				permissive = permissive || (!c.Authenticated && c.Verdict == "allow")
			case c.Source == "shop/outsider" && c.Destination == "shop/web":
				strictDeny = strictDeny || (!c.Authenticated && c.Verdict == "deny")
			case c.Source == "shop/client" && c.Destination == "legacy/oldweb":
				meshed = meshed || c.Authenticated
			case c.Source == "shop/client" && c.Destination == "shop/bare":
				direct = direct || !c.Authenticated
			}
		}
		return permissive && strictDeny && meshed && direct
	})
	t.Logf("get connections:\n%s\n%s", MustRun(t, "get", "connections").Stdout, last)

	// Egress allow-any: a server on the bridge gateway (host side, not registered) is reachable.
	ln, err := net.Listen("tcp", net.JoinHostPort(st.Gateway, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello from outside\n") })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	labEventually(t, "client", "hello from outside", "curl", "-sS", "-m", "5", "http://"+ln.Addr().String()+"/")

	labEventually(t, "client", "hello from oddweb", "curl", "-sS", "-m", "5", "http://oddweb.shop.svc.cluster.local:6379/")
	waitFor(t, "the mismatch listed and a protocol-mismatch threat event", func() bool {
		r := Run(t, "get", "connections", "-o", "json")
		last = r.Stdout
		var conns []api.Connection
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &conns) != nil {
			return false
		}
		flagged := false
		for _, c := range conns {
			flagged = flagged || (c.Destination == "shop/oddweb" && c.App == "http" && c.Mismatch)
		}
		ev := Run(t, "get", "events", "--kind", "threat", "-o", "json")
		last += "\n" + ev.Stdout
		return flagged && ev.Code == 0 && strings.Contains(ev.Stdout, "protocol-mismatch") && strings.Contains(ev.Stdout, "http on tcp/6379")
	})
}
