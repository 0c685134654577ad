package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
)

func newManager(t testing.TB, mod func(*Config)) (*Manager, *clockwork.FakeClock) {
	t.Helper()
	clk := clockwork.NewFakeClockAt(time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC))
	cfg := Config{Dir: filepath.Join(t.TempDir(), "caps"), Clock: clk, Log: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m, clk
}

func conn(id, wl string, port uint16) ConnInfo {
	return ConnInfo{ID: id, Workload: wl, Client: netip.AddrPortFrom(netip.MustParseAddr("10.1.0.2"), port),
		Server: netip.MustParseAddrPort("10.1.0.3:80")}
}

// finishCapture advances the fake clock past After and waits for the pcap.
func finishCapture(t *testing.T, m *Manager, clk *clockwork.FakeClock, id string, d time.Duration) string {
	t.Helper()
	clk.Advance(d)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Wait(ctx, id); err != nil {
		t.Fatal(err)
	}
	rc, err := m.Store().Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	f := filepath.Join(t.TempDir(), id+".pcap")
	b, _ := io.ReadAll(rc)
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestTriggerWritesHistoryAndAfter(t *testing.T) {
	m, clk := newManager(t, func(c *Config) { c.After = 5 * time.Second })
	r := m.Open(conn("c1", "shop/api-0", 40001))
	_ = r.FromClient([]byte("GET /before HTTP/1.1\r\nHost: api\r\n\r\n"))
	_ = r.FromServer([]byte("HTTP/1.1 204 No Content\r\n\r\n"))
	clk.Advance(time.Second)
	id, err := m.Trigger(Request{ConnID: "c1", Reason: "sqli"})
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	_ = r.FromClient([]byte("GET /after?id=1%27%20OR%201=1 HTTP/1.1\r\nHost: api\r\n\r\n"))
	_ = r.FromServer([]byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"))
	r.Close()
	f := finishCapture(t, m, clk, id, 5*time.Second)
	got := tshark(t, f, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri")
	if got != "/before\n/after?id=1%27%20OR%201=1\n" {
		t.Fatalf("requests in capture = %q", got)
	}
	if n := strings.Count(tshark(t, f, "-Y", "tcp.flags.fin==1"), "\n"); n != 2 {
		t.Fatalf("closed connection should end with FINs, got %d", n)
	}
	if bad := tshark(t, f, "-Y", "_ws.expert.severity >= warning || _ws.malformed"); bad != "" {
		t.Fatalf("tshark reports problems:\n%s", bad)
	}
	info, err := m.Store().Get(id)
	if err != nil || info.Reason != "sqli" || info.Connections != 1 || info.ConnIDs[0] != "c1" {
		t.Fatalf("info = %+v, %v", info, err)
	}
	// Writes after the capture ended are not in it (and do not panic on a closed recorder).
	_ = r.FromClient([]byte("late"))
}

func TestWorkloadCaptureJoinsNewConnections(t *testing.T) {
	m, clk := newManager(t, nil)
	old := m.Open(conn("a", "ns/pod", 40010))
	other := m.Open(conn("b", "ns/other", 40011))
	_ = old.FromClient([]byte("GET /history HTTP/1.1\r\nHost: x\r\n\r\n"))
	id, err := m.Trigger(Request{Workload: "ns/pod", After: 30 * time.Second, NoHistory: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = old.FromClient([]byte("GET /old HTTP/1.1\r\nHost: x\r\n\r\n"))
	_ = other.FromClient([]byte("GET /other HTTP/1.1\r\nHost: x\r\n\r\n"))
	nw := m.Open(conn("c", "ns/pod", 40012))
	_ = nw.FromClient([]byte("GET /new HTTP/1.1\r\nHost: x\r\n\r\n"))
	f := finishCapture(t, m, clk, id, 30*time.Second)
	got := tshark(t, f, "-Y", "http.request", "-T", "fields", "-e", "tcp.srcport", "-e", "http.request.uri")
	if got != "40010\t/old\n40012\t/new\n" {
		t.Fatalf("on-demand capture = %q (want only the workload's traffic after the start)", got)
	}
}

// denyAll is an inspection observer that refuses every client chunk.
type denyAll struct{ closed bool }

func (d *denyAll) FromClient([]byte) error { return errors.New("sqli") }
func (d *denyAll) FromServer([]byte) error { return nil }
func (d *denyAll) Close()                  { d.closed = true }

func TestTriggerAfterBlockedConnectionClosed(t *testing.T) {
	m, clk := newManager(t, func(c *Config) { c.After = time.Second })
	r := m.Open(conn("blocked", "shop/web-1", 40100))
	next := &denyAll{}
	obs := r.Tee(next)
	if err := obs.FromClient([]byte("GET /?q=%27%20OR%201=1-- HTTP/1.1\r\nHost: api\r\n\r\n")); err == nil {
		t.Fatal("tee must return the inspector's verdict")
	}
	obs.Close() // the sidecar cut the stream
	if !next.closed {
		t.Fatal("tee did not close the inspector")
	}
	clk.Advance(m.cfg.Linger - time.Millisecond)
	id, err := m.Trigger(Request{ConnID: "blocked", Reason: "sqli"})
	if err != nil {
		t.Fatalf("trigger within linger: %v", err)
	}
	f := finishCapture(t, m, clk, id, time.Second)
	if got := tshark(t, f, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri"); got != "/?q=%27%20OR%201=1--\n" {
		t.Fatalf("blocked request in capture = %q", got)
	}
	if n := strings.Count(tshark(t, f, "-Y", "tcp.flags.fin==1"), "\n"); n != 2 {
		t.Fatalf("closed connection should end with FINs, got %d", n)
	}
	// Past the linger, the connection is gone and its budget is back.
	clk.Advance(m.cfg.Linger)
	if _, err := m.Trigger(Request{ConnID: "blocked"}); !errors.Is(err, ErrNoConnections) {
		t.Fatalf("after linger: %v", err)
	}
	if st := m.Stats(); st.BufferedBytes != 0 || st.Lingering != 0 || st.Open != 0 || st.Recording != 0 {
		t.Fatalf("after linger: %+v", st)
	}
}

func TestCaptureWorkloadOnDemand(t *testing.T) {
	m, clk := newManager(t, nil)
	r := m.Open(conn("x", "ns/pod", 40200))
	_ = r.FromClient([]byte("GET /history HTTP/1.1\r\nHost: x\r\n\r\n"))
	type result struct {
		info Info
		err  error
	}
	var buf bytes.Buffer
	res := make(chan result, 1)
	go func() {
		info, err := m.CaptureWorkload(context.Background(), "ns/pod", 30*time.Second, &buf)
		res <- result{info, err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err != nil { // the capture's timer is armed
		t.Fatal(err)
	}
	_ = r.FromClient([]byte("GET /during HTTP/1.1\r\nHost: x\r\n\r\n"))
	clk.Advance(30 * time.Second)
	got := <-res
	if got.err != nil || got.info.Connections != 1 || got.info.Reason != "on-demand" {
		t.Fatalf("info %+v err %v", got.info, got.err)
	}
	f := filepath.Join(t.TempDir(), "out.pcap")
	if err := os.WriteFile(f, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if uris := tshark(t, f, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri"); uris != "/during\n" {
		t.Fatalf("on-demand capture = %q", uris)
	}
}

func TestTriggerFoldsRepeatsAndIsBounded(t *testing.T) {
	m, _ := newManager(t, func(c *Config) { c.MaxRecording = 2 })
	for _, id := range []string{"a", "b", "c"} {
		m.Open(conn(id, "w", 1))
	}
	first, err := m.Trigger(Request{ConnID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := m.Trigger(Request{ConnID: "a"}); err != nil || again != first {
		t.Fatalf("repeat trigger = %q, %v; want the recording capture %q", again, err, first)
	}
	if _, err := m.Trigger(Request{ConnID: "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Trigger(Request{ConnID: "c"}); !errors.Is(err, ErrBusy) {
		t.Fatalf("third concurrent capture: %v, want ErrBusy", err)
	}
}

func TestMetrics(t *testing.T) {
	m, _ := newManager(t, func(c *Config) { c.GlobalBytes = 1 << 20 })
	reg := prometheus.NewRegistry()
	if err := m.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	r := m.Open(conn("a", "w", 1))
	_ = r.FromClient([]byte("hello"))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	if got["meshguard_capture_connections"] != 1 || got["meshguard_capture_buffered_bytes"] != 4096 || got["meshguard_capture_budget_bytes"] != 1<<20 {
		t.Fatalf("metrics %v", got)
	}
}

func TestTriggerUnknownConn(t *testing.T) {
	m, _ := newManager(t, nil)
	if _, err := m.Trigger(Request{ConnID: "nope"}); !errors.Is(err, ErrNoConnections) {
		t.Fatalf("err = %v", err)
	}
}

func TestRingBounds(t *testing.T) {
	m, clk := newManager(t, func(c *Config) { c.PerConnBytes = 1000; c.GlobalBytes = 1500; c.Window = 10 * time.Second })
	a := m.Open(conn("a", "w", 1))
	for i := range 50 {
		_ = a.FromClient(bytes.Repeat([]byte{byte('a' + i%26)}, 100))
	}
	if n := a.Buffered(); n != 1000 {
		t.Fatalf("per-connection bound: buffered %d, want 1000", n)
	}
	snap := a.ring.snapshot()
	if len(snap) != 10 || snap[9].Data[0] != byte('a'+49%26) {
		t.Fatalf("ring must keep the newest 10 chunks, got %d", len(snap))
	}
	// A second connection only gets what the global budget has left.
	b := m.Open(conn("b", "w", 2))
	_ = b.FromServer(bytes.Repeat([]byte("z"), 900))
	if n := b.Buffered(); n != 500 {
		t.Fatalf("global bound: second ring holds %d, want 500", n)
	}
	// Closing the first frees its budget for others, once its linger has passed.
	a.Close()
	clk.Advance(m.cfg.Linger)
	c := m.Open(conn("c", "w", 3))
	_ = c.FromClient(bytes.Repeat([]byte("y"), 900))
	if n := c.Buffered(); n != 900 {
		t.Fatalf("after close, third ring holds %d, want 900", n)
	}
	// A huge single write keeps its newest bytes.
	big := append(bytes.Repeat([]byte("o"), 5000), []byte("TAIL")...)
	_ = c.FromClient(big)
	s := c.ring.snapshot()
	if last := s[len(s)-1].Data; !bytes.HasSuffix(last, []byte("TAIL")) {
		t.Fatalf("huge write lost its tail")
	}
	// Time window: history older than Window is dropped.
	clk.Advance(11 * time.Second)
	_ = c.FromClient([]byte("fresh"))
	if s := c.ring.snapshot(); len(s) != 1 || string(s[0].Data) != "fresh" {
		t.Fatalf("window expiry kept %d chunks", len(s))
	}
}

func TestStoreRetentionAndPermissions(t *testing.T) {
	m, clk := newManager(t, func(c *Config) { c.MaxFiles = 2; c.After = time.Second })
	var ids []string
	for i := range 3 {
		r := m.Open(conn(fmt.Sprint(i), "w", uint16(100+i)))
		_ = r.FromClient([]byte("hello"))
		id, err := m.Trigger(Request{ConnID: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		finishCapture(t, m, clk, id, time.Second)
		ids = append(ids, id)
	}
	list, err := m.Store().List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != ids[1] || list[1].ID != ids[2] {
		t.Fatalf("retention kept %+v, want the newest two of %v", list, ids)
	}
	st, _ := os.Stat(m.cfg.Dir)
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v", st.Mode().Perm())
	}
	for _, ext := range []string{".pcap", ".json"} {
		st, err := os.Stat(filepath.Join(m.cfg.Dir, ids[2]+ext))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v %v", ext, st.Mode().Perm(), err)
		}
	}
	if _, err := m.Store().Open("../../etc/passwd"); err == nil {
		t.Fatal("path traversal id accepted")
	}
}

func TestConcurrentWriters(t *testing.T) {
	m, clk := newManager(t, func(c *Config) { c.PerConnBytes = 4096; c.GlobalBytes = 1 << 20 })
	var wg sync.WaitGroup
	recs := make([]*Recorder, 8)
	for i := range recs {
		recs[i] = m.Open(conn(fmt.Sprint(i), "w", uint16(2000+i)))
	}
	id, err := m.Trigger(Request{Workload: "w"})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 500 {
				_ = r.FromClient([]byte("client-bytes-"))
			}
		}()
		go func() {
			defer wg.Done()
			for j := range 500 {
				_ = r.FromServer([]byte("server-bytes-"))
				if i == 0 && j == 250 {
					_, _ = m.Trigger(Request{ConnID: "3"})
				}
			}
			r.Close()
		}()
	}
	wg.Wait()
	f := finishCapture(t, m, clk, id, m.cfg.After)
	if got := strings.Count(tshark(t, f, "-Y", "tcp.flags.syn==1 && tcp.flags.ack==0"), "\n"); got != 8 {
		t.Fatalf("capture has %d connections, want 8", got)
	}
}

func BenchmarkRecorderWrite(b *testing.B) {
	m, _ := newManager(b, func(c *Config) { c.PerConnBytes = 64 << 10 })
	r := m.Open(conn("bench", "w", 1))
	p := bytes.Repeat([]byte("x"), 1024)
	for range 200 { // warm the ring to its full size
		_ = r.FromClient(p)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	b.ResetTimer()
	for range b.N {
		_ = r.FromClient(p)
	}
}

func TestConfigNamesTheBadField(t *testing.T) {
	base := Config{Dir: t.TempDir(), Clock: clockwork.NewFakeClock(), Log: slog.New(slog.DiscardHandler)}
	for field, mod := range map[string]func(*Config){
		"PerConnBytes": func(c *Config) { c.PerConnBytes = -1 },
		"GlobalBytes":  func(c *Config) { c.GlobalBytes = -1 },
		"MaxFiles":     func(c *Config) { c.MaxFiles = -1 },
		"MaxBytes":     func(c *Config) { c.MaxBytes = -1 },
	} {
		cfg := base
		mod(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "Config."+field) {
			t.Errorf("negative %s: error %v does not name the field", field, err)
		}
	}
	if _, err := New(base); err != nil {
		t.Fatalf("defaults rejected: %v", err)
	}
}

// TestHistoryOff: without history the rings stay empty (no memory, no copy), and a capture
// still records what follows its trigger.
func TestHistoryOff(t *testing.T) {
	m, clk := newManager(t, func(c *Config) { c.After = 5 * time.Second })
	m.SetHistory(false)
	r := m.Open(conn("c1", "shop/api-0", 40001))
	_ = r.FromClient([]byte("GET /before HTTP/1.1\r\nHost: api\r\n\r\n"))
	if n := r.Buffered(); n != 0 {
		t.Fatalf("ring holds %d bytes with history off", n)
	}
	id, err := m.Trigger(Request{ConnID: "c1", Reason: "sqli"})
	if err != nil {
		t.Fatal(err)
	}
	_ = r.FromClient([]byte("GET /after HTTP/1.1\r\nHost: api\r\n\r\n"))
	r.Close()
	f := finishCapture(t, m, clk, id, 5*time.Second)
	if got := tshark(t, f, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri"); got != "/after\n" {
		t.Fatalf("requests in capture = %q, want only the one after the trigger", got)
	}
	m.SetHistory(true)
	r2 := m.Open(conn("c2", "shop/api-0", 40002))
	_ = r2.FromClient([]byte("GET / HTTP/1.1\r\n\r\n"))
	if r2.Buffered() == 0 {
		t.Fatal("history back on, but the ring is empty")
	}
}
