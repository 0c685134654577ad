package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/intercept"
)

// RouteKind says how the outbound proxy carries a connection.
type RouteKind int

const (
	// RouteTunnel carries the stream to a meshed peer's sidecar in the mTLS tunnel.
	RouteTunnel RouteKind = iota
	// RoutePassthrough dials the original destination directly (egress to an unmeshed
	// destination allowed by ALLOW_ANY or the registry); the resolver emits the egress event.
	RoutePassthrough
)

// Route is the resolver's answer for one original destination.
type Route struct {
	Kind RouteKind
	Peer Peer // RouteTunnel: the chosen endpoint's sidecar and its expected identity
	// Authority is what the peer delivers to, usually ":<targetPort>" (a service port maps to
	// the endpoint's target port). Empty means ":<original destination port>".
	Authority string
	// Dest is where RoutePassthrough dials; zero means the original destination.
	Dest netip.AddrPort
}

// Resolver maps an original destination (service VIP or pod IP and port) to a route: load
// balancing over endpoints and the egress decision live behind it. An error refuses the
// connection (reported as denied); a resolver that is not ready yet may block until it is,
// bounded by ctx (the outbound proxy's ResolveTimeout).
type Resolver interface {
	Resolve(ctx context.Context, src, dst netip.AddrPort) (Route, error)
}

// OutboundConfig configures the outbound proxy of one sidecar.
type OutboundConfig struct {
	Clock clockwork.Clock
	Log   *slog.Logger

	// Listener receives the app's redirected connections (intercept OutboundPort). Required.
	Listener    net.Listener
	OriginalDst func(*net.TCPConn) (netip.AddrPort, error) // intercept.OriginalDst in production
	Resolver    Resolver
	Tunnel      *TunnelClient
	Report      Reporter    // nil drops reports
	Inspect     Inspector   // nil: streams are not inspected
	Self        spiffeid.ID // this sidecar's identity, for reports

	Mark           int           // SO_MARK on passthrough dials (intercept.Config.ExcludeMark)
	Dial           DialFunc      // passthrough dials; nil: net.Dialer with Mark
	ResolveTimeout time.Duration // how long a connection may wait for a route; default 10s
	DialTimeout    time.Duration // stream setup through the tunnel or passthrough dial; default 5s
	DrainTimeout   time.Duration // on shutdown, how long connections may finish; default 10s
}

func (c *OutboundConfig) validate() error {
	if c.Clock == nil || c.Log == nil {
		return errors.New("outbound: Clock and Log are required")
	}
	if c.Listener == nil || c.OriginalDst == nil || c.Resolver == nil || c.Tunnel == nil {
		return errors.New("outbound: Listener, OriginalDst (intercept.OriginalDst), Resolver and Tunnel are required")
	}
	if c.ResolveTimeout < 0 || c.DialTimeout < 0 || c.DrainTimeout < 0 {
		return errors.New("outbound: timeouts must not be negative (0 picks the default)")
	}
	if c.ResolveTimeout == 0 {
		c.ResolveTimeout = 10 * time.Second
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.Dial == nil {
		c.Dial = (&net.Dialer{Control: intercept.MarkControl(c.Mark)}).DialContext
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 10 * time.Second
	}
	return nil
}

// OutboundProxy takes the app's intercepted connections and carries each to its destination:
// through the tunnel to the peer sidecar, or directly for allowed egress.
type OutboundProxy struct {
	cfg   OutboundConfig
	bufs  *bufPool
	track tracker
}

// NewOutbound validates cfg; Run starts serving.
func NewOutbound(cfg OutboundConfig) (*OutboundProxy, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &OutboundProxy{cfg: cfg, bufs: newBufPool()}, nil
}

// Run serves until ctx ends, then stops accepting and gives open connections DrainTimeout to
// finish before cutting them. The tunnel client is not closed: it may be shared.
func (p *OutboundProxy) Run(ctx context.Context) error {
	base := context.WithoutCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- acceptLoop(p.cfg.Listener, p.cfg.Clock, p.cfg.Log, func(c net.Conn) { p.serve(base, c) })
	}()
	var err error
	select {
	case <-ctx.Done():
		p.cfg.Listener.Close()
		<-errc
	case err = <-errc:
		p.cfg.Listener.Close()
	}
	p.track.drain(p.cfg.Clock, p.cfg.DrainTimeout)
	return err
}

func (p *OutboundProxy) serve(base context.Context, c net.Conn) {
	start := p.cfg.Clock.Now()
	rep := ConnReport{Direction: Outbound, Source: p.cfg.Self, SourceAddr: addrPort(c.RemoteAddr()), Start: start}
	finish := func(reason CloseReason, err error) {
		rep.Reason = reason
		if err != nil {
			rep.Err = err.Error()
		}
		rep.Duration = p.cfg.Clock.Since(start)
		if p.cfg.Report != nil {
			p.cfg.Report(rep)
		}
	}
	if !p.track.add(c) {
		c.Close()
		return
	}
	defer p.track.done(c)
	tc := c.(*net.TCPConn)
	c = rawIO(tc)
	dst, err := p.cfg.OriginalDst(tc)
	if err != nil {
		rst(tc)
		finish(ReasonDenied, err)
		return
	}
	rep.DestAddr = dst
	rctx, cancel := context.WithTimeout(base, p.cfg.ResolveTimeout)
	route, err := p.cfg.Resolver.Resolve(rctx, rep.SourceAddr, dst)
	cancel()
	if err != nil {
		rst(tc)
		finish(ReasonDenied, err)
		return
	}
	dctx, cancel := context.WithTimeout(base, p.cfg.DialTimeout)
	defer cancel()
	switch route.Kind {
	case RouteTunnel:
		authority := route.Authority
		if authority == "" {
			authority = fmt.Sprintf(":%d", dst.Port())
		}
		rep.Destination, rep.PeerAddr = route.Peer.ID, route.Peer.Addr
		s, err := p.cfg.Tunnel.Open(dctx, route.Peer, authority)
		cancel()
		if err != nil {
			rst(tc)
			var re *RefusedError
			if errors.As(err, &re) {
				finish(ReasonDenied, err)
			} else {
				finish(ReasonTunnelFailed, err)
			}
			return
		}
		rep.Authenticated = true // the peer proved the expected identity
		obs := p.observer(base, rep)
		fromClient, fromServer := observers(obs)
		var up, down error
		done := make(chan struct{})
		go func() {
			rep.BytesSent, up = p.bufs.copyHalf(s, c, fromClient, nil)
			if up != nil {
				s.Close() // app reset or denied: end the download; c stays open for a reply
			}
			close(done)
		}()
		rep.BytesReceived, down = p.bufs.copyHalf(c, s, fromServer, nil)
		if down != nil {
			s.Close() // the tunnel failed or the answer was denied: stop the upload too
			if isDenied(down) {
				c.Close()
			}
		}
		<-done
		if obs != nil {
			obs.Close()
			annotate(obs, &rep)
		}
		if d, ok := denial(up); ok && d.reply() != nil {
			_, _ = c.Write(d.reply())
		}
		s.Close()
		c.Close()
		p.finishCopy(finish, up, down)
	case RoutePassthrough:
		to := route.Dest
		if !to.IsValid() {
			to = dst
		}
		out, err := p.cfg.Dial(dctx, "tcp", to.String())
		cancel()
		if err != nil {
			rst(tc)
			finish(ReasonDialFailed, err)
			return
		}
		out = rawIO(out)
		p.track.add(out)
		defer p.track.done(out)
		obs := p.observer(base, rep)
		reason, err := p.bufs.pipe(c, out, obs, &rep.BytesSent, &rep.BytesReceived)
		annotate(obs, &rep)
		if p.track.cut.Load() {
			reason, err = ReasonDrained, nil
		}
		finish(reason, err)
	default:
		rst(tc)
		finish(ReasonDenied, fmt.Errorf("resolver returned unknown route kind %d", route.Kind))
	}
}

func (p *OutboundProxy) finishCopy(finish func(CloseReason, error), up, down error) {
	switch {
	case p.track.cut.Load():
		finish(ReasonDrained, nil)
	case isDenied(up):
		finish(ReasonDenied, up)
	case isDenied(down):
		finish(ReasonDenied, down)
	case !isClosedErr(up):
		finish(ReasonReset, up)
	case !isClosedErr(down):
		finish(ReasonReset, down)
	default:
		finish(ReasonClosed, nil)
	}
}

func (p *OutboundProxy) observer(ctx context.Context, rep ConnReport) StreamObserver {
	if p.cfg.Inspect == nil {
		return nil
	}
	return p.cfg.Inspect(ctx, StreamInfo{
		Direction: Outbound, Source: p.cfg.Self, Authenticated: rep.Authenticated, SourceAddr: rep.SourceAddr,
		Destination: rep.Destination, Dest: rep.DestAddr, DestPort: rep.DestAddr.Port(),
	})
}

// rst closes with a reset so the app fails fast instead of seeing a clean EOF.
func rst(c *net.TCPConn) {
	_ = c.SetLinger(0)
	c.Close()
}
