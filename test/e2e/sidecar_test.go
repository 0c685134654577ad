package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/intercept"
	"github.com/meshguard/meshguard/internal/lab"
)

// sidecarTopology: every server and the client with sidecars (STRICT, the default), one pod
// without a sidecar, and two servers on each other's usual ports for the DPI mismatch check.
const sidecarTopology = `pods:
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
  - name: redis
    namespace: shop
    serviceAccount: redis
    labels: {app: redis}
    command: ["redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
    user: redis
  - name: postgres
    namespace: shop
    serviceAccount: postgres
    labels: {app: postgres}
    command: ["POSTGRES"]
    user: postgres
  - name: oddredis
    namespace: shop
    serviceAccount: oddredis
    labels: {app: oddredis}
    command: ["redis-server", "--port", "8080", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
    user: redis
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
  - name: redis
    namespace: shop
    selector: {app: redis}
    ports: [{port: 6379}]
  - name: postgres
    namespace: shop
    selector: {app: postgres}
    ports: [{port: 5432}]
  - name: oddredis
    namespace: shop
    selector: {app: oddredis}
    ports: [{port: 8080}]
  - name: oddweb
    namespace: shop
    selector: {app: oddweb}
    ports: [{port: 6379}]
`

func sidecarTopologyFile(t *testing.T) string {
	t.Helper()
	ex, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(`"NGINX"`, strconv.Quote(filepath.Join(ex, "nginx-pod.sh")),
		`"POSTGRES"`, strconv.Quote(filepath.Join(ex, "postgres-pod.sh"))).Replace(sidecarTopology)
}

// TestSidecarMesh brings up a lab where pods talk through their sidecars and checks what a
// user sees: apps work through service names, only TLS crosses the bridge, an unmeshed pod is
// refused by STRICT pods, DPI names the protocols, the mesh survives the controller, and
// nothing remains after lab down.
func TestSidecarMesh(t *testing.T) {
	labRequire(t, "redis-server", "redis-cli", "curl", "nginx", "psql", "tcpdump")
	if _, err := os.Stat("/usr/lib/postgresql"); err != nil {
		t.Skip("postgresql not installed (scripts/lib.sh installs it)")
	}
	labUp(t, sidecarTopologyFile(t))
	st := labState(t)
	t.Cleanup(func() { // before lab down removes them
		if !t.Failed() {
			return
		}
		for _, p := range st.Pods {
			if b, err := os.ReadFile(p.SidecarLog); err == nil {
				t.Logf("sidecar log of %s:\n%s", p.Name, tail(string(b), 4000))
			}
		}
	})
	for _, p := range st.Pods {
		if (p.SidecarProc == nil) != (p.Name == "outsider") {
			t.Fatalf("pod %s: sidecar proc %v", p.Name, p.SidecarProc)
		}
	}

	// Capture the pods' traffic while the apps talk: on every interface (pod-to-pod frames
	// are switched between the bridge's veth ports and never reach the bridge device itself).
	pcap := filepath.Join(t.TempDir(), "bridge.pcap")
	dump := exec.Command("tcpdump", "-i", "any", "--immediate-mode", "-U", "-s", "0", "-w", pcap, "tcp and net "+st.PodCIDR)
	var dumpErr syncBuffer // tcpdump writes it while the test reads it
	dump.Stderr = &dumpErr
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	stopDump := func() {
		if dump.ProcessState != nil {
			return
		}
		_ = dump.Process.Signal(syscall.SIGINT)
		_ = dump.Wait()
	}
	t.Cleanup(stopDump)
	waitFor(t, "tcpdump listening", func() bool { return strings.Contains(dumpErr.String(), "listening on") })

	body := labEventually(t, "client", "hello from web", "curl", "-sS", "-m", "5", "http://web.shop.svc.cluster.local/")
	if !strings.Contains(body, "hello from web") {
		t.Fatalf("curl: %q", body)
	}
	MustRun(t, "lab", "exec", "client", "--", "redis-cli", "-h", "redis.shop.svc.cluster.local", "set", "meshkey", "secretvalue")
	if got := MustRun(t, "lab", "exec", "client", "--", "redis-cli", "-h", "redis", "get", "meshkey").Stdout; strings.TrimSpace(got) != "secretvalue" {
		t.Fatalf("redis get through the mesh: %q", got)
	}
	labEventually(t, "client", "meshguard_sql", "psql", "-h", "postgres.shop.svc.cluster.local", "-U", "postgres", "-tAc", "select 'meshguard_sql'")
	labEventually(t, "client", "PONG", "redis-cli", "-h", "oddredis", "-p", "8080", "ping")
	labEventually(t, "client", "hello from oddweb", "curl", "-sS", "-m", "5", "http://oddweb:6379/")
	stopDump()
	t.Logf("tcpdump: %s", dumpErr.String())
	assertOnlyTLS(t, pcap, []string{"GET /", "meshkey", "secretvalue", "meshguard_sql", "PONG", "hello from"})

	// No sidecar, STRICT destination: refused, for the VIP and the pod IP alike.
	web := podByName(t, st, "web")
	for _, url := range []string{"http://web.shop.svc.cluster.local/", "http://" + web.IP + ":8080/"} {
		if r := Run(t, "lab", "exec", "outsider", "--", "curl", "-sS", "-m", "5", url); r.Code == 0 || strings.Contains(r.Stdout, "hello") {
			t.Errorf("unmeshed pod reached a STRICT pod at %s: exit %d %q", url, r.Code, r.Stdout)
		}
	}
	if r := Run(t, "lab", "exec", "outsider", "--", "redis-cli", "-h", "redis", "get", "meshkey"); strings.Contains(r.Stdout, "secretvalue") {
		t.Errorf("unmeshed pod read redis: %q", r.Stdout)
	}

	// web's sidecar counted the tunnels and the refused plaintext.
	webMetrics := MustRun(t, "lab", "exec", "web", "--", "curl", "-sSf", "-m", "3", "http://127.0.0.1:15020/metrics").Stdout
	for _, name := range []string{"meshguard_sidecar_tunnel_connections_total", "meshguard_sidecar_inbound_plaintext_connections_total"} {
		if v := metricValue(webMetrics, name); v == "" || v == "0" {
			t.Errorf("web sidecar %s = %q, want > 0", name, v)
		}
	}

	// Health and metrics on the sidecar's admin port, inside the pod.
	MustRun(t, "lab", "exec", "client", "--", "curl", "-sSf", "-m", "3", "http://127.0.0.1:15020/readyz")
	metrics := MustRun(t, "lab", "exec", "client", "--", "curl", "-sSf", "-m", "3", "http://127.0.0.1:15020/metrics").Stdout
	if !strings.Contains(metrics, `meshguard_sidecar_connections_total{authenticated="true",direction="outbound",reason="closed"}`) {
		t.Errorf("client sidecar metrics lack closed authenticated outbound connections:\n%s", grepLines(metrics, "meshguard_sidecar"))
	}

	// DPI in the reports: protocols named from the bytes, not the port.
	waitFor(t, "connections reported with DPI protocols", func() bool {
		r := Run(t, "get", "connections", "-o", "json")
		var conns []api.Connection
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &conns) != nil {
			return false
		}
		apps := map[uint16]map[string]bool{}
		for _, c := range conns {
			if apps[c.Port] == nil {
				apps[c.Port] = map[string]bool{}
			}
			apps[c.Port][c.App] = true
		}
		return apps[8080]["redis"] && apps[6379]["http"] && apps[6379]["redis"] && apps[5432]["postgres"]
	})

	t.Logf("get connections:\n%s", MustRun(t, "get", "connections").Stdout)

	// Egress to an unregistered destination: REGISTRY_ONLY (the default) refuses it, with an event.
	client := podByName(t, st, "client")
	if r := Run(t, "lab", "exec", "client", "--", "curl", "-sS", "-m", "5", "http://"+st.Gateway+":8099/"); r.Code == 0 {
		t.Errorf("egress to an unregistered destination succeeded: %q", r.Stdout)
	}
	waitFor(t, "egress decision logged", func() bool {
		b, _ := os.ReadFile(client.SidecarLog)
		return strings.Contains(string(b), "msg=egress") && strings.Contains(string(b), "dst="+st.Gateway+":8099 allowed=false")
	})

	// Policy is enforced in the destination's sidecar: protect mode without a rule refuses
	// the stream, back to discover it flows again.
	MustRun(t, "mode", "set", "shop/web", "protect")
	waitFor(t, "web refuses the client in protect mode", func() bool {
		return Run(t, "lab", "exec", "client", "--", "curl", "-sS", "-m", "5", "http://web/").Code != 0
	})
	waitFor(t, "web's sidecar logs the policy denial", func() bool {
		return countIn(t, web.SidecarLog, "denied by policy") > 0
	})
	MustRun(t, "mode", "set", "shop/web", "discover")
	labEventually(t, "client", "hello from web", "curl", "-sS", "-m", "5", "http://web/")

	// Fail-static: the controller dies, established config keeps the mesh working.
	ctrl := st.System[0]
	if ctrl.Name != "controller" {
		t.Fatalf("system process 0 is %q", ctrl.Name)
	}
	if err := syscall.Kill(ctrl.Proc.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "controller gone", func() bool { return !ctrl.Proc.Alive() })
	labEventually(t, "client", "hello from web", "curl", "-sS", "-m", "5", "http://web/")
	labEventually(t, "client", "secretvalue", "redis-cli", "-h", "redis", "get", "meshkey")

	// Restarted with the same data dir and addresses, every sidecar resyncs.
	applied := map[string]int{}
	for _, p := range st.Pods {
		if p.SidecarLog != "" {
			applied[p.SidecarLog] = countIn(t, p.SidecarLog, `msg="config applied"`)
		}
	}
	restartLabController(t, st)
	for log, before := range applied {
		waitFor(t, "sidecar resync "+log, func() bool { return countIn(t, log, `msg="config applied"`) > before })
	}
	labEventually(t, "client", "hello from web", "curl", "-sS", "-m", "5", "http://web/")

	MustRun(t, "lab", "down")
	labAssertGone(t, st)
	for _, p := range st.Pods {
		if p.SidecarProc != nil && p.SidecarProc.Alive() {
			t.Errorf("sidecar of %s (pid %d) still running", p.Name, p.SidecarProc.PID)
		}
	}
}

// assertOnlyTLS reads the capture and fails on any TCP payload between pods that is not on a
// sidecar tunnel port, or that holds one of the plaintext markers; it needs tunnel traffic.
func assertOnlyTLS(t *testing.T, path string, markers []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("read capture: %v", err)
	}
	var tunnelBytes, records, packets int
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read capture: %v", err)
		}
		packets++
		pkt := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if tcp == nil || len(tcp.Payload) == 0 {
			continue
		}
		for _, m := range markers {
			if bytes.Contains(tcp.Payload, []byte(m)) {
				t.Errorf("plaintext %q on the bridge (%d -> %d)", m, tcp.SrcPort, tcp.DstPort)
			}
		}
		switch {
		case tcp.SrcPort == 15008 || tcp.DstPort == 15008:
			tunnelBytes += len(tcp.Payload)
			if b := tcp.Payload[0]; b >= 0x14 && b <= 0x17 && tcp.Payload[1] == 3 {
				records++
			}
		case tcp.SrcPort == 7444 || tcp.DstPort == 7444 || tcp.SrcPort == 7445 || tcp.DstPort == 7445 || tcp.SrcPort == 7443 || tcp.DstPort == 7443:
			// the controller's TLS services
		default:
			t.Errorf("TCP payload outside the tunnel: %d -> %d, %d bytes", tcp.SrcPort, tcp.DstPort, len(tcp.Payload))
		}
	}
	if tunnelBytes == 0 || records == 0 {
		t.Fatalf("no TLS seen on the tunnel port (%d packets, %d bytes, %d records): did traffic go through sidecars?", packets, tunnelBytes, records)
	}
}

// restartLabController starts the lab's controller again the way the lab does (same data dir
// and addresses) and stops it at cleanup, before lab down.
func restartLabController(t *testing.T, st *lab.State) {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), "controller2.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "controller", "--data-dir", filepath.Join(st.StateDir, "controller"),
		"--listen-api", st.Gateway+":7443", "--listen-identity", st.Gateway+":7444", "--listen-xds", st.Gateway+":7445",
		"--lab-state", st.StateDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
	})
	waitFor(t, "restarted controller ready", func() bool { return countIn(t, logf.Name(), "controller ready") > 0 })
}

func podByName(t *testing.T, st *lab.State, name string) lab.PodState {
	t.Helper()
	for _, p := range st.Pods {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no pod %s", name)
	return lab.PodState{}
}

func countIn(t *testing.T, path, s string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), s)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// waitFor polls cond (bounded, 30s).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond) // poll interval of a bounded wait
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestSidecarRefusesWrongPeerIdentity hijacks the client pod's connections to web's tunnel
// port to redis's sidecar, which presents a valid SVID of the mesh but not web's: the client's
// sidecar must refuse it, and the same request works again once the hijack is gone.
func TestSidecarRefusesWrongPeerIdentity(t *testing.T) {
	labRequire(t, "redis-server", "redis-cli", "curl", "nginx", "nft")
	labUp(t, `pods:
  - name: client
    namespace: shop
    serviceAccount: client
    command: ["sleep", "infinity"]
  - name: web
    namespace: shop
    serviceAccount: web
    labels: {app: web}
    command: [`+strconv.Quote(examplePath(t, "nginx-pod.sh"))+`, "8080"]
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
`)
	st := labState(t)
	client, web, redis := podByName(t, st, "client"), podByName(t, st, "web"), podByName(t, st, "redis")
	// The mesh works (to redis; web is not dialled yet, so no pooled tunnel to it exists).
	labEventually(t, "client", "PONG", "redis-cli", "-h", "redis", "ping")

	rules := fmt.Sprintf("table ip mgtest {\n chain out {\n  type nat hook output priority -100;\n  ip daddr %s tcp dport 15008 dnat to %s:15008\n }\n}\n", web.IP, redis.IP)
	nft := func(args ...string) {
		t.Helper()
		cmd := exec.Command("nsenter", append([]string{"--net=" + client.Netns, "nft"}, args...)...)
		if args[0] == "-f" {
			cmd.Stdin = strings.NewReader(rules)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v\n%s", args, err, out)
		}
	}
	nft("-f", "-")
	if r := Run(t, "lab", "exec", "client", "--", "curl", "-sS", "-m", "5", "http://web/"); r.Code == 0 || strings.Contains(r.Stdout, "hello") {
		t.Fatalf("client reached web through a peer presenting another identity: exit %d %q", r.Code, r.Stdout)
	}
	waitFor(t, "client sidecar logs the refused peer", func() bool {
		b, _ := os.ReadFile(client.SidecarLog)
		return strings.Contains(string(b), "reason=tunnel-failed") && strings.Contains(string(b), "sa/redis")
	})

	nft("delete", "table", "ip", "mgtest")
	labEventually(t, "client", "hello from web", "curl", "-sS", "-m", "5", "http://web/")

	// SIGTERM: the sidecar drains, removes its interception rules and exits.
	if on, err := intercept.TableExists(client.Netns, intercept.TableName); err != nil || !on {
		t.Fatalf("client pod has no interception table while its sidecar runs: %v", err)
	}
	if err := syscall.Kill(client.SidecarProc.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "client sidecar exits", func() bool { return !client.SidecarProc.Alive() })
	if on, err := intercept.TableExists(client.Netns, intercept.TableName); err != nil || on {
		t.Errorf("interception table left in the client pod after its sidecar exited (%v)", err)
	}
}

func examplePath(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("../../examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// pingForever keeps one TCP connection to redis and PINGs it until the stop file appears;
// any error or wrong reply exits non-zero: the stream dropped.
const pingForever = `import os, socket, sys, time
s = socket.create_connection(("redis", 6379), timeout=5)
n = 0
while not os.path.exists(sys.argv[1]):
    s.sendall(b"PING\r\n")
    r = s.recv(64)
    if r != b"+PONG\r\n":
        sys.exit("reply %r after %d pings" % (r, n))
    n += 1
    time.sleep(0.2)
print("pings", n)
`

// TestSidecarSVIDRotationKeepsStreams runs a long-lived stream through both sidecars while
// their SVIDs rotate (short TTL): the stream must not drop, and new streams work after.
func TestSidecarSVIDRotationKeepsStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for an SVID rotation (about 3 minutes)")
	}
	labRequire(t, "redis-server", "redis-cli", "python3", "curl")
	labUp(t, `pods:
  - name: client
    namespace: shop
    serviceAccount: client
    command: ["sleep", "infinity"]
  - name: redis
    namespace: shop
    serviceAccount: redis
    labels: {app: redis}
    command: ["redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
    user: redis
services:
  - name: redis
    namespace: shop
    selector: {app: redis}
    ports: [{port: 6379}]
`, "--svid-ttl", "5m")
	expiry := func(pod string) string {
		m := MustRun(t, "lab", "exec", pod, "--", "curl", "-sSf", "-m", "3", "http://127.0.0.1:15020/metrics").Stdout
		for _, l := range strings.Split(m, "\n") {
			if v, ok := strings.CutPrefix(l, "meshguard_sidecar_svid_expiry_timestamp_seconds "); ok {
				return v
			}
		}
		t.Fatalf("%s sidecar has no svid expiry metric", pod)
		return ""
	}
	before := map[string]string{"client": expiry("client"), "redis": expiry("redis")}
	labEventually(t, "client", "PONG", "redis-cli", "-h", "redis", "ping")

	stop := filepath.Join(t.TempDir(), "stop")
	var out, errb syncBuffer
	stream := exec.Command(bin, "lab", "exec", "client", "--", "python3", "-c", pingForever, stop)
	stream.Stdout, stream.Stderr = &out, &errb
	if err := stream.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- stream.Wait() }()
	t.Cleanup(func() {
		_ = os.WriteFile(stop, nil, 0o600)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = stream.Process.Kill()
		}
	})

	// 50% of 5m, with jitter: both rotate within 4 minutes.
	deadline := time.Now().Add(4 * time.Minute)
	for pod, was := range before {
		for expiry(pod) == was {
			select {
			case err := <-exited:
				t.Fatalf("the long-lived stream ended before %s's SVID rotated: %v\n%s%s", pod, err, out.String(), errb.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's SVID did not rotate within 4 minutes", pod)
			}
			time.Sleep(2 * time.Second) // poll interval of a bounded wait for the rotation
		}
	}
	labEventually(t, "client", "PONG", "redis-cli", "-h", "redis", "ping") // new streams, new certificates
	if err := os.WriteFile(stop, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil || !strings.Contains(out.String(), "pings") {
			t.Fatalf("the long-lived stream dropped across the rotation: %v\n%s%s", err, out.String(), errb.String())
		}
		t.Logf("stream survived the rotation: %s", strings.TrimSpace(out.String()))
	case <-time.After(30 * time.Second):
		t.Fatal("the long-lived stream did not stop")
	}
}

// metricValue returns the value of an unlabelled metric in a Prometheus text exposition.
func metricValue(exposition, name string) string {
	for _, l := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
