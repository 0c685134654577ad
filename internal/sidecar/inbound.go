package sidecar

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshguard/meshguard/internal/h2tunnel"
)

// Mode is the inbound mTLS mode of a workload.
type Mode int32

const (
	// Strict refuses plaintext from unmeshed sources (the default).
	Strict Mode = iota
	// Permissive delivers plaintext from unmeshed sources and reports it as unauthenticated,
	// so workloads can migrate into the mesh.
	Permissive
)

func (m Mode) String() string {
	if m == Permissive {
		return "PERMISSIVE"
	}
	return "STRICT"
}

// StreamInfo is what the admission hook knows about an inbound stream.
type StreamInfo struct {
	Direction     Direction
	Source        spiffeid.ID // authenticated client identity; zero when !Authenticated
	Authenticated bool
	SourceAddr    netip.AddrPort // inbound: the peer sidecar or plaintext client; outbound: the app
	Destination   spiffeid.ID    // outbound through the tunnel: the verified peer; else zero
	Dest          netip.AddrPort // inbound: the app address delivered to; outbound: original destination
	DestPort      uint16         // the app port the stream is for
}

// Admitter is the policy step: a non-nil error refuses the stream (the peer sees 403 with the
// error text as reason). It runs before the app is dialled.
type Admitter func(ctx context.Context, s StreamInfo) error

// InboundConfig configures the inbound proxy of one sidecar.
type InboundConfig struct {
	Creds Credentials
	Clock clockwork.Clock
	Log   *slog.Logger

	// TunnelListener is the mTLS tunnel port (TCP; TLS is done here). Required.
	TunnelListener net.Listener
	// PlainListener receives plaintext the redirect rules captured (intercept InboundPort);
	// nil when the pod has no inbound capture. OriginalDst is then required
	// (intercept.OriginalDst in production).
	PlainListener net.Listener
	OriginalDst   func(*net.TCPConn) (netip.AddrPort, error)

	Mode    Mode       // initial mode; change with SetMode
	AppAddr netip.Addr // where streams are delivered; default 127.0.0.1
	Admit   Admitter   // nil admits everything authenticated
	Inspect Inspector  // nil: streams are not inspected
	Report  Reporter   // nil drops reports

	DialTimeout          time.Duration // dialling the app; default 5s
	Dial                 DialFunc      // dialling the app; nil: net.Dialer
	HandshakeTimeout     time.Duration // TLS handshake on the tunnel port; default 10s
	DrainTimeout         time.Duration // on shutdown, how long streams may finish; default 10s
	MaxConcurrentStreams uint32        // per tunnel connection; default 1000
}

func (c *InboundConfig) validate() error {
	if err := c.Creds.validate(); err != nil {
		return fmt.Errorf("inbound: %w", err)
	}
	if c.Clock == nil || c.Log == nil {
		return errors.New("inbound: Clock and Log are required")
	}
	if c.TunnelListener == nil {
		return errors.New("inbound: TunnelListener is required")
	}
	if c.PlainListener != nil && c.OriginalDst == nil {
		return errors.New("inbound: PlainListener needs OriginalDst (use intercept.OriginalDst)")
	}
	if c.Mode != Strict && c.Mode != Permissive {
		return fmt.Errorf("inbound: unknown mode %d (use Strict or Permissive)", c.Mode)
	}
	if c.DialTimeout < 0 || c.HandshakeTimeout < 0 || c.DrainTimeout < 0 {
		return errors.New("inbound: timeouts must not be negative (0 picks the default)")
	}
	if !c.AppAddr.IsValid() {
		c.AppAddr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.Dial == nil {
		c.Dial = (&net.Dialer{}).DialContext
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = 1000
	}
	return nil
}

// InboundStats are counters for metrics and tests.
type InboundStats struct {
	TLSConns          uint64 // tunnel connections that completed the mTLS handshake
	HandshakeFailures uint64
	Streams           uint64 // CONNECT streams delivered to the app
	PlainConns        uint64 // plaintext connections seen on the plain listener
}

// InboundProxy accepts tunnels from peer sidecars and delivers each stream to the app over
// loopback, and handles plaintext the redirect rules captured according to the Mode.
type InboundProxy struct {
	cfg      InboundConfig
	mode     atomic.Int32
	bufs     *bufPool
	h2       h2tunnel.Config
	tlsCfg   *tls.Config
	own      map[uint16]bool // the sidecar's own ports: never delivered to
	draining atomic.Bool
	track    tracker

	h2mu    sync.Mutex
	h2conns map[*h2tunnel.Conn]struct{} // told to go away on drain

	tlsConns, hsFail, streams, plain atomic.Uint64
}

// NewInbound validates cfg; Run starts serving.
func NewInbound(cfg InboundConfig) (*InboundProxy, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &InboundProxy{cfg: cfg, bufs: newBufPool(), tlsCfg: serverTLS(cfg.Creds, cfg.Clock), own: map[uint16]bool{}}
	p.mode.Store(int32(cfg.Mode))
	for _, ln := range []net.Listener{cfg.TunnelListener, cfg.PlainListener} {
		if ln == nil {
			continue
		}
		if ta, ok := ln.Addr().(*net.TCPAddr); ok {
			p.own[uint16(ta.Port)] = true
		}
	}
	p.h2 = h2tunnel.Config{
		MaxConcurrentStreams: cfg.MaxConcurrentStreams,
		StreamWindow:         1 << 20,
		ConnWindow:           16 << 20,
		// Our copies write at most copyBufSize at a time anyway.
		MaxFrameSize: copyBufSize,
		// Dead peers (pod gone without FIN) are found by pings, idle tunnels are let go.
		ReadIdleTimeout: 30 * time.Second,
		PingTimeout:     15 * time.Second,
		IdleTimeout:     10 * time.Minute,
		Log:             cfg.Log,
	}
	p.h2conns = map[*h2tunnel.Conn]struct{}{}
	return p, nil
}

// SetMode switches STRICT/PERMISSIVE for new plaintext connections (config updates).
func (p *InboundProxy) SetMode(m Mode) { p.mode.Store(int32(m)) }

// Stats returns the counters so far.
func (p *InboundProxy) Stats() InboundStats {
	return InboundStats{TLSConns: p.tlsConns.Load(), HandshakeFailures: p.hsFail.Load(), Streams: p.streams.Load(), PlainConns: p.plain.Load()}
}

// Run serves until ctx ends, then drains: listeners close, peers get GOAWAY, open streams get
// DrainTimeout to finish and are then cut. It returns nil after a drain, or the first
// listener error.
func (p *InboundProxy) Run(ctx context.Context) error {
	base := context.WithoutCancel(ctx) // streams outlive ctx until drained
	errc := make(chan error, 2)
	n := 1
	go func() {
		errc <- acceptLoop(p.cfg.TunnelListener, p.cfg.Clock, p.cfg.Log, func(c net.Conn) { p.serveTunnel(base, c) })
	}()
	if p.cfg.PlainListener != nil {
		n++
		go func() {
			errc <- acceptLoop(p.cfg.PlainListener, p.cfg.Clock, p.cfg.Log, func(c net.Conn) { p.servePlain(base, c) })
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		n--
	}
	p.draining.Store(true)
	p.cfg.TunnelListener.Close()
	if p.cfg.PlainListener != nil {
		p.cfg.PlainListener.Close()
	}
	for ; n > 0; n-- {
		<-errc
	}
	p.h2mu.Lock()
	for hc := range p.h2conns {
		hc.GoAway() // the tracker does the waiting
	}
	p.h2mu.Unlock()
	p.track.drain(p.cfg.Clock, p.cfg.DrainTimeout)
	return err
}

// acceptLoop serves ln until it is closed. Resource exhaustion (out of file descriptors or
// memory) backs off and retries instead of taking the sidecar down, like net/http does.
func acceptLoop(ln net.Listener, clock clockwork.Clock, log *slog.Logger, serve func(net.Conn)) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if retryableAccept(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn("accept failed, retrying", "listener", ln.Addr().String(), "err", err, "backoff", backoff)
				<-clock.After(backoff)
				continue
			}
			return fmt.Errorf("accept on %v: %w", ln.Addr(), err)
		}
		backoff = 0
		go serve(c)
	}
}

func retryableAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

type peerInfo struct {
	id   spiffeid.ID
	addr netip.AddrPort
}

func (p *InboundProxy) serveTunnel(base context.Context, c net.Conn) {
	if !p.track.add(c) {
		c.Close()
		return
	}
	defer p.track.done(c)
	tc := tls.Server(rawIO(c), p.tlsCfg)
	hctx, cancel := context.WithTimeout(base, p.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		p.hsFail.Add(1)
		p.cfg.Log.Debug("tunnel handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	p.tlsConns.Add(1)
	cs := tc.ConnectionState()
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0]) // verified in VerifyConnection
	if err != nil {
		c.Close()
		return
	}
	info := peerInfo{id: id, addr: addrPort(c.RemoteAddr())}
	_ = tc.SetReadDeadline(time.Now().Add(p.cfg.HandshakeTimeout)) // the HTTP/2 preface; sockets keep real time
	hc, err := h2tunnel.Server(tc, p.h2)
	_ = tc.SetReadDeadline(time.Time{})
	if err != nil {
		p.cfg.Log.Debug("tunnel: no HTTP/2 from peer", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	p.h2mu.Lock()
	p.h2conns[hc] = struct{}{}
	p.h2mu.Unlock()
	if p.draining.Load() {
		hc.GoAway()
	}
	if err := hc.Serve(func(s *h2tunnel.Stream) { p.serveStream(base, info, s) }); err != nil {
		p.cfg.Log.Debug("tunnel connection ended", "remote", c.RemoteAddr().String(), "err", err)
	}
	p.h2mu.Lock()
	delete(p.h2conns, hc)
	p.h2mu.Unlock()
}

func (p *InboundProxy) serveStream(ctx context.Context, peer peerInfo, s *h2tunnel.Stream) {
	defer s.Close()
	refuse := func(code int, reason string) { _ = s.Respond(code, reason) }
	start := p.cfg.Clock.Now()
	rep := ConnReport{Direction: Inbound, Source: peer.id, Authenticated: true, SourceAddr: peer.addr, Start: start}
	if s.Method() != http.MethodConnect {
		refuse(http.StatusMethodNotAllowed, "only CONNECT is served on the tunnel port")
		return
	}
	port, err := authorityPort(s.Authority())
	if err != nil {
		refuse(http.StatusBadRequest, err.Error())
		return
	}
	rep.DestAddr = netip.AddrPortFrom(p.cfg.AppAddr, port)
	finish := func(reason CloseReason, err error) {
		rep.Reason = reason
		if err != nil {
			rep.Err = err.Error()
			rep.noteDenial(err)
		}
		rep.Duration = p.cfg.Clock.Since(start)
		p.report(rep)
	}
	if p.draining.Load() {
		refuse(http.StatusServiceUnavailable, "sidecar is draining")
		finish(ReasonDenied, errors.New("draining"))
		return
	}
	if p.own[port] {
		refuse(http.StatusForbidden, "port belongs to the sidecar")
		finish(ReasonDenied, fmt.Errorf("port %d belongs to the sidecar", port))
		return
	}
	info := StreamInfo{Direction: Inbound, Source: peer.id, Authenticated: true, SourceAddr: peer.addr, Dest: rep.DestAddr, DestPort: port}
	if p.cfg.Admit != nil {
		if err := p.cfg.Admit(ctx, info); err != nil {
			refuse(http.StatusForbidden, err.Error())
			finish(ReasonDenied, err)
			return
		}
	}
	app, err := p.dialApp(ctx, rep.DestAddr)
	if err != nil {
		refuse(http.StatusBadGateway, "app unreachable")
		finish(ReasonDialFailed, err)
		return
	}
	if !p.track.add(app) {
		app.Close()
		refuse(http.StatusServiceUnavailable, "sidecar is draining")
		finish(ReasonDrained, nil)
		return
	}
	defer p.track.done(app)
	p.streams.Add(1)
	if err := s.Respond(http.StatusOK, ""); err != nil {
		app.Close()
		finish(ReasonReset, err)
		return
	}
	obs := p.observer(ctx, info)
	fromClient, fromServer := observers(obs)
	toClient := sendOnly{s} // the stream ends when this handler does, after any refusal
	up := make(chan copyResult, 1)
	go func() {
		n, err := p.bufs.copyHalf(app, s, fromClient, toClient)
		if err != nil {
			app.Close() // client reset or denied: end the download too
		}
		up <- copyResult{n, err}
	}()
	down, derr := p.bufs.copyHalf(toClient, app, fromServer, nil)
	// The app finished sending: end the stream now (waiting for the client could wait forever
	// on protocols where the server closes first). Closing the read side and the app
	// connection unblocks the upload copy.
	var u copyResult
	upFirst := false
	select {
	case u = <-up:
		upFirst = true
	default:
	}
	app.Close()
	s.CloseRead()
	if !upFirst {
		u = <-up // its error is our own teardown, not a failure
	}
	rep.BytesSent, rep.BytesReceived = u.n, down
	if obs != nil {
		obs.Close()
		annotate(obs, &rep)
	}
	d, denied := denial(u.err)
	if denied {
		if reply := d.reply(); reply != nil {
			_, _ = toClient.Write(reply)
		}
	}
	_ = s.CloseWrite() // after any refusal: the client reads it before the end
	switch {
	case denied:
		finish(ReasonDenied, d)
	case p.track.cut.Load():
		finish(ReasonDrained, nil)
	case isDenied(derr):
		finish(ReasonDenied, derr)
	case !isClosedErr(derr):
		finish(ReasonReset, derr)
	case upFirst && !isClosedErr(u.err):
		finish(ReasonReset, u.err)
	default:
		finish(ReasonClosed, nil)
	}
}

type copyResult struct {
	n   int64
	err error
}

// sendOnly hides the stream's CloseWrite from copyHalf: the handler ends the stream itself,
// after writing a refusal if the upload was denied. Stream writes are serialised, so the
// upload copy can answer a refused request while the download copy writes.
type sendOnly struct{ s *h2tunnel.Stream }

func (w sendOnly) Write(b []byte) (int, error) { return w.s.Write(b) }

func (p *InboundProxy) servePlain(base context.Context, c net.Conn) {
	start := p.cfg.Clock.Now()
	p.plain.Add(1)
	tc := c.(*net.TCPConn)
	c = rawIO(tc)
	rep := ConnReport{Direction: Inbound, SourceAddr: addrPort(c.RemoteAddr()), Start: start}
	finish := func(reason CloseReason, err error) {
		rep.Reason = reason
		if err != nil {
			rep.Err = err.Error()
			rep.noteDenial(err)
		}
		rep.Duration = p.cfg.Clock.Since(start)
		p.report(rep)
	}
	dst, err := p.cfg.OriginalDst(tc)
	if err != nil {
		c.Close()
		finish(ReasonDenied, err)
		return
	}
	rep.DestAddr = netip.AddrPortFrom(p.cfg.AppAddr, dst.Port())
	if Mode(p.mode.Load()) == Strict {
		_ = tc.SetLinger(0) // RST: the client learns at once, like a closed port
		c.Close()
		finish(ReasonStrictRefuse, errors.New("plaintext from an unmeshed source in STRICT mode"))
		return
	}
	if p.cfg.Admit != nil {
		if err := p.cfg.Admit(base, StreamInfo{Direction: Inbound, SourceAddr: rep.SourceAddr, Dest: rep.DestAddr, DestPort: dst.Port()}); err != nil {
			_ = tc.SetLinger(0)
			c.Close()
			finish(ReasonDenied, err)
			return
		}
	}
	if !p.track.add(c) {
		c.Close()
		finish(ReasonDrained, nil)
		return
	}
	defer p.track.done(c)
	app, err := p.dialApp(base, rep.DestAddr)
	if err != nil {
		c.Close()
		finish(ReasonDialFailed, err)
		return
	}
	p.track.add(app)
	defer p.track.done(app)
	obs := p.observer(base, StreamInfo{Direction: Inbound, SourceAddr: rep.SourceAddr, Dest: rep.DestAddr, DestPort: dst.Port()})
	reason, err := p.bufs.pipe(c, app, obs, &rep.BytesSent, &rep.BytesReceived)
	annotate(obs, &rep)
	if p.track.cut.Load() {
		reason, err = ReasonDrained, nil
	}
	finish(reason, err)
}

// pipe copies both ways between client a and server b (TCP) with half-close, under the
// optional observer, and closes both at the end.
func (bp *bufPool) pipe(a, b net.Conn, obs StreamObserver, aToB, bToA *int64) (CloseReason, error) {
	fromClient, fromServer := observers(obs)
	var wg sync.WaitGroup
	var errUp error
	wg.Add(1)
	go func() {
		defer wg.Done()
		*aToB, errUp = bp.copyHalf(b, a, fromClient, a) // net.Conn writes are goroutine-safe
		if errUp != nil {
			b.Close() // ends the download; a stays open for a denial's reply
		}
	}()
	var errDown error
	*bToA, errDown = bp.copyHalf(a, b, fromServer, nil)
	if errDown != nil {
		a.Close() // unblocks the upload
	}
	wg.Wait()
	if obs != nil {
		obs.Close()
	}
	if d, ok := denial(errUp); ok {
		if reply := d.reply(); reply != nil {
			_, _ = a.Write(reply)
		} else if tc, ok := a.(interface{ SetLinger(int) error }); ok {
			_ = tc.SetLinger(0) // no native refusal: reset, like a closed port
		}
	}
	a.Close()
	b.Close()
	for _, err := range []error{errUp, errDown} {
		if isDenied(err) {
			return ReasonDenied, err
		}
	}
	for _, err := range []error{errUp, errDown} {
		if !isClosedErr(err) {
			return ReasonReset, err
		}
	}
	return ReasonClosed, nil
}

func (p *InboundProxy) observer(ctx context.Context, s StreamInfo) StreamObserver {
	if p.cfg.Inspect == nil {
		return nil
	}
	return p.cfg.Inspect(ctx, s)
}

func isDenied(err error) bool {
	_, ok := denial(err)
	return ok
}

func (p *InboundProxy) dialApp(ctx context.Context, to netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	c, err := p.cfg.Dial(ctx, "tcp", to.String())
	if err != nil {
		return nil, err
	}
	return rawIO(c), nil
}

func (p *InboundProxy) report(r ConnReport) {
	if p.cfg.Report != nil {
		p.cfg.Report(r)
	}
}

// authorityPort takes the port out of a CONNECT authority (":8080", "127.0.0.1:8080"); the
// host part is ignored, streams only ever go to the app's loopback address.
func authorityPort(authority string) (uint16, error) {
	_, ps, err := net.SplitHostPort(authority)
	if err != nil {
		return 0, fmt.Errorf("bad CONNECT authority %q: want host:port or :port", authority)
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return 0, fmt.Errorf("bad CONNECT authority %q: port must be 1-65535", authority)
	}
	return uint16(port), nil
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}

// tracker counts live connections so Run can drain: wait for them, then cut the rest.
type tracker struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	idle   []chan struct{} // closed when conns becomes empty
	closed bool
	cut    atomic.Bool // set when the drain timeout expired and connections were cut
}

// add registers c; false means the proxy has drained and c must not be served.
func (t *tracker) add(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.conns == nil {
		t.conns = map[net.Conn]struct{}{}
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tracker) done(c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
	if len(t.conns) == 0 {
		for _, ch := range t.idle {
			close(ch)
		}
		t.idle = nil
	}
}

func (t *tracker) whenIdle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := make(chan struct{})
	if len(t.conns) == 0 {
		close(ch)
	} else {
		t.idle = append(t.idle, ch)
	}
	return ch
}

// drain waits up to timeout for tracked connections to finish, then closes the rest and
// waits for their handlers to let go of them.
func (t *tracker) drain(clock clockwork.Clock, timeout time.Duration) {
	select {
	case <-t.whenIdle():
	case <-clock.After(timeout):
		t.mu.Lock()
		t.cut.Store(true)
		for c := range t.conns {
			c.Close()
		}
		t.mu.Unlock()
		<-t.whenIdle()
	}
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
}
