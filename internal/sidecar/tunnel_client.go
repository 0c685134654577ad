package sidecar

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshguard/meshguard/internal/h2tunnel"
	"github.com/meshguard/meshguard/internal/intercept"
)

// Peer is a destination sidecar: where its tunnel port is and who it must prove to be.
type Peer struct {
	Addr string      // "10.0.0.5:15008"
	ID   spiffeid.ID // the identity the config expects for this destination
}

// TunnelClientConfig configures the outbound side of the tunnel.
type TunnelClientConfig struct {
	Creds Credentials
	Clock clockwork.Clock
	Log   *slog.Logger
	// Mark is set as SO_MARK on connections to peers so the pod's redirect rules leave them
	// alone (intercept.Config.ExcludeMark); 0 sets none (rely on the uid exclusion).
	Mark        int
	DialTimeout time.Duration // TCP+TLS handshake bound per peer connection; default 5s
	Dial        DialFunc      // TCP dial to peers; nil: net.Dialer with Mark
	IdleTimeout time.Duration // close a pooled connection idle this long; default 5m
}

func (c *TunnelClientConfig) validate() error {
	if err := c.Creds.validate(); err != nil {
		return fmt.Errorf("tunnel client: %w", err)
	}
	if c.Clock == nil || c.Log == nil {
		return errors.New("tunnel client: Clock and Log are required")
	}
	if c.DialTimeout < 0 || c.IdleTimeout < 0 {
		return errors.New("tunnel client: DialTimeout and IdleTimeout must not be negative (0 picks the default)")
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.Dial == nil {
		c.Dial = (&net.Dialer{Control: intercept.MarkControl(c.Mark)}).DialContext
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	return nil
}

// TunnelClient opens streams to peer sidecars: HTTP/2 CONNECT requests multiplexed over one
// pooled mutual-TLS connection per (peer address, expected identity). When this side's SVID
// rotates, the next stream gets a fresh connection with the new certificate and the old
// connection is drained, so long-lived streams keep flowing.
type TunnelClient struct {
	cfg TunnelClientConfig
	h2  h2tunnel.Config

	mu      sync.Mutex
	conns   map[string]*peerConn
	dialing map[string]*dialCall
	closed  bool
}

type peerConn struct {
	cc      *h2tunnel.Conn
	leaf    []byte    // DER of the SVID this side presented on it
	expires time.Time // the earlier NotAfter of the two SVIDs it was authenticated with
}

type dialCall struct {
	done chan struct{}
	err  error
}

// NewTunnelClient validates cfg; no connection is made until the first Open.
func NewTunnelClient(cfg TunnelClientConfig) (*TunnelClient, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &TunnelClient{
		cfg: cfg,
		h2: h2tunnel.Config{
			IdleTimeout: cfg.IdleTimeout, ReadIdleTimeout: 30 * time.Second, PingTimeout: 10 * time.Second,
			MaxFrameSize: copyBufSize, Log: cfg.Log,
			// Downloads buffer here when an app reads slowly: 1 MiB per stream, and a
			// connection window far above that, so a few slow streams do not stall the others.
			StreamWindow: 1 << 20, ConnWindow: 256 << 20,
		},
		conns:   map[string]*peerConn{},
		dialing: map[string]*dialCall{},
	}, nil
}

// Open starts a stream to authority (":8080" or "127.0.0.1:8080": the app port the peer
// delivers to) through peer. ctx bounds the setup only; the stream lives until Close.
func (c *TunnelClient) Open(ctx context.Context, peer Peer, authority string) (*TunnelStream, error) {
	for attempt := 1; ; attempt++ {
		cc, err := c.conn(ctx, peer)
		if err != nil {
			return nil, err
		}
		s, err := cc.Open(ctx, authority)
		var se *h2tunnel.StatusError
		switch {
		case errors.Is(err, h2tunnel.ErrUnavailable) && attempt < 3:
			continue // went away or filled up since conn checked: conn dials a successor
		case errors.As(err, &se):
			return nil, &RefusedError{Peer: peer, Authority: authority, Status: se.Status, Reason: se.Reason}
		case err != nil:
			return nil, fmt.Errorf("tunnel to %s (%s) for %s: %w", peer.Addr, peer.ID, authority, err)
		}
		return &TunnelStream{s}, nil
	}
}

// RefusedError is the peer sidecar declining a stream (policy denial, app unreachable, drain).
type RefusedError struct {
	Peer      Peer
	Authority string
	Status    int
	Reason    string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("tunnel to %s (%s) for %s refused: %d %s", e.Peer.Addr, e.Peer.ID, e.Authority, e.Status, e.Reason)
}

// conn returns a pooled connection that takes new streams, dialling at most once per key
// at a time (concurrent callers wait for the same handshake).
func (c *TunnelClient) conn(ctx context.Context, peer Peer) (*h2tunnel.Conn, error) {
	key := peer.Addr + " " + peer.ID.String()
	for {
		svid, err := c.cfg.Creds.SVID.GetX509SVID()
		if err == nil && (svid == nil || len(svid.Certificates) == 0) {
			err = errors.New("empty SVID")
		}
		if err != nil {
			return nil, fmt.Errorf("tunnel to %s: own SVID: %w", peer.Addr, err)
		}
		cur := svid.Certificates[0].Raw
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, errors.New("tunnel client is closed")
		}
		if pc := c.conns[key]; pc != nil {
			if !bytes.Equal(pc.leaf, cur) || !c.cfg.Clock.Now().Before(pc.expires) {
				// Rotated, or one side's SVID expired: new streams go to a connection with
				// fresh credentials, the old one finishes its streams and closes.
				delete(c.conns, key)
				go c.retire(pc.cc)
			} else if pc.cc.Available() {
				c.mu.Unlock()
				return pc.cc, nil
			} else {
				delete(c.conns, key) // closing, GOAWAY or full: dial a successor
			}
		}
		if call := c.dialing[key]; call != nil {
			c.mu.Unlock()
			select {
			case <-call.done:
				if call.err != nil {
					return nil, call.err
				}
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("tunnel to %s: %w", peer.Addr, ctx.Err())
			}
		}
		call := &dialCall{done: make(chan struct{})}
		c.dialing[key] = call
		c.mu.Unlock()

		pc, err := c.dial(peer)
		c.mu.Lock()
		delete(c.dialing, key)
		if err == nil && !c.closed {
			c.conns[key] = pc
		} else if err == nil {
			pc.cc.Close()
			err = errors.New("tunnel client is closed")
		}
		call.err = err
		close(call.done)
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
}

// dial makes the TLS connection without the caller's ctx: other callers share the result, so
// one caller giving up must not fail it. DialTimeout bounds it instead.
func (c *TunnelClient) dial(peer Peer) (*peerConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.DialTimeout)
	defer cancel()
	raw, err := c.cfg.Dial(ctx, "tcp", peer.Addr)
	if err != nil {
		return nil, fmt.Errorf("tunnel to %s: %w", peer.Addr, err)
	}
	var used *x509svid.SVID
	tc := tls.Client(rawIO(raw), clientTLS(c.cfg.Creds, c.cfg.Clock, peer.ID, func(s *x509svid.SVID) { used = s }))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tunnel to %s: tls handshake (expecting %s): %w", peer.Addr, peer.ID, err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != alpnTunnel {
		tc.Close()
		return nil, fmt.Errorf("tunnel to %s: peer negotiated %q, want %q (is it a meshguard tunnel port?)", peer.Addr, p, alpnTunnel)
	}
	if used == nil {
		tc.Close()
		return nil, fmt.Errorf("tunnel to %s: peer did not request a client certificate", peer.Addr)
	}
	cc, err := h2tunnel.Client(tc, c.h2)
	if err != nil {
		tc.Close()
		return nil, fmt.Errorf("tunnel to %s: http2: %w", peer.Addr, err)
	}
	c.cfg.Log.Debug("tunnel connection up", "peer", peer.Addr, "peer_id", peer.ID.String())
	expires := used.Certificates[0].NotAfter
	if !c.cfg.Clock.Now().Before(expires) {
		tc.Close()
		return nil, fmt.Errorf("tunnel to %s: own SVID expired at %v: the workload client has not renewed it", peer.Addr, expires)
	}
	if peerLeaf := tc.ConnectionState().PeerCertificates[0]; peerLeaf.NotAfter.Before(expires) {
		expires = peerLeaf.NotAfter
	}
	return &peerConn{cc: cc, leaf: used.Certificates[0].Raw, expires: expires}, nil
}

func (c *TunnelClient) retire(cc *h2tunnel.Conn) {
	// Shutdown waits for the connection's streams to finish; they can be long-lived, and
	// nothing waits on this goroutine but the connection itself.
	_ = cc.Shutdown(context.Background())
}

// Close stops new streams and closes every pooled connection once its streams finished or ctx
// ended.
func (c *TunnelClient) Close(ctx context.Context) error {
	c.mu.Lock()
	c.closed = true
	conns := c.conns
	c.conns = map[string]*peerConn{}
	c.mu.Unlock()
	var errs []error
	for _, pc := range conns {
		if err := pc.cc.Shutdown(ctx); err != nil {
			_ = pc.cc.Close()
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// TunnelStream is one proxied byte stream inside the tunnel: Read, Write, CloseWrite (the
// peer delivers EOF to the app while the answer still comes back) and Close (RST_STREAM if
// still open).
type TunnelStream struct{ *h2tunnel.Stream }
