package events

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func threat(name string) Event {
	return Event{Kind: KindThreat, Time: time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC), Name: name,
		Severity: SeverityHigh, Action: "block", Reason: `payload "x" in ]query[`,
		Source:      Endpoint{Workload: "shop/web-1", Identity: "spiffe://mesh/ns/shop/sa/web", Group: "shop/web"},
		Destination: Endpoint{Workload: "shop/api-0", Address: "10.0.0.9:8080"},
		Evidence:    []byte("id=1' OR 1=1--"), CaptureRef: "20261125T030000Z-0123456789ab"}
}

// blockingExporter blocks every Export until released.
type blockingExporter struct {
	name    string
	entered chan struct{}
	release chan struct{}
	got     atomic.Int64
}

func (b *blockingExporter) Name() string { return b.name }
func (b *blockingExporter) Export(ctx context.Context, _ Event) error {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	b.got.Add(1)
	return nil
}

// chanExporter hands every event to a channel.
type chanExporter struct {
	name string
	ch   chan Event
	err  error
}

func (c *chanExporter) Name() string { return c.name }
func (c *chanExporter) Export(_ context.Context, e Event) error {
	c.ch <- e
	return c.err
}

func TestPipelineSlowExporterBlocksNobody(t *testing.T) {
	ctx, cancel := context.WithCancel(testCtx(t))
	slow := &blockingExporter{name: "slow", entered: make(chan struct{}, 1), release: make(chan struct{})}
	fast := &chanExporter{name: "fast", ch: make(chan Event, 1000)}
	reg := prometheus.NewRegistry()
	const capacity = 16
	p, err := NewPipeline(PipelineConfig{Exporters: []Exporter{slow, fast}, Capacity: capacity, Registry: reg, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()

	n := 0
	// Each event is emitted, then awaited at the fast exporter, so only the slow queue fills.
	emit := func(k int) {
		t.Helper()
		for range k {
			returned := make(chan struct{})
			go func() {
				p.Emit(ctx, threat(strconv.Itoa(n)))
				close(returned)
			}()
			select {
			case <-returned:
			case <-time.After(5 * time.Second):
				t.Fatal("Emit blocked behind a slow exporter")
			}
			select {
			case e := <-fast.ch:
				if e.Name != strconv.Itoa(n) {
					t.Fatalf("fast got %q, want %d", e.Name, n)
				}
			case <-ctx.Done():
				t.Fatal("fast exporter starved")
			}
			n++
		}
	}
	emit(1)
	<-slow.entered // slow now holds event 0 in Export, forever
	emit(capacity) // fills slow's queue exactly
	emit(20)       // all dropped for slow, delivered by fast
	if d := p.Dropped("slow", DropQueueFull); d != 20 {
		t.Fatalf("slow queue_full drops = %v, want 20", d)
	}
	if d := p.Dropped("fast", DropQueueFull); d != 0 {
		t.Fatalf("fast drops = %v", d)
	}
	mfs, _ := reg.Gather()
	if txt := metricsText(mfs); !strings.Contains(txt, "meshguard_events_dropped_total") || !strings.Contains(txt, "meshguard_events_total") {
		t.Fatal("drop counter not registered on the given registry")
	}
	close(slow.release)
	cancel()
	<-done
	p.Emit(context.Background(), threat("late"))
	if p.Dropped("fast", DropStopped) < 1 {
		t.Fatal("events after stop must be counted as dropped")
	}
}

func metricsText(mfs any) string {
	b, _ := json.Marshal(mfs)
	return string(b)
}

func TestPipelineCountsFailures(t *testing.T) {
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	bad := &chanExporter{name: "bad", ch: make(chan Event, 1), err: errors.New("boom")}
	p, err := NewPipeline(PipelineConfig{Exporters: []Exporter{bad}, Registry: prometheus.NewRegistry(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	go p.Run(ctx)
	p.Emit(ctx, threat("x"))
	<-bad.ch
	deadline := time.Now().Add(5 * time.Second)
	for p.Dropped("bad", DropFailed) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("export failure not counted")
		}
		time.Sleep(time.Millisecond) // polling a counter, not synchronising work
	}
}

func TestWebhookSignsAndRetries(t *testing.T) {
	secret := []byte("s3cret")
	var calls atomic.Int32
	got := make(chan Event, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !VerifySignature(secret, body, r.Header.Get(HeaderSignature)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if r.Header.Get(HeaderTimestamp) == "" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "headers", http.StatusBadRequest)
			return
		}
		if calls.Add(1) <= 2 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		var e Event
		if err := json.Unmarshal(body, &e); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- e
	}))
	defer srv.Close()
	clk := clockwork.NewFakeClock()
	wh, err := NewWebhook(WebhookConfig{URL: srv.URL, Secret: secret, Clock: clk, Backoff: time.Second, Jitter: func() float64 { return 0.5 }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	res := make(chan error, 1)
	go func() { res <- wh.Export(ctx, threat("sqli")) }()
	// Two failures: waits of 0.75s (1s backoff, jitter 0.5) then 1.5s (2s backoff).
	for _, d := range []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond} {
		if err := clk.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(d - time.Nanosecond)
		select {
		case <-res:
			t.Fatal("retried before the backoff elapsed")
		default:
		}
		clk.Advance(time.Nanosecond)
	}
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	e := <-got
	if e.Name != "sqli" || string(e.Evidence) != "id=1' OR 1=1--" || calls.Load() != 3 {
		t.Fatalf("delivered %+v after %d calls", e, calls.Load())
	}

	// A wrong secret is rejected with 401: permanent, not retried.
	calls.Store(10)
	bad, _ := NewWebhook(WebhookConfig{URL: srv.URL, Secret: []byte("wrong"), Clock: clk})
	if err := bad.Export(ctx, threat("x")); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong secret: %v", err)
	}
}

func TestWebhookGivesUpAfterMaxAttempts(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	clk := clockwork.NewFakeClock()
	wh, _ := NewWebhook(WebhookConfig{URL: srv.URL, Secret: []byte("k"), Clock: clk, MaxAttempts: 3})
	ctx := testCtx(t)
	res := make(chan error, 1)
	go func() { res <- wh.Export(ctx, threat("x")) }()
	for range 2 {
		if err := clk.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Minute)
	}
	if err := <-res; err == nil || calls.Load() != 3 {
		t.Fatalf("err %v after %d calls, want failure after 3", err, calls.Load())
	}
	if _, err := NewWebhook(WebhookConfig{URL: srv.URL, Clock: clk}); err == nil {
		t.Fatal("webhook without a secret accepted")
	}
}

// syslogRE parses what FormatRFC5424 emits.
var syslogRE = regexp.MustCompile(`^<(\d+)>1 (\S+) (\S+) (\S+) - (\S+) \[meshguard@32473((?: \w+="(?:[^"\\\]]|\\["\\\]])*")*)\] (.*)$`)
var sdParamRE = regexp.MustCompile(`(\w+)="((?:[^"\\\]]|\\["\\\]])*)"`)

func parseSyslog(t *testing.T, msg string) (pri int, params map[string]string, text string) {
	t.Helper()
	m := syslogRE.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("not RFC 5424: %q", msg)
	}
	pri, _ = strconv.Atoi(m[1])
	if _, err := time.Parse(time.RFC3339Nano, m[2]); err != nil {
		t.Fatalf("timestamp %q: %v", m[2], err)
	}
	params = map[string]string{}
	for _, p := range sdParamRE.FindAllStringSubmatch(m[6], -1) {
		params[p[1]] = strings.NewReplacer(`\"`, `"`, `\\`, `\`, `\]`, `]`).Replace(p[2])
	}
	return pri, params, m[7]
}

func checkSyslog(t *testing.T, msg string) {
	t.Helper()
	pri, params, text := parseSyslog(t, msg)
	if pri != 16*8+3 {
		t.Fatalf("PRI = %d, want local0.err (131)", pri)
	}
	want := map[string]string{"kind": "threat", "name": "sqli", "severity": "high", "action": "block",
		"src": "shop/web-1", "dstAddr": "10.0.0.9:8080", "reason": `payload "x" in ]query[`,
		"evidenceB64": "aWQ9MScgT1IgMT0xLS0=", "captureRef": "20261125T030000Z-0123456789ab"}
	for k, v := range want {
		if params[k] != v {
			t.Fatalf("SD param %s = %q, want %q (all: %v)", k, params[k], v, params)
		}
	}
	if !strings.HasPrefix(text, "sqli: block") {
		t.Fatalf("msg = %q", text)
	}
}

func TestSyslogUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s, err := NewSyslog(SyslogConfig{Network: "udp", Addr: pc.LocalAddr().String(), Hostname: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Export(testCtx(t), threat("sqli")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	checkSyslog(t, string(buf[:n]))
}

func TestSyslogTCPOctetCountingAndRedial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	msgs := make(chan string, 10)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r := bufio.NewReader(c)
			for {
				lenStr, err := r.ReadString(' ')
				if err != nil {
					break
				}
				n, err := strconv.Atoi(strings.TrimSpace(lenStr))
				if err != nil {
					msgs <- "bad frame: " + lenStr
					break
				}
				b := make([]byte, n)
				if _, err := io.ReadFull(r, b); err != nil {
					break
				}
				msgs <- string(b)
				c.Close() // force the exporter to redial for the next message
				break
			}
		}
	}()
	s, err := NewSyslog(SyslogConfig{Network: "tcp", Addr: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := testCtx(t)
	if err := s.Export(ctx, threat("sqli")); err != nil {
		t.Fatal(err)
	}
	checkSyslog(t, <-msgs)
	// The server closed the connection; the next export must still arrive (maybe after one
	// failed write on the dead connection and a redial).
	for i := 0; ; i++ {
		if err := s.Export(ctx, threat("sqli")); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-msgs:
			checkSyslog(t, m)
			return
		case <-time.After(200 * time.Millisecond):
			if i > 10 {
				t.Fatal("no message after redial")
			}
		}
	}
}

func TestJSONLines(t *testing.T) {
	var b bytes.Buffer
	j := NewJSONLines("stdout", &b)
	for _, n := range []string{"a", "b"} {
		if err := j.Export(context.Background(), threat(n)); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	var e Event
	if len(lines) != 2 || json.Unmarshal([]byte(lines[1]), &e) != nil || e.Name != "b" {
		t.Fatalf("jsonl = %q", b.String())
	}
}

func FuzzFormatRFC5424(f *testing.F) {
	f.Add("sqli", `a"b]c\d`, "ns/pod", []byte("\x00\xff"))
	f.Add("", "\n\r", "\xff\xfe", []byte(nil))
	f.Fuzz(func(t *testing.T, name, reason, wl string, ev []byte) {
		e := Event{Kind: KindThreat, Name: name, Reason: reason, Source: Endpoint{Workload: wl}, Evidence: ev, Time: time.Unix(1, 0)}
		msg := string(FormatRFC5424(e, 16, "h", "meshguard"))
		if !utf8.ValidString(msg) || strings.ContainsAny(msg, "\n\r") {
			t.Fatalf("invalid message %q", msg)
		}
		_, params, _ := parseSyslog(t, msg)
		if params["kind"] != "threat" {
			t.Fatalf("kind param lost in %q", msg)
		}
	})
}

func TestWebhookErrorsDoNotNameTheURL(t *testing.T) {
	// Nothing listens on this port: the listener is closed before the export.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	const token = "T000-B000-s3cr3tT0ken"
	wh, err := NewWebhook(WebhookConfig{URL: "http://" + addr + "/services/" + token + "?key=" + token, Secret: []byte("k"), Clock: clockwork.NewFakeClock(), MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	err = wh.Export(testCtx(t), threat("x"))
	if err == nil {
		t.Fatal("export to a closed port succeeded")
	}
	if strings.Contains(err.Error(), token) {
		t.Fatalf("error leaks the webhook URL's token: %v", err)
	}
	if !strings.Contains(err.Error(), "webhook:"+addr) {
		t.Fatalf("error does not say which webhook failed: %v", err)
	}
}
