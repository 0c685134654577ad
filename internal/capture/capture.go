// Package capture records the decrypted plaintext of each proxied connection in a bounded
// ring (both directions, timestamped) and, on a trigger, writes what it holds plus the next
// few seconds as a pcap re-framed as TCP/IP (or UDP for datagrams) with the connection's real
// addresses, so Wireshark and tshark open it although the wire carried only mTLS.
//
// The sidecar opens one Recorder per stream; a Recorder is a sidecar.StreamObserver:
//
//	mgr, _ := capture.New(capture.Config{Dir: "/var/lib/meshguard/captures", Clock: clk, Log: log})
//	inspect := func(ctx context.Context, s sidecar.StreamInfo) sidecar.StreamObserver {
//		return mgr.Open(capture.ConnInfo{ID: connID, Workload: "ns/pod", Client: s.SourceAddr, Server: s.Dest})
//	}
//	id, _ := mgr.Trigger(capture.Request{ConnID: connID, Reason: "sqli"}) // written After later
//	id, _ := mgr.Trigger(capture.Request{Workload: "ns/pod", After: 30 * time.Second, NoHistory: true})
//	mgr.Wait(ctx, id); rc, _ := mgr.Store().Open(id)
//
// Bounds: each connection keeps at most PerConnBytes and Window of history; all rings share
// GlobalBytes (a connection that finds the budget spent records nothing until bytes free up);
// a triggered capture holds at most MaxCaptureBytes; the directory keeps MaxFiles/MaxBytes.
package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
)

// Config configures a Manager; zero bounds take the defaults noted.
type Config struct {
	Dir   string // capture store directory (created 0700)
	Clock clockwork.Clock
	Log   *slog.Logger

	PerConnBytes    int           // ring size per connection; default 256 KiB
	GlobalBytes     int64         // all rings together; default 64 MiB
	Window          time.Duration // history kept per connection; default 30s
	After           time.Duration // recording after a trigger; default 10s
	MaxCaptureBytes int           // payload bytes one capture holds; default 32 MiB
	MaxRecording    int           // captures recording at once; default 32
	Linger          time.Duration // a closed connection's ring stays triggerable this long; default 15s
	MaxLinger       int           // closed connections kept lingering; default 1024
	MaxFiles        int           // captures kept on disk; default 100
	MaxBytes        int64         // pcap bytes kept on disk; default 1 GiB
}

func (c *Config) defaults() {
	if c.PerConnBytes == 0 {
		c.PerConnBytes = 256 << 10
	}
	if c.GlobalBytes == 0 {
		c.GlobalBytes = 64 << 20
	}
	if c.Window == 0 {
		c.Window = 30 * time.Second
	}
	if c.After == 0 {
		c.After = 10 * time.Second
	}
	if c.MaxCaptureBytes == 0 {
		c.MaxCaptureBytes = 32 << 20
	}
	if c.MaxRecording == 0 {
		c.MaxRecording = 32
	}
	if c.Linger == 0 {
		c.Linger = 15 * time.Second
	}
	if c.MaxLinger == 0 {
		c.MaxLinger = 1024
	}
	if c.MaxFiles == 0 {
		c.MaxFiles = 100
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 1 << 30
	}
}

func (c Config) validate() error {
	if c.Clock == nil || c.Log == nil {
		return errors.New("capture: clock and logger are required (set Config.Clock and Config.Log)")
	}
	for _, f := range [...]struct {
		name string
		v    int64
	}{
		{"PerConnBytes", int64(c.PerConnBytes)}, {"GlobalBytes", c.GlobalBytes},
		{"MaxCaptureBytes", int64(c.MaxCaptureBytes)}, {"MaxRecording", int64(c.MaxRecording)},
		{"MaxLinger", int64(c.MaxLinger)}, {"MaxFiles", int64(c.MaxFiles)}, {"MaxBytes", c.MaxBytes},
	} {
		if f.v < 0 {
			return fmt.Errorf("capture: Config.%s is %d; use 0 for the default or a positive bound", f.name, f.v)
		}
	}
	if c.Window < 0 || c.After < 0 || c.Linger < 0 {
		return fmt.Errorf("capture: window (%v), after (%v) and linger (%v) must not be negative", c.Window, c.After, c.Linger)
	}
	return nil
}

// ConnInfo identifies one connection: its ID (what threat events name), the workload it
// belongs to ("namespace/pod"), the transport and the real 5-tuple written into the pcap.
type ConnInfo struct {
	ID       string
	Workload string
	Proto    Proto
	Client   netip.AddrPort
	Server   netip.AddrPort
}

// Manager owns the recorders of one sidecar (or node) and the capture store.
type Manager struct {
	cfg    Config
	store  *Store
	budget budget

	mu      sync.Mutex
	conns   map[string]*Recorder // by ConnInfo.ID, open and lingering
	linger  []*Recorder          // closed, oldest first, kept so a late trigger still finds them
	open    int                  // recorders opened and not closed
	pending map[string]*pending  // captures recording their "after" part, by capture ID
	done    map[string]chan struct{}
	results map[string]error

	noHistory atomic.Bool // rings are not filled (captures in progress still record)
}

// SetHistory turns the per-connection history rings on or off (on by default). With no rule
// that could trigger a capture, keeping every stream's last bytes is memory and copying
// for nothing; captures started meanwhile (on demand) still record from their start.
func (m *Manager) SetHistory(on bool) { m.noHistory.Store(!on) }

// New validates cfg and opens the store directory.
func New(cfg Config) (*Manager, error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	st, err := OpenStore(cfg.Dir, cfg.MaxFiles, cfg.MaxBytes)
	if err != nil {
		return nil, err
	}
	return &Manager{
		cfg: cfg, store: st, budget: budget{limit: cfg.GlobalBytes},
		conns: map[string]*Recorder{}, pending: map[string]*pending{},
		done: map[string]chan struct{}{}, results: map[string]error{},
	}, nil
}

// Store is the capture directory (list, open, delete).
func (m *Manager) Store() *Store { return m.store }

// Run waits for ctx, then writes every capture still recording so none is lost at shutdown.
func (m *Manager) Run(ctx context.Context) error {
	<-ctx.Done()
	m.mu.Lock()
	var ids []string
	for id := range m.pending {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	for _, id := range ids {
		m.finish(id)
	}
	return nil
}

// Stats is a snapshot for metrics and status.
type Stats struct {
	Open          int   // connections recording
	Lingering     int   // closed connections still triggerable
	Recording     int   // captures waiting for their After window
	BufferedBytes int64 // ring capacity held against GlobalBytes
	GlobalBytes   int64
}

// Stats returns the manager's current numbers.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	st := Stats{Open: m.open, Lingering: len(m.linger), Recording: len(m.pending)}
	m.mu.Unlock()
	m.budget.mu.Lock()
	st.BufferedBytes, st.GlobalBytes = m.budget.used, m.budget.limit
	m.budget.mu.Unlock()
	return st
}

// Recorder records one connection. FromClient/FromServer copy each chunk into the ring (and
// into any capture recording it); they never fail, so the stream is never cut by capture.
// It implements sidecar.StreamObserver; chain it with the inspection observer.
type Recorder struct {
	m    *Manager
	info ConnInfo

	mu       sync.Mutex
	ring     ring
	closed   bool
	closedAt time.Time
	attached []*pending
}

// Open starts recording a connection. IDs must be unique among open connections; reopening
// an open ID replaces the old recorder in the index (the old one keeps recording its ring).
func (m *Manager) Open(info ConnInfo) *Recorder {
	r := &Recorder{m: m, info: info}
	m.mu.Lock()
	expired := m.expireLocked(m.cfg.Clock.Now())
	defer func() {
		for _, x := range expired {
			x.free()
		}
	}()
	m.conns[info.ID] = r
	m.open++
	for _, p := range m.pending {
		if p.workload != "" && p.workload == info.Workload {
			p.add(r)
			r.attached = append(r.attached, p)
		}
	}
	m.mu.Unlock()
	return r
}

// FromClient records a chunk (or datagram) the client sent.
func (r *Recorder) FromClient(p []byte) error { r.record(true, p); return nil }

// FromServer records a chunk (or datagram) the server sent.
func (r *Recorder) FromServer(p []byte) error { r.record(false, p); return nil }

func (r *Recorder) record(fromClient bool, p []byte) {
	if len(p) == 0 {
		return
	}
	now := r.m.cfg.Clock.Now().UnixNano()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.ring.expire(now - int64(r.m.cfg.Window))
	if !r.m.noHistory.Load() {
		r.ring.put(now, fromClient, p, r.m.cfg.PerConnBytes, r.m.budget.take)
	}
	for _, pc := range r.attached {
		pc.append(r, now, fromClient, p)
	}
	r.mu.Unlock()
}

// Close ends the recording; captures recording this connection note its FIN. The ring
// lingers for Config.Linger so a trigger that arrives just after the connection was cut (a
// blocked attack) still captures it; then its bytes return to the global budget.
func (r *Recorder) Close() {
	now := r.m.cfg.Clock.Now()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.closedAt = now
	att := r.attached
	r.attached = nil
	r.mu.Unlock()
	for _, p := range att {
		p.closeConn(r)
	}
	m := r.m
	m.mu.Lock()
	m.linger = append(m.linger, r)
	m.open--
	expired := m.expireLocked(now)
	m.mu.Unlock()
	for _, x := range expired {
		x.free()
	}
}

// expireLocked drops lingering recorders past Linger or beyond MaxLinger; the caller frees
// them outside m.mu.
func (m *Manager) expireLocked(now time.Time) []*Recorder {
	n := 0
	for n < len(m.linger) && (len(m.linger)-n > m.cfg.MaxLinger || now.Sub(m.linger[n].closedAt) >= m.cfg.Linger) {
		r := m.linger[n]
		if m.conns[r.info.ID] == r {
			delete(m.conns, r.info.ID)
		}
		n++
	}
	out := append([]*Recorder(nil), m.linger[:n]...)
	m.linger = append(m.linger[:0], m.linger[n:]...)
	return out
}

// free returns the ring's bytes to the budget.
func (r *Recorder) free() {
	r.mu.Lock()
	freed := len(r.ring.buf)
	r.ring = ring{}
	r.mu.Unlock()
	r.m.budget.give(freed)
}

// Buffered returns how many bytes the recorder's ring holds.
func (r *Recorder) Buffered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ring.size()
}

// Request says what to capture: one connection (ConnID) or every connection of a workload,
// those open now and those opened while recording. The capture holds each connection's
// history (unless NoHistory) and what follows for After (Config.After when zero).
type Request struct {
	ConnID    string
	Workload  string
	Reason    string
	After     time.Duration
	NoHistory bool // on-demand captures start now
}

// ErrNoConnections is returned when a ConnID trigger names no open connection.
var ErrNoConnections = errors.New("capture: no open connection with that id")

// ErrBusy is returned when MaxRecording captures are already recording.
var ErrBusy = errors.New("capture: too many captures recording at once")

// Trigger starts a capture and returns its ID at once; the pcap is written to the store
// when After has passed on the clock (Wait blocks until then). A workload trigger with no
// open connections still records the connections the workload opens meanwhile. A trigger for
// a target (same ConnID, or same Workload) already recording returns that capture's ID: a
// burst of detections on one connection makes one capture.
func (m *Manager) Trigger(req Request) (string, error) {
	if req.ConnID == "" && req.Workload == "" {
		return "", errors.New("capture: request needs a ConnID or a Workload")
	}
	after := req.After
	if after <= 0 {
		after = m.cfg.After
	}
	now := m.cfg.Clock.Now()
	p := &pending{
		info:  Info{ID: newID(now), Created: now, Reason: req.Reason, Workload: req.Workload},
		limit: m.cfg.MaxCaptureBytes, conv: map[*Recorder]*Conversation{},
	}
	if req.ConnID == "" {
		p.workload = req.Workload
	}
	p.target = "conn:" + req.ConnID
	if req.ConnID == "" {
		p.target = "workload:" + req.Workload
	}
	m.mu.Lock()
	expired := m.expireLocked(now)
	defer func() {
		for _, x := range expired {
			x.free()
		}
	}()
	for id, other := range m.pending {
		if other.target == p.target && !req.NoHistory {
			m.mu.Unlock()
			return id, nil
		}
	}
	if len(m.pending) >= m.cfg.MaxRecording {
		m.mu.Unlock()
		return "", fmt.Errorf("%w (%d; raise Config.MaxRecording)", ErrBusy, m.cfg.MaxRecording)
	}
	var recs []*Recorder
	if req.ConnID != "" {
		if r, ok := m.conns[req.ConnID]; ok {
			recs = append(recs, r)
		}
	} else {
		for _, r := range m.conns {
			if r.info.Workload == req.Workload {
				recs = append(recs, r)
			}
		}
	}
	if req.ConnID != "" && len(recs) == 0 {
		m.mu.Unlock()
		return "", fmt.Errorf("%w: %q", ErrNoConnections, req.ConnID)
	}
	m.pending[p.info.ID] = p
	m.done[p.info.ID] = make(chan struct{})
	for _, r := range recs {
		p.add(r)
		r.mu.Lock()
		if !req.NoHistory {
			p.history(r, r.ring.snapshot())
		}
		if r.closed {
			p.closeConn(r)
		} else {
			r.attached = append(r.attached, p)
		}
		r.mu.Unlock()
	}
	m.mu.Unlock()
	id := p.info.ID
	m.cfg.Clock.AfterFunc(after, func() { m.finish(id) })
	return id, nil
}

// Wait blocks until the capture id is written (or failed) or ctx ends.
func (m *Manager) Wait(ctx context.Context, id string) error {
	m.mu.Lock()
	ch, ok := m.done[id]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("capture: unknown capture %q (not started by this manager)", id)
	}
	select {
	case <-ch:
	case <-ctx.Done():
		return ctx.Err()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.results[id]
}

// finish detaches the capture from its recorders and writes it.
func (m *Manager) finish(id string) {
	m.mu.Lock()
	p, ok := m.pending[id]
	if ok {
		delete(m.pending, id)
	}
	m.mu.Unlock()
	if !ok {
		return
	}
	for _, r := range p.recorders() {
		r.mu.Lock()
		for i, x := range r.attached {
			if x == p {
				r.attached = append(r.attached[:i:i], r.attached[i+1:]...)
				break
			}
		}
		r.mu.Unlock()
	}
	info, convs := p.result()
	_, err := m.store.Save(info, convs)
	if err != nil {
		m.cfg.Log.Warn("capture write failed", "capture", id, "err", err)
	} else {
		m.cfg.Log.Info("capture written", "capture", id, "reason", info.Reason, "connections", len(convs))
	}
	m.mu.Lock()
	m.results[id] = err
	ch := m.done[id]
	m.mu.Unlock()
	close(ch)
	// Results are kept for late Wait calls; bound them like the store bounds files.
	m.mu.Lock()
	if len(m.results) > 4*m.cfg.MaxFiles+16 {
		for k := range m.results {
			if k != id {
				delete(m.results, k)
				delete(m.done, k)
				break
			}
		}
	}
	m.mu.Unlock()
}

// pending is a capture while it records.
type pending struct {
	workload string // set for workload captures: new connections of it join
	target   string // "conn:ID" or "workload:NS/POD", to fold repeated triggers
	limit    int

	mu    sync.Mutex
	info  Info
	order []*Recorder
	conv  map[*Recorder]*Conversation
	used  int
}

func (p *pending) add(r *Recorder) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.conv[r]; ok {
		return
	}
	p.order = append(p.order, r)
	p.conv[r] = &Conversation{Proto: r.info.Proto, Client: r.info.Client, Server: r.info.Server}
	if r.info.ID != "" {
		p.info.ConnIDs = append(p.info.ConnIDs, r.info.ID)
	}
}

func (p *pending) history(r *Recorder, segs []Segment) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.conv[r]
	for _, s := range segs {
		if p.used+len(s.Data) > p.limit {
			p.info.Truncated = true
			return
		}
		p.used += len(s.Data)
		c.Segments = append(c.Segments, s)
	}
}

func (p *pending) append(r *Recorder, at int64, fromClient bool, b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used+len(b) > p.limit {
		p.info.Truncated = true
		return
	}
	c, ok := p.conv[r]
	if !ok {
		return
	}
	p.used += len(b)
	c.Segments = append(c.Segments, Segment{Time: time.Unix(0, at), FromClient: fromClient, Data: append([]byte(nil), b...)})
}

func (p *pending) closeConn(r *Recorder) {
	p.mu.Lock()
	if c, ok := p.conv[r]; ok {
		c.Closed = true
	}
	p.mu.Unlock()
}

func (p *pending) recorders() []*Recorder {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Recorder(nil), p.order...)
}

func (p *pending) result() (Info, []Conversation) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var convs []Conversation
	for _, r := range p.order {
		c := p.conv[r]
		if !c.Client.IsValid() || !c.Server.IsValid() {
			continue // nothing to frame it with
		}
		convs = append(convs, *c)
	}
	p.info.Connections = len(convs)
	return p.info, convs
}

// StreamObserver has the method set of sidecar.StreamObserver (values convert both ways), so
// this package need not import the sidecar.
type StreamObserver interface {
	FromClient(p []byte) error
	FromServer(p []byte) error
	Close()
}

// Tee records each chunk, then hands it to next and returns next's verdict: a chunk next
// denies is still recorded, so a capture triggered by the denial holds the attack. A nil next
// records only.
func (r *Recorder) Tee(next StreamObserver) StreamObserver {
	if next == nil {
		return r
	}
	return tee{r, next}
}

type tee struct {
	r    *Recorder
	next StreamObserver
}

func (t tee) FromClient(p []byte) error { t.r.record(true, p); return t.next.FromClient(p) }
func (t tee) FromServer(p []byte) error { t.r.record(false, p); return t.next.FromServer(p) }

// Close closes next first: its verdict-driven triggers still find the recorder open.
func (t tee) Close() { t.next.Close(); t.r.Close() }

// CaptureWorkload records every connection of workload for d from now (no history) and
// copies the pcap to w: `meshguard capture NS/POD --duration 30s -o FILE.pcap`. The capture
// also stays in the store under the returned Info's ID.
func (m *Manager) CaptureWorkload(ctx context.Context, workload string, d time.Duration, w io.Writer) (Info, error) {
	if workload == "" || d <= 0 {
		return Info{}, fmt.Errorf("capture: workload (%q) and a positive duration (%v) are required", workload, d)
	}
	id, err := m.Trigger(Request{Workload: workload, After: d, NoHistory: true, Reason: "on-demand"})
	if err != nil {
		return Info{}, err
	}
	if err := m.Wait(ctx, id); err != nil {
		return Info{ID: id}, err
	}
	info, err := m.store.Get(id)
	if err != nil {
		return info, err
	}
	rc, err := m.store.Open(id)
	if err != nil {
		return info, err
	}
	defer rc.Close()
	if _, err := io.Copy(w, rc); err != nil {
		return info, fmt.Errorf("capture: copy %s: %w", id, err)
	}
	return info, nil
}
