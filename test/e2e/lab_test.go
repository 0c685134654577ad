package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/lab"
)

// labTopology is a small shop: a client, a web server with two replicas and redis, no sidecars
// (this test is about the lab itself).
const labTopology = `pods:
  - name: client
    namespace: shop
    command: ["sleep", "infinity"]
    sidecar: false
  - name: web
    namespace: shop
    serviceAccount: web
    labels: {app: web}
    command: ["python3", "-m", "http.server", "8080"]
    user: 1000
    replicas: 2
    sidecar: false
  - name: redis
    namespace: shop
    serviceAccount: redis
    labels: {app: redis}
    command: ["redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
    user: redis
    sidecar: false
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

// labUserConfig stands for a user's own admin config that a lab must not destroy.
const labUserConfig = "server: https://controller.example:7443\n"

// labRequire skips unless the test runs as root with the tools the topology uses.
func labRequire(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespaces, bridge, nftables); CI runs as root")
	}
	for _, tool := range append([]string{"nsenter"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/lib.sh installs it): %v", tool, err)
		}
	}
	labLock(t)
	if st, err := lab.ReadState(lab.DefaultStateDir); err == nil && lab.DaemonAlive(st) {
		t.Skip("a lab is already running on this machine; not touching it")
	}
}

// labLock serialises lab tests across test processes (there is one lab per machine): it holds
// an flock on /run/meshguard/e2e-lab.lock until the test ends, waiting for it (bounded).
func labLock(t *testing.T) {
	t.Helper()
	if err := os.MkdirAll("/run/meshguard", 0o711); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile("/run/meshguard/e2e-lab.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			f.Close()
			t.Fatalf("another test process holds the lab for over 5 minutes: %v", err)
		}
		time.Sleep(250 * time.Millisecond) // poll interval of a bounded wait for the lock
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock, after lab down (cleanups run LIFO)
}

// labUp writes topology to a temp file, brings the lab up (with extraArgs for lab up) and
// registers `lab down` at cleanup.
func labUp(t *testing.T, topology string, extraArgs ...string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "topology.yaml")
	if err := os.WriteFile(file, []byte(topology), 0o644); err != nil {
		t.Fatal(err)
	}
	// lab up copies the lab controller's admin.conf to ~/.meshguard/config: keep it out of the
	// real home, in one that holds a user's own config for lab up to keep and lab down to restore.
	home := t.TempDir()
	t.Setenv("HOME", home)
	if err := os.MkdirAll(filepath.Join(home, ".meshguard"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".meshguard", "config"), []byte(labUserConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Run(t, "lab", "down") })
	MustRun(t, append([]string{"lab", "up", "-f", file}, extraArgs...)...)
	return file
}

// labState reads the running lab's state through `lab status -o json`.
func labState(t *testing.T) *lab.State {
	t.Helper()
	var st lab.State
	r := MustRun(t, "lab", "status", "-o", "json")
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
		t.Fatalf("lab status -o json: %v\n%s", err, r.Stdout)
	}
	return &st
}

// labEventually runs `lab exec POD -- argv` until its stdout contains want (bounded): servers in
// pods need a moment to listen after `lab up` returns.
func labEventually(t *testing.T, pod, want string, argv ...string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last Result
	for time.Now().Before(deadline) {
		last = Run(t, append([]string{"lab", "exec", pod, "--"}, argv...)...)
		if last.Code == 0 && strings.Contains(last.Stdout, want) {
			return last.Stdout
		}
		time.Sleep(200 * time.Millisecond) // poll interval of a bounded readiness wait
	}
	t.Fatalf("lab exec %s -- %s: never printed %q; last exit %d\nstdout: %s\nstderr: %s",
		pod, strings.Join(argv, " "), want, last.Code, last.Stdout, last.Stderr)
	return ""
}

// labAssertGone checks that nothing of the lab remains: netns, links, nftables table,
// processes, state.
func labAssertGone(t *testing.T, st *lab.State) {
	t.Helper()
	for _, d := range []string{lab.NetnsDir, "/run/netns"} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), lab.NetnsPrefix) {
				t.Errorf("netns %s/%s remains", d, e.Name())
			}
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		name := l.Attrs().Name
		if name == lab.BridgeName || (strings.HasPrefix(name, lab.VethPrefix) && l.Type() == "veth") {
			t.Errorf("link %s remains", name)
		}
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == lab.NFTTable {
			t.Errorf("nftables table %s remains", tb.Name)
		}
	}
	if st != nil {
		procs := []lab.Proc{st.Daemon}
		for _, p := range st.Pods {
			procs = append(procs, p.Proc)
		}
		for _, sp := range st.System {
			procs = append(procs, sp.Proc)
		}
		for _, p := range procs {
			if p.Alive() {
				t.Errorf("process %d of the lab is still running", p.PID)
			}
		}
		for _, d := range []string{st.StateDir, lab.PodsDir(st.StateDir)} {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Errorf("lab dir %s remains (%v)", d, err)
			}
		}
	}
}

func TestLabShop(t *testing.T) {
	labRequire(t, "python3", "redis-server", "redis-cli", "curl")
	labUp(t, labTopology)
	st := labState(t)
	if len(st.Pods) != 4 || st.Pods[1].Name != "web-0" || st.Pods[2].Name != "web-1" {
		t.Fatalf("pods: %+v", st.Pods)
	}

	// HTTP through the service name: DNS from the lab, DNAT to a replica.
	body := labEventually(t, "client", "Directory listing", "curl", "-s", "-m", "3", "http://web.shop.svc.cluster.local/")
	if !strings.Contains(body, "<html") {
		t.Fatalf("curl body: %s", body)
	}
	// Both replicas serve the VIP (random choice): once both listen, bounded attempts until each
	// logged a request.
	for _, p := range st.Pods[1:3] {
		labEventually(t, "client", "Directory listing", "curl", "-s", "-m", "3", "http://"+p.IP+":8080/")
	}
	// The client has no sidecar: the lab DNATs the VIP inside its netns, so replicas see the
	// client's own address; a replica was chosen when its count of requests grew.
	client := podByName(t, st, "client")
	requests := func(w string) int { return strings.Count(MustRun(t, "lab", "logs", w).Stdout, client.IP+" - - ") }
	before := map[string]int{"web-0": requests("web-0"), "web-1": requests("web-1")}
	seen := map[string]bool{}
	for i := 0; i < 60 && len(seen) < 2; i++ {
		MustRun(t, "lab", "exec", "shop/client", "--", "curl", "-s", "-m", "3", "-o", "/dev/null", "http://web/")
		for _, w := range []string{"web-0", "web-1"} {
			if requests(w) > before[w] {
				seen[w] = true
			}
		}
	}
	if len(seen) != 2 {
		t.Errorf("service web did not balance over both replicas: %v", seen)
	}

	// Redis through its service name (short name via the search path too).
	labEventually(t, "client", "PONG", "redis-cli", "-h", "redis.shop.svc.cluster.local", "ping")
	MustRun(t, "lab", "exec", "client", "--", "redis-cli", "-h", "redis", "set", "k", "meshguard")
	if got := MustRun(t, "lab", "exec", "client", "--", "redis-cli", "-h", "redis", "get", "k").Stdout; strings.TrimSpace(got) != "meshguard" {
		t.Fatalf("redis get: %q", got)
	}

	// Pod identity: hostname, uid, own PID namespace, own address.
	if got := strings.TrimSpace(MustRun(t, "lab", "exec", "web-1", "--", "hostname").Stdout); got != "web-1" {
		t.Errorf("hostname %q", got)
	}
	if got := MustRun(t, "lab", "exec", "web-0", "--", "cat", "/proc/1/status").Stdout; !strings.Contains(got, "python3") || !strings.Contains(got, "Uid:\t1000") {
		t.Errorf("pid 1 of web-0 is not python3 as uid 1000:\n%s", got)
	}
	if got := MustRun(t, "lab", "exec", "redis", "--", "cat", "/proc/net/fib_trie").Stdout; !strings.Contains(got, st.Pods[3].IP) {
		t.Errorf("redis netns does not hold %s", st.Pods[3].IP)
	}
	// Exit codes come back to the caller.
	if r := Run(t, "lab", "exec", "client", "--", "sh", "-c", "exit 3"); r.Code != 3 {
		t.Errorf("exit code %d, want 3", r.Code)
	}

	status := MustRun(t, "lab", "status").Stdout
	for _, want := range []string{"POD", "client", "web-0", "web-1", "redis", st.Pods[0].IP, "running", "web.shop.svc.cluster.local"} {
		if !strings.Contains(status, want) {
			t.Errorf("lab status lacks %q:\n%s", want, status)
		}
	}

	adminConf := filepath.Join(os.Getenv("HOME"), ".meshguard", "config")
	for _, sp := range st.System {
		if sp.Name != "controller" {
			continue
		}
		if sp.State != "running" || !sp.Proc.Alive() {
			t.Errorf("lab controller not running: %+v", sp)
		}
		if fi, err := os.Stat(adminConf); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("lab up did not install %s (0600): %v", adminConf, err)
		}
		if b, _ := os.ReadFile(adminConf); string(b) == labUserConfig {
			t.Errorf("lab up left the user's config in place of the lab's")
		}
	}

	MustRun(t, "lab", "down")
	labAssertGone(t, st)
	if b, err := os.ReadFile(adminConf); err != nil || string(b) != labUserConfig {
		t.Errorf("lab down did not restore the user's %s: %q %v", adminConf, b, err)
	}
	MustRun(t, "lab", "down") // idempotent
}

func TestLabDownAfterDaemonCrash(t *testing.T) {
	labRequire(t)
	labUp(t, "pods:\n  - name: a\n    command: [sleep, infinity]\n    sidecar: false\n  - name: b\n    labels: {app: b}\n    command: [python3, -m, http.server, \"80\"]\n    sidecar: false\nservices:\n  - name: b\n    selector: {app: b}\n    ports: [{port: 80}]\n")
	st := labState(t)
	if err := syscall.Kill(st.Daemon.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !st.Daemon.WaitExit(10 * time.Second) {
		t.Fatal("daemon survived SIGKILL")
	}
	if r := MustRun(t, "lab", "status").Stdout; !strings.Contains(r, "NOT running") {
		t.Errorf("status after crash does not say the daemon is gone:\n%s", r)
	}
	MustRun(t, "lab", "down")
	labAssertGone(t, st)
}

// Even with the state file lost as well, lab down finds the pods by their network namespaces.
func TestLabDownAfterCrashWithoutState(t *testing.T) {
	labRequire(t, "python3")
	labUp(t, "pods:\n  - name: a\n    command: [sleep, infinity]\n    sidecar: false\n  - name: b\n    command: [python3, -m, http.server, \"80\"]\n    sidecar: false\n")
	st := labState(t)
	if err := syscall.Kill(st.Daemon.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !st.Daemon.WaitExit(10 * time.Second) {
		t.Fatal("daemon survived SIGKILL")
	}
	if err := os.Remove(lab.StatePath(st.StateDir)); err != nil {
		t.Fatal(err)
	}
	MustRun(t, "lab", "down")
	labAssertGone(t, st)
}

func TestLabRefusesBadTopology(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	bad := "pods:\n  - name: web\n    labels: {app: web}\n    command: [sleep, infinity]\n    image: nginx\nservices:\n  - name: db\n    selector: {app: db}\n    ports: [{port: 5432}]\n"
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, bridgeBefore := netlink.LinkByName(lab.BridgeName)
	r := Run(t, "lab", "up", "-f", file)
	if r.Code == 0 {
		t.Fatalf("bad topology accepted:\n%s", r.Stdout)
	}
	for _, want := range []string{file + ":5: pods[0].image: unknown field", file + ":7: services[0].selector: service \"default/db\" selects no pod"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.Stderr)
		}
	}
	if _, err := netlink.LinkByName(lab.BridgeName); bridgeBefore != nil && err == nil {
		t.Error("a refused topology created the lab bridge")
	}
}

func TestLabNeedsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the binary as another user")
	}
	// A world-readable copy of the binary and topology, run as nobody.
	dir, err := os.MkdirTemp("", "meshguard-lab-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	nbin := filepath.Join(dir, "meshguard")
	if err := os.WriteFile(nbin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	topo := filepath.Join(dir, "t.yaml")
	if err := os.WriteFile(topo, []byte(labTopology), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"lab", "up", "-f", topo}, {"lab", "status"}, {"lab", "down"}} {
		cmd := exec.Command(nbin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "the lab needs root") {
			t.Errorf("meshguard %s as nobody: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

func TestLabUpReportsDeadPodAndCleansUp(t *testing.T) {
	labRequire(t)
	file := filepath.Join(t.TempDir(), "dead.yaml")
	topo := "pods:\n  - name: web\n    labels: {app: web}\n    command: [no-such-program-here]\n    sidecar: false\nservices:\n  - name: web\n    selector: {app: web}\n    ports: [{port: 80}]\n"
	if err := os.WriteFile(file, []byte(topo), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", t.TempDir())
	t.Cleanup(func() { Run(t, "lab", "down") })
	r := Run(t, "lab", "up", "-f", file)
	if r.Code == 0 || !strings.Contains(r.Stderr, "pod default/web did not start") || !strings.Contains(r.Stderr, "no-such-program-here") {
		t.Fatalf("lab up with a dead pod: exit %d\nstderr: %s", r.Code, r.Stderr)
	}
	labAssertGone(t, &lab.State{StateDir: lab.DefaultStateDir})
}

// TestLabShopExample brings up the shipped examples/shop.yaml (nginx ×2, redis-server,
// postgresql, a client) and uses each server through its service name with its real client.
func TestLabShopExample(t *testing.T) {
	labRequire(t, "nginx", "redis-server", "redis-cli", "psql", "curl")
	example, err := filepath.Abs("../../examples/shop.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", t.TempDir())
	t.Cleanup(func() { Run(t, "lab", "down") })
	MustRun(t, "lab", "up", "-f", example)
	st := labState(t)

	if got := MustRun(t, "lab", "exec", "client", "--", "curl", "-s", "-m", "5", "http://web.shop.svc.cluster.local/").Stdout; !strings.HasPrefix(got, "hello from web-") {
		t.Errorf("curl web: %q", got)
	}
	if got := MustRun(t, "lab", "exec", "client", "--", "redis-cli", "-h", "redis.shop.svc.cluster.local", "ping").Stdout; strings.TrimSpace(got) != "PONG" {
		t.Errorf("redis-cli ping: %q", got)
	}
	// postgres accepts connections a moment before it finishes starting up: bounded retries.
	labEventually(t, "client", "42", "psql", "-h", "postgres.shop.svc.cluster.local", "-U", "postgres", "-tAc", "select 6*7")

	// The shipped threat policy does what its header says: an SQL injection to web is refused
	// by web's sidecar, reported, and its capture downloads and opens in tshark.
	policyFile, err := filepath.Abs("../../examples/threat-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	MustRun(t, "apply", "-f", policyFile)
	labEventually(t, "client", "denied by meshguard: threat sqli", "curl", "-s", "-m", "5",
		"http://web.shop.svc.cluster.local/?id=1'%20OR%20'1'='1")
	var sqli events.Event
	waitUntil(t, "the sqli threat event with a capture", 30*time.Second, func() bool {
		for _, e := range threatEvents(t) {
			if e.Name == "sqli" && e.CaptureRef != "" {
				sqli = e
				return true
			}
		}
		return false
	})
	if uris := tshark(t, "-r", captureGet(t, sqli.CaptureRef), "-Y", "http.request", "-T", "fields", "-e", "http.request.uri"); !strings.Contains(uris, "OR") {
		t.Errorf("capture %s lacks the attack request: %q", sqli.CaptureRef, uris)
	}
	MustRun(t, "lab", "down")
	labAssertGone(t, st)
}
