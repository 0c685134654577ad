// Package h2tunnel carries byte streams as HTTP/2 CONNECT requests (RFC 9113 §8.5), many of
// them multiplexed over one connection: the sidecars' mTLS tunnel.
//
// It is plain HTTP/2 on the wire (x/net/http2's Framer and HPACK do the encoding, and the
// tests talk to net/http's HTTP/2 client and server), but it keeps the work in the goroutines
// that move the bytes. A stream's Write frames and sends on the caller's goroutine, and one
// reader per connection copies each DATA frame into its stream's buffer: one goroutine
// hand-off per chunk. net/http's HTTP/2 passes every frame through a connection goroutine (the
// server through two, plus one per flushed write), and those hand-offs, not the bytes, were
// most of the sidecar's CPU per request.
package h2tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// HeaderReason carries why the server refused a stream.
const HeaderReason = "meshguard-reason"

const (
	defaultWindow = 65535 // RFC 9113 §6.9.2: every window starts here
	maxWindow     = 1<<31 - 1
	maxReason     = 512 // bytes of a refusal reason sent in a header
)

// Config tunes a connection; the zero value picks the defaults.
type Config struct {
	// MaxConcurrentStreams a server accepts on one connection; default 1000.
	MaxConcurrentStreams uint32
	// StreamWindow and ConnWindow are how many unread bytes the peer may send ahead, per
	// stream and in all; they bound the memory a connection buffers. Defaults 1 MiB, 16 MiB.
	StreamWindow, ConnWindow uint32
	// MaxFrameSize is the largest DATA frame this side reads; default 32 KiB.
	MaxFrameSize uint32
	// A connection that reads nothing for ReadIdleTimeout is pinged, and closed when the
	// answer does not come within PingTimeout. Defaults 30s and 15s.
	ReadIdleTimeout, PingTimeout time.Duration
	// IdleTimeout closes a connection without streams for this long; default 5m.
	IdleTimeout time.Duration
	Log         *slog.Logger // default: discard
}

func (c *Config) defaults() error {
	if c.ReadIdleTimeout < 0 || c.PingTimeout < 0 || c.IdleTimeout < 0 {
		return errors.New("h2tunnel: timeouts must not be negative (0 picks the default)")
	}
	if c.StreamWindow > maxWindow || c.ConnWindow > maxWindow {
		return fmt.Errorf("h2tunnel: windows must be at most %d bytes", maxWindow)
	}
	if c.MaxFrameSize != 0 && (c.MaxFrameSize < 1<<14 || c.MaxFrameSize > 1<<24-1) {
		return errors.New("h2tunnel: MaxFrameSize must be between 16384 and 16777215")
	}
	setDefault(&c.MaxConcurrentStreams, 1000)
	setDefault(&c.StreamWindow, 1<<20)
	setDefault(&c.ConnWindow, 16<<20)
	setDefault(&c.MaxFrameSize, 32<<10)
	setDefault(&c.ReadIdleTimeout, 30*time.Second)
	setDefault(&c.PingTimeout, 15*time.Second)
	setDefault(&c.IdleTimeout, 5*time.Minute)
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Errors a stream or connection ends with.
var (
	// ErrUnavailable is Open on a connection that is closing, going away or full: use another.
	ErrUnavailable = errors.New("h2tunnel: connection takes no new streams")
	// Our own teardown: callers tell it from failures with errors.Is(err, net.ErrClosed).
	errConnClosed   = fmt.Errorf("h2tunnel: connection closed: %w", net.ErrClosed)
	errStreamClosed = fmt.Errorf("h2tunnel: stream closed: %w", net.ErrClosed)
)

// StreamError is a stream reset by the peer (or by this side for a protocol error).
type StreamError struct {
	Code   http2.ErrCode
	Remote bool
}

func (e *StreamError) Error() string {
	if e.Remote {
		return "h2tunnel: stream reset by peer: " + e.Code.String()
	}
	return "h2tunnel: stream reset: " + e.Code.String()
}

// StatusError is a server refusing a CONNECT.
type StatusError struct {
	Status int
	Reason string
}

func (e *StatusError) Error() string { return fmt.Sprintf("refused: %d %s", e.Status, e.Reason) }

// Conn is one HTTP/2 connection carrying CONNECT streams, either side.
type Conn struct {
	cfg    Config
	nc     net.Conn
	server bool
	rfr    *http2.Framer // used by the read loop only

	wmu  sync.Mutex // serialises frames onto nc
	wfr  *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer
	out  []byte // control frames being flushed, under wmu

	// Control frames (acks, resets, window updates, GOAWAY) queue here and go out with the
	// next write: the read loop must never wait for wmu, whose holder may be blocked on a
	// peer that stops reading until we read (both sides sending bulk data).
	cmu     sync.Mutex
	pending bytes.Buffer
	cfr     *http2.Framer

	mu           sync.Mutex
	fcond        sync.Cond // send windows grew, or the connection closed
	streams      map[uint32]*Stream
	nextID       uint32 // client: the next stream ID to open
	lastID       uint32 // server: the highest stream ID seen
	handlers     uint32 // server: handlers running
	sendWin      int64  // connection-level send window
	recvAvail    int64  // how much more the peer may send on the connection
	peerInitWin  int64  // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame uint32
	peerMaxStrm  uint32
	unacked      uint32 // connection-level bytes consumed, not yet returned in WINDOW_UPDATE
	goingAway    bool
	err          error // set once the connection is closed
	idleSince    time.Time
	drained      chan struct{} // closed when goingAway and no streams are left
	done         chan struct{} // closed when the connection is closed

	tableLimit  atomic.Int64 // the peer's SETTINGS_HEADER_TABLE_SIZE not yet applied; -1: none
	sawFrame    atomic.Bool
	pingPending atomic.Bool
	health      *time.Timer
	handler     func(*Stream)
	bufs        sync.Pool // receive buffers of bufSize
}

const (
	bufSize    = 32 << 10
	maxPending = 1 << 20 // queued control frames beyond this: the peer is not reading
)

func newConn(nc net.Conn, cfg Config, server bool) (*Conn, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	c := &Conn{
		cfg: cfg, nc: nc, server: server,
		rfr:          http2.NewFramer(nil, nc),
		wfr:          http2.NewFramer(nc, nil),
		streams:      map[uint32]*Stream{},
		nextID:       1,
		sendWin:      defaultWindow,
		peerInitWin:  defaultWindow,
		peerMaxFrame: 1 << 14,
		peerMaxStrm:  maxWindow, // unlimited until the peer's SETTINGS say otherwise
		recvAvail:    int64(max(cfg.ConnWindow, defaultWindow)),
		idleSince:    time.Now(),
		done:         make(chan struct{}),
	}
	c.fcond.L = &c.mu
	c.tableLimit.Store(-1)
	c.bufs.New = func() any { b := make([]byte, 0, bufSize); return &b }
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.cfr = http2.NewFramer(&c.pending, nil)
	c.rfr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.rfr.MaxHeaderListSize = 16 << 10
	c.rfr.SetMaxReadFrameSize(cfg.MaxFrameSize)
	return c, nil
}

// Client starts the client side on nc (after the TLS handshake) and its read loop.
func Client(nc net.Conn, cfg Config) (*Conn, error) {
	c, err := newConn(nc, cfg, false)
	if err != nil {
		return nil, err
	}
	if err := c.writeSetup([]byte(http2.ClientPreface)); err != nil {
		return nil, err
	}
	c.startHealth()
	go func() { _ = c.readLoop() }()
	return c, nil
}

// Server reads the client preface from nc (bounded by the deadline the caller set) and sends
// this side's settings. Serve then runs the connection.
func Server(nc net.Conn, cfg Config) (*Conn, error) {
	c, err := newConn(nc, cfg, true)
	if err != nil {
		return nil, err
	}
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(nc, pre); err != nil {
		return nil, fmt.Errorf("h2tunnel: reading the client preface: %w", err)
	}
	if string(pre) != http2.ClientPreface {
		return nil, errors.New("h2tunnel: peer did not send the HTTP/2 client preface")
	}
	if err := c.writeSetup(nil); err != nil {
		return nil, err
	}
	return c, nil
}

// Serve reads frames until the connection ends, calling handler in a new goroutine for each
// stream the client opens; the handler answers with Respond. It returns the error that ended
// the connection (nil after a graceful GoAway).
func (c *Conn) Serve(handler func(*Stream)) error {
	c.handler = handler
	c.startHealth()
	err := c.readLoop()
	if errors.Is(err, errConnClosed) {
		return nil
	}
	return err
}

// writeSetup sends the preface (client), SETTINGS and the connection window in one write.
func (c *Conn) writeSetup(preface []byte) error {
	var b bytes.Buffer
	b.Write(preface)
	fr := http2.NewFramer(&b, nil)
	settings := []http2.Setting{
		{ID: http2.SettingEnablePush, Val: 0},
		{ID: http2.SettingInitialWindowSize, Val: c.cfg.StreamWindow},
		{ID: http2.SettingMaxFrameSize, Val: c.cfg.MaxFrameSize},
	}
	if c.server {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.cfg.MaxConcurrentStreams})
	}
	_ = fr.WriteSettings(settings...)
	if c.cfg.ConnWindow > defaultWindow {
		_ = fr.WriteWindowUpdate(0, c.cfg.ConnWindow-defaultWindow)
	}
	if _, err := c.nc.Write(b.Bytes()); err != nil {
		return fmt.Errorf("h2tunnel: sending settings: %w", err)
	}
	return nil
}

// Open starts a CONNECT stream to authority and waits (bounded by ctx) for the server's
// answer: a non-200 comes back as *StatusError, a connection that takes no new streams as
// ErrUnavailable.
func (c *Conn) Open(ctx context.Context, authority string) (*Stream, error) {
	// The ID is taken under the write lock: streams must reach the peer in ID order.
	c.wmu.Lock()
	c.mu.Lock()
	if !c.availableLocked() {
		c.mu.Unlock()
		c.unlockW()
		return nil, ErrUnavailable
	}
	s := c.newStreamLocked(c.nextID)
	c.nextID += 2
	s.respc = make(chan struct{})
	c.mu.Unlock()
	err := c.flushLocked()
	if err == nil {
		err = c.writeHeadersLocked(s.id, false, func(e *hpack.Encoder) {
			_ = e.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
			_ = e.WriteField(hpack.HeaderField{Name: ":authority", Value: authority})
		})
	}
	c.unlockW()
	if err != nil {
		return nil, c.writeFailed(err)
	}
	select {
	case <-s.respc:
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	s.mu.Lock()
	status, reason, rerr := s.status, s.reason, s.rerr
	s.mu.Unlock()
	switch {
	case status == 0:
		s.Close()
		var se *StreamError
		switch {
		case errors.As(rerr, &se) && se.Code == http2.ErrCodeRefusedStream:
			// The server went away or filled up before it saw the GOAWAY or SETTINGS that
			// would have told us: nothing was done, another connection may take it.
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, rerr)
		case rerr == nil || rerr == io.EOF:
			rerr = errors.New("h2tunnel: stream ended without a response")
		}
		return nil, rerr
	case status != 200:
		s.Close()
		return nil, &StatusError{Status: status, Reason: reason}
	}
	return s, nil
}

// Available reports whether Open may succeed: not closing, not going away, not full.
func (c *Conn) Available() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.availableLocked()
}

func (c *Conn) availableLocked() bool {
	return c.err == nil && !c.goingAway && uint32(len(c.streams)) < c.peerMaxStrm && c.nextID <= maxWindow
}

// GoAway stops new streams (a server tells the client with GOAWAY) and closes the
// connection once the streams it has are finished.
func (c *Conn) GoAway() {
	c.mu.Lock()
	if c.goingAway || c.err != nil {
		c.mu.Unlock()
		return
	}
	c.goingAway = true
	last := c.lastID
	empty := len(c.streams) == 0
	c.mu.Unlock()
	c.control(func(f *http2.Framer) error { return f.WriteGoAway(last, http2.ErrCodeNo, nil) })
	if empty {
		c.closeWith(errConnClosed)
	}
}

// Shutdown is GoAway, then waits until the streams finished or ctx ends (and then closes).
func (c *Conn) Shutdown(ctx context.Context) error {
	c.GoAway()
	c.mu.Lock()
	if c.drained == nil {
		c.drained = make(chan struct{})
		if len(c.streams) == 0 {
			close(c.drained)
		}
	}
	drained := c.drained
	c.mu.Unlock()
	select {
	case <-drained:
	case <-c.done:
		return nil
	case <-ctx.Done():
		c.closeWith(errConnClosed)
		return ctx.Err()
	}
	c.closeWith(errConnClosed)
	return nil
}

// Close ends the connection and every stream on it at once.
func (c *Conn) Close() error {
	c.closeWith(errConnClosed)
	return nil
}

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

func (c *Conn) closeWith(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	streams := c.streams
	c.streams = map[uint32]*Stream{}
	if c.drained != nil && len(streams) > 0 {
		close(c.drained)
	}
	c.fcond.Broadcast()
	c.mu.Unlock()
	if c.health != nil {
		c.health.Stop()
	}
	close(c.done)
	_ = c.nc.Close()
	for _, s := range streams {
		s.fail(err)
	}
}

func (c *Conn) newStreamLocked(id uint32) *Stream {
	s := &Stream{c: c, id: id, sendWin: c.peerInitWin, recvWin: int64(c.cfg.StreamWindow)}
	s.cond.L = &s.mu
	c.streams[id] = s
	return s
}

// forget drops a stream both sides have finished.
func (c *Conn) forget(s *Stream) {
	c.mu.Lock()
	if c.streams[s.id] != s {
		c.mu.Unlock()
		return
	}
	delete(c.streams, s.id)
	empty := len(c.streams) == 0
	if empty {
		c.idleSince = time.Now()
	}
	closing := empty && c.goingAway && c.err == nil
	if empty && c.drained != nil {
		select {
		case <-c.drained:
		default:
			close(c.drained)
		}
	}
	c.fcond.Broadcast() // a writer waiting for stream capacity
	c.mu.Unlock()
	if closing && c.server {
		c.closeWith(errConnClosed)
	}
}

// writeFrame sends one frame; a failed write ends the connection.
func (c *Conn) writeFrame(write func(*http2.Framer) error) error {
	c.wmu.Lock()
	err := c.flushLocked() // queued control frames first: a reset goes out before later data
	if err == nil {
		err = write(c.wfr)
	}
	c.unlockW()
	if err != nil {
		return c.writeFailed(err)
	}
	return nil
}

// writeFailed ends the connection after a failed write and returns why.
func (c *Conn) writeFailed(err error) error {
	err = fmt.Errorf("h2tunnel: write: %w", err)
	c.closeWith(err)
	return err
}

func (c *Conn) writeHeaders(id uint32, end bool, fields func(*hpack.Encoder)) error {
	return c.writeFrame(func(*http2.Framer) error { return c.writeHeadersLocked(id, end, fields) })
}

// control queues a control frame and sends it now if nobody else is writing; otherwise the
// writer sends it when it is done. It never blocks on the connection.
func (c *Conn) control(write func(*http2.Framer) error) {
	c.cmu.Lock()
	_ = write(c.cfr)
	n := c.pending.Len()
	c.cmu.Unlock()
	if n > maxPending {
		c.closeWith(errors.New("h2tunnel: peer stopped reading (control frames piled up)"))
		return
	}
	if c.wmu.TryLock() {
		c.unlockW()
	}
}

// flushLocked writes the queued control frames; the caller holds wmu.
func (c *Conn) flushLocked() error {
	c.cmu.Lock()
	if c.pending.Len() == 0 {
		c.cmu.Unlock()
		return nil
	}
	c.out = append(c.out[:0], c.pending.Bytes()...)
	c.pending.Reset()
	c.cmu.Unlock()
	_, err := c.nc.Write(c.out)
	return err
}

// unlockW releases wmu after flushing what was queued meanwhile; it keeps flushing while
// frames arrive and no other writer takes over (which would flush them itself).
func (c *Conn) unlockW() {
	for {
		err := c.flushLocked()
		c.wmu.Unlock()
		if err != nil {
			_ = c.writeFailed(err)
			return
		}
		c.cmu.Lock()
		more := c.pending.Len() > 0
		c.cmu.Unlock()
		if !more || !c.wmu.TryLock() {
			return
		}
	}
}

// writeHeadersLocked sends one HEADERS frame; the caller holds wmu.
func (c *Conn) writeHeadersLocked(id uint32, end bool, fields func(*hpack.Encoder)) error {
	if v := c.tableLimit.Swap(-1); v >= 0 {
		c.henc.SetMaxDynamicTableSizeLimit(uint32(v))
	}
	c.hbuf.Reset()
	fields(c.henc)
	return c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndStream: end, EndHeaders: true})
}

// startHealth arms the keepalive and idle check. Real time, not an injected clock: it
// guards a real socket.
func (c *Conn) startHealth() {
	c.mu.Lock()
	if c.err == nil {
		c.health = time.AfterFunc(c.cfg.ReadIdleTimeout, c.checkHealth)
	}
	c.mu.Unlock()
}

func (c *Conn) checkHealth() {
	next := c.cfg.ReadIdleTimeout
	switch {
	case c.sawFrame.Swap(false):
		c.pingPending.Store(false)
	case c.pingPending.Load():
		c.closeWith(errors.New("h2tunnel: peer did not answer a ping"))
		return
	default:
		c.pingPending.Store(true)
		// Queued behind a write blocked on a peer that stopped reading, it does not go out:
		// the next check closes the connection if nothing arrived by then.
		c.control(func(f *http2.Framer) error { return f.WritePing(false, [8]byte{'m', 'g', 'p', 'i', 'n', 'g'}) })
		next = c.cfg.PingTimeout
	}
	c.mu.Lock()
	idle := len(c.streams) == 0 && time.Since(c.idleSince) >= c.cfg.IdleTimeout
	if c.err == nil && !idle {
		c.health.Reset(next)
	}
	c.mu.Unlock()
	if idle {
		c.cfg.Log.Debug("closing idle tunnel connection", "remote", c.nc.RemoteAddr().String())
		c.GoAway()
		c.closeWith(errConnClosed)
	}
}

// connError is a connection-level protocol error: GOAWAY with the code, then close.
func (c *Conn) connError(code http2.ErrCode, why string) error {
	c.mu.Lock()
	last := c.lastID
	c.mu.Unlock()
	c.control(func(f *http2.Framer) error { return f.WriteGoAway(last, code, []byte(why)) })
	err := fmt.Errorf("h2tunnel: %s: %s", code, why)
	c.closeWith(err)
	return err
}

func (c *Conn) resetStream(id uint32, code http2.ErrCode) {
	c.control(func(f *http2.Framer) error { return f.WriteRSTStream(id, code) })
}

// readLoop reads and dispatches frames until the connection ends.
func (c *Conn) readLoop() error {
	for first := c.server; ; first = false {
		f, err := c.rfr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.resetStream(se.StreamID, se.Code)
				if s := c.stream(se.StreamID); s != nil {
					s.fail(&StreamError{Code: se.Code})
				}
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				return c.connError(http2.ErrCode(ce), "bad frame")
			}
			// Not wrapped: a lost connection must not read as a clean io.EOF.
			c.closeWith(fmt.Errorf("h2tunnel: connection lost: %v", err))
			c.mu.Lock()
			err = c.err
			c.mu.Unlock()
			return err
		}
		c.sawFrame.Store(true)
		if _, ok := f.(*http2.SettingsFrame); first && !ok {
			return c.connError(http2.ErrCodeProtocol, "the first frame must be SETTINGS")
		}
		if err := c.dispatch(f); err != nil {
			return err
		}
	}
}

func (c *Conn) stream(id uint32) *Stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[id]
}

func (c *Conn) dispatch(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.RSTStreamFrame:
		if f.StreamID == 0 {
			return c.connError(http2.ErrCodeProtocol, "RST_STREAM on stream 0")
		}
		if s := c.stream(f.StreamID); s != nil {
			s.onReset(f.ErrCode)
		}
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.control(func(w *http2.Framer) error { return w.WritePing(true, f.Data) })
		}
		c.pingPending.Store(false)
	case *http2.GoAwayFrame:
		c.onGoAway(f)
	case *http2.PushPromiseFrame:
		return c.connError(http2.ErrCodeProtocol, "PUSH_PROMISE with push disabled")
	}
	// PRIORITY and unknown frames are ignored (RFC 9113 §5.5).
	return nil
}

func (c *Conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	var bad error
	c.mu.Lock()
	_ = f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			bad = err
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInitWin
			c.peerInitWin = int64(s.Val)
			for _, st := range c.streams {
				st.sendWin += delta
				if st.sendWin > maxWindow {
					bad = http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStrm = s.Val
		case http2.SettingHeaderTableSize:
			c.tableLimit.Store(int64(s.Val)) // the encoder is the writers': applied on the next HEADERS
		}
		return nil
	})
	c.fcond.Broadcast()
	c.mu.Unlock()
	if bad != nil {
		code := http2.ErrCodeProtocol
		var ce http2.ConnectionError
		if errors.As(bad, &ce) {
			code = http2.ErrCode(ce)
		}
		return c.connError(code, bad.Error())
	}
	c.control(func(w *http2.Framer) error { return w.WriteSettingsAck() })
	return nil
}

func (c *Conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	var s *Stream
	overflow := false
	if f.StreamID == 0 {
		c.sendWin += int64(f.Increment)
		overflow = c.sendWin > maxWindow
	} else if s = c.streams[f.StreamID]; s != nil {
		s.sendWin += int64(f.Increment)
		overflow = s.sendWin > maxWindow
	}
	c.fcond.Broadcast()
	c.mu.Unlock()
	switch {
	case !overflow:
	case s == nil:
		return c.connError(http2.ErrCodeFlowControl, "connection window overflow")
	default:
		c.resetStream(s.id, http2.ErrCodeFlowControl)
		s.fail(&StreamError{Code: http2.ErrCodeFlowControl})
	}
	return nil
}

func (c *Conn) onGoAway(f *http2.GoAwayFrame) {
	c.mu.Lock()
	c.goingAway = true
	var refused []*Stream
	for id, s := range c.streams {
		// LastStreamID counts the streams this side opened: a server opens none.
		if !c.server && id > f.LastStreamID {
			refused = append(refused, s)
		}
	}
	c.mu.Unlock()
	for _, s := range refused {
		s.fail(&StreamError{Code: http2.ErrCodeRefusedStream, Remote: true})
	}
	if f.ErrCode != http2.ErrCodeNo {
		c.cfg.Log.Debug("tunnel peer went away", "code", f.ErrCode.String(), "debug", string(f.DebugData()))
	}
}

func (c *Conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if s := c.stream(id); s != nil {
		if c.server {
			// Trailers: only an end of the upload means anything to a byte stream.
			if !f.StreamEnded() {
				c.resetStream(id, http2.ErrCodeProtocol)
				s.fail(&StreamError{Code: http2.ErrCodeProtocol})
				return nil
			}
			s.onEnd()
			return nil
		}
		s.onResponse(f)
		return nil
	}
	if !c.server {
		return nil // a closed stream's late answer
	}
	c.mu.Lock()
	if id%2 == 0 || id <= c.lastID {
		c.mu.Unlock()
		return c.connError(http2.ErrCodeProtocol, "bad stream ID")
	}
	c.lastID = id
	// handlers, not streams: a stream the client reset at once is gone from c.streams while
	// its handler may still be dialling the app (rapid reset).
	if c.goingAway || c.err != nil || c.handlers >= c.cfg.MaxConcurrentStreams {
		c.mu.Unlock()
		c.resetStream(id, http2.ErrCodeRefusedStream)
		return nil
	}
	s := c.newStreamLocked(id)
	s.method, s.authority = f.PseudoValue("method"), f.PseudoValue("authority")
	c.handlers++
	c.mu.Unlock()
	if f.StreamEnded() {
		s.onEnd()
	}
	go func() {
		c.handler(s)
		c.mu.Lock()
		c.handlers--
		c.mu.Unlock()
	}()
	return nil
}

func (c *Conn) onData(f *http2.DataFrame) error {
	n := f.Length // padding counts against the windows too
	c.mu.Lock()
	s := c.streams[f.StreamID]
	if f.StreamID > c.lastID && c.server || !c.server && f.StreamID >= c.nextID {
		c.mu.Unlock()
		return c.connError(http2.ErrCodeProtocol, "DATA on an idle stream")
	}
	c.recvAvail -= int64(n)
	if c.recvAvail < 0 {
		c.mu.Unlock()
		return c.connError(http2.ErrCodeFlowControl, "DATA beyond the connection window")
	}
	c.mu.Unlock()
	if s == nil {
		// Closed by this side: the bytes were in flight. Give the window back.
		c.consumed(n)
		return nil
	}
	return s.onData(f.Data(), n, f.StreamEnded())
}

// consumed returns n read bytes to the peer's connection window, in batches.
func (c *Conn) consumed(n uint32) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	c.unacked += n
	inc := c.unacked
	if inc < c.cfg.ConnWindow/2 || c.err != nil {
		c.mu.Unlock()
		return
	}
	c.unacked = 0
	c.recvAvail += int64(inc)
	c.mu.Unlock()
	c.control(func(f *http2.Framer) error { return f.WriteWindowUpdate(0, inc) })
}

// reserveSend waits until stream s may send, and takes up to want bytes of both windows.
func (c *Conn) reserveSend(s *Stream, want int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.err != nil {
			return 0, c.err
		}
		if s.werr != nil {
			return 0, s.werr
		}
		if n := min(int64(want), c.sendWin, s.sendWin, int64(c.peerMaxFrame)); n > 0 {
			c.sendWin -= n
			s.sendWin -= n
			return int(n), nil
		}
		c.fcond.Wait()
	}
}
