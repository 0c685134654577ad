package sidecar

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	"github.com/meshguard/meshguard/internal/dpi"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/xds"
)

const enforcePolicy = `apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: redis, namespace: shop}
spec: {mode: protect}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: web, namespace: shop}
spec: {mode: discover}
---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: web-to-cache, namespace: shop}
spec: {from: {group: web}, to: {group: redis}, ports: [tcp/%d], applications: [redis], action: allow,
  l7: {redis: {denyCommands: [FLUSHALL]}}}
---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: web-reads, namespace: shop}
spec: {from: {group: web}, to: {group: redis}, ports: [tcp/%d], applications: [http], action: allow,
  l7: {http: {methods: [GET]}}}
`

// startRedis runs a real redis-server on a free loopback port.
func startRedis(t *testing.T) int {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed (apt-get install redis-server)")
	}
	ln := listenLocal(t)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			c.Close()
			return port
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not start: %v", err)
		}
		<-time.After(20 * time.Millisecond) // polling a child process, not synchronising goroutines
	}
}

func enforcingMesh(t *testing.T, redisPort, httpPort int) *mesh {
	t.Helper()
	insp := enforcingInspector(t, redisPort, httpPort)
	view, index := enforceView(t, redisPort, httpPort)
	return newMesh(t, func(c *InboundConfig) {
		c.Admit = policyAdmitter(view, index)
		c.Inspect = insp
	})
}

func enforcingInspector(t testing.TB, redisPort, httpPort int) Inspector {
	t.Helper()
	view, index := enforceView(t, redisPort, httpPort)
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	return EnforcingInspector(eng, view, index)
}

// enforceView compiles enforcePolicy as the redis workload's sidecar would get it.
func enforceView(t testing.TB, redisPort, httpPort int) (*atomic.Pointer[policyView], func() *xds.Index) {
	t.Helper()
	return enforceViewOf(t, fmt.Sprintf(enforcePolicy, redisPort, httpPort))
}

func enforceViewOf(t testing.TB, pol string) (*atomic.Pointer[policyView], func() *xds.Index) {
	t.Helper()
	snap := &xdsv1.Snapshot{
		Self: &xdsv1.Workload{Namespace: "shop", Name: "redis", SpiffeId: "spiffe://example.org/ns/shop/sa/redis", Ips: []string{"10.0.0.2"}, Groups: []string{"shop/redis"}},
		Peers: []*xdsv1.Workload{
			{Namespace: "shop", Name: "web", SpiffeId: "spiffe://example.org/ns/shop/sa/web", Ips: []string{"10.0.0.3"}, Groups: []string{"shop/web"}, TunnelPort: 15008},
		},
		Policy: []byte(pol), PolicyFormat: "yaml", TrustDomain: "example.org",
	}
	x, err := xds.NewIndex(snap)
	if err != nil {
		t.Fatal(err)
	}
	pv, err := compilePolicy(policy.NewEngine(policy.CompileOptions{}), snap)
	if err != nil || pv == nil {
		t.Fatalf("compile: %v", err)
	}
	var view atomic.Pointer[policyView]
	view.Store(pv)
	return &view, func() *xds.Index { return x }
}

// BenchmarkEnforcerRedisCommand: deciding one Redis command on an open stream (DPI parse and
// policy decision) allocates nothing.
func BenchmarkEnforcerRedisCommand(b *testing.B) {
	insp := enforcingInspector(b, 6379, 8080)
	o := fromWeb(insp, 6379)
	defer o.Close()
	get := []byte("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
	if err := o.FromClient(get); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(get)))
	for b.Loop() {
		if err := o.FromClient(get); err != nil {
			b.Fatal(err)
		}
	}
	if r := (&ConnReport{}); true {
		o.(Annotator).Annotate(r)
		if r.Verdict != "allow" || r.RuleID != "shop/web-to-cache" {
			b.Fatalf("report %+v", r)
		}
	}
}

func FuzzWholeRESP(f *testing.F) {
	for _, s := range []string{"*1\r\n$4\r\nPING\r\n", "PING\r\n", "*2\r\n$3\r\nGET\r\n$-1\r\n", "*99999999999\r\n", "$"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if n := wholeRESP(p); n > len(p) {
			t.Fatalf("%d commands in %d bytes", n, len(p))
		}
	})
}

func TestEnforcingRefusesRedisCommandAndKeepsTheConnection(t *testing.T) {
	port := startRedis(t)
	m := enforcingMesh(t, port, 1)
	s, err := m.client.Open(openCtx(t), m.peer, fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(s)
	cmd := func(args ...string) string {
		t.Helper()
		var b strings.Builder
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
		if _, err := io.WriteString(s, b.String()); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if strings.HasPrefix(line, "$") { // bulk reply: read the value
			v, _ := r.ReadString('\n')
			line += v
		}
		return line
	}
	if got := cmd("PING"); got != "+PONG\r\n" {
		t.Fatalf("PING: %q", got)
	}
	if got := cmd("SET", "k", "v"); got != "+OK\r\n" {
		t.Fatalf("SET: %q", got)
	}
	// A big reply (redis-cli asks for it on start) must not stop requests being decided.
	io.WriteString(s, "*2\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\n")
	if err := skipRESP(r); err != nil {
		t.Fatalf("COMMAND DOCS: %v", err)
	}
	if got := cmd("FLUSHALL"); !strings.HasPrefix(got, "-ERR denied by meshguard: ") || !strings.Contains(got, "web-to-cache") {
		t.Fatalf("FLUSHALL answered %q, want a meshguard error naming the rule", got)
	}
	// Same connection: still works, and FLUSHALL never reached redis.
	if got := cmd("GET", "k"); got != "$1\r\nv\r\n" {
		t.Fatalf("GET after the refused FLUSHALL: %q", got)
	}
	s.Close()
	rep := m.reports.next(t)
	if rep.AppProtocol != "redis" || rep.Verdict != "deny" || rep.DeniedRequests != 1 || !strings.Contains(rep.Decision, "web-to-cache") {
		t.Fatalf("report %+v", rep)
	}
	if p := rep.Proto(); p.GetVerdict() != "deny" || p.GetL7()["denied_requests"] != "1" || p.GetL7()["reason"] == "" {
		t.Fatalf("proto %v", p)
	}
}

func TestEnforcingHTTPMethods(t *testing.T) {
	var deletes atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete {
			deletes.Add(1)
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	m := enforcingMesh(t, 1, port)
	do := func(method string) string {
		t.Helper()
		s, err := m.client.Open(openCtx(t), m.peer, fmt.Sprintf(":%d", port))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		got, _ := roundTrip(s, []byte(method+" /items HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"))
		return string(got)
	}
	if got := do("GET"); !strings.HasPrefix(got, "HTTP/1.1 200") || !strings.HasSuffix(got, "ok") {
		t.Fatalf("GET: %q", got)
	}
	if rep := m.reports.next(t); rep.Verdict != "allow" || rep.RuleID != "shop/web-reads" {
		t.Fatalf("GET report %+v", rep)
	}
	got := do("DELETE")
	if !strings.HasPrefix(got, "HTTP/1.1 403 Forbidden") || !strings.Contains(got, "denied by meshguard: ") || !strings.Contains(got, "Connection: close") {
		t.Fatalf("DELETE: %q", got)
	}
	if deletes.Load() != 0 {
		t.Fatal("the refused DELETE reached the app")
	}
	if rep := m.reports.next(t); rep.Verdict != "deny" || rep.Reason != ReasonDenied {
		t.Fatalf("DELETE report %+v", rep)
	}
}

func TestEnforcingCutsFlowsNoRuleAllows(t *testing.T) {
	// An echo server on a port no rule names: admitted at the port level only provisionally
	// (rules are application-scoped), then cut once the bytes are seen; nothing reaches it.
	app := echoServer(t)
	m := enforcingMesh(t, 1, 2)
	s, err := m.client.Open(openCtx(t), m.peer, fmt.Sprintf(":%d", app.Port))
	if err == nil {
		got, _ := roundTrip(s, []byte("*1\r\n$4\r\nPING\r\n"))
		s.Close()
		// Redis by its bytes: refused in Redis terms, and the echo server never answered.
		if string(got) != "-ERR denied by meshguard: no rule matched: group shop/redis is in protect mode\r\n" {
			t.Fatalf("refused flow answered %q", got)
		}
	}
	rep := m.reports.next(t)
	if rep.Verdict != "deny" || !strings.Contains(rep.Decision, "no rule matched") || !strings.Contains(rep.Decision, "protect") {
		t.Fatalf("report %+v", rep)
	}
}

func TestWholeRESP(t *testing.T) {
	for in, want := range map[string]int{
		"*1\r\n$4\r\nPING\r\n":                     1,
		"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n": 2,
		"PING\r\n":            1,
		"*1\r\n$4\r\nPIN":     -1,
		"*2\r\n$3\r\nGET\r\n": -1,
		"*1\r\n$-5\r\n":       -1,
		"PING":                -1,
	} {
		if got := wholeRESP([]byte(in)); got != want {
			t.Errorf("wholeRESP(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestNativeRefusals(t *testing.T) {
	d := policy.Decision{Verdict: policy.Deny, Reason: policy.ReasonDenyRule, RuleID: "shop/no\r\nx"}
	if got := string(nativeRefusal("redis", d.String())); got != "-ERR denied by meshguard: denied by rule shop/no  x\r\n" {
		t.Errorf("redis: %q", got)
	}
	pg := nativeRefusal("postgresql", d.String())
	if pg[0] != 'E' || int(pg[1])<<24|int(pg[2])<<16|int(pg[3])<<8|int(pg[4]) != len(pg)-1 || !strings.Contains(string(pg), "C42501\x00") {
		t.Errorf("postgres: %q", pg)
	}
	my := nativeRefusal("mysql", d.String())
	if int(my[0])|int(my[1])<<8|int(my[2])<<16 != len(my)-4 || my[4] != 0xff {
		t.Errorf("mysql: %q", my)
	}
	if nativeRefusal("grpc", d.String()) != nil {
		t.Error("grpc streams are reset, not answered")
	}
}

// skipRESP reads one RESP value (any type, nested) and throws it away.
func skipRESP(r *bufio.Reader) error {
	line, err := r.ReadString('\n')
	if err != nil || len(line) < 3 {
		return fmt.Errorf("resp line %q: %v", line, err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
	switch line[0] {
	case '$', '=', '!':
		if n >= 0 {
			_, err = io.CopyN(io.Discard, r, int64(n)+2)
		}
		return err
	case '*', '~', '>':
	case '%', '|':
		n *= 2
	default:
		return nil
	}
	for range n {
		if err := skipRESP(r); err != nil {
			return err
		}
	}
	return nil
}

func TestEnforcingMonitorPassesWithViolation(t *testing.T) {
	view, index := enforceViewOf(t, strings.Replace(fmt.Sprintf(enforcePolicy, 6379, 8080), "mode: protect", "mode: monitor", 1))
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	o := fromWeb(EnforcingInspector(eng, view, index), 6379)
	for _, c := range []string{"*1\r\n$4\r\nPING\r\n", "*1\r\n$8\r\nFLUSHALL\r\n"} {
		if err := o.FromClient([]byte(c)); err != nil {
			t.Fatalf("monitor mode refused %q: %v", c, err)
		}
	}
	o.Close()
	var r ConnReport
	o.(Annotator).Annotate(&r)
	if r.Verdict != "allow" || r.RuleID != "" || r.L7["violation"] != "true" || !strings.Contains(r.Decision, "monitor") || r.DeniedRequests != 0 {
		t.Fatalf("report %+v", r)
	}
}

func TestEnforcingRefusesSQLVerbWithErrorResponse(t *testing.T) {
	view, index := enforceViewOf(t, fmt.Sprintf(enforcePolicy, 6379, 8080)+`---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: web-db, namespace: shop}
spec: {from: {group: web}, to: {group: redis}, ports: [tcp/5432], applications: [postgres], action: allow,
  l7: {sql: {denyVerbs: [DROP]}}}
`)
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	o := fromWeb(EnforcingInspector(eng, view, index), 5432)
	defer o.Close()
	params := "user\x00web\x00database\x00shop\x00\x00"
	startup := binary.BigEndian.AppendUint32(nil, uint32(8+len(params)))
	startup = append(binary.BigEndian.AppendUint32(startup, 196608), params...)
	if err := o.FromClient(startup); err != nil {
		t.Fatalf("startup refused: %v", err)
	}
	query := func(q string) []byte {
		return append(binary.BigEndian.AppendUint32([]byte{'Q'}, uint32(4+len(q)+1)), q+"\x00"...)
	}
	if err := o.FromClient(query("SELECT 1")); err != nil {
		t.Fatalf("SELECT refused: %v", err)
	}
	err = o.FromClient(query("DROP TABLE items"))
	var r Replier
	if !errors.As(err, &r) || r.Reply()[0] != 'E' || !strings.Contains(string(r.Reply()), "C42501\x00") ||
		!strings.Contains(string(r.Reply()), "denied by meshguard: ") || !strings.Contains(string(r.Reply()), "web-db") {
		t.Fatalf("DROP: %v", err)
	}
}
