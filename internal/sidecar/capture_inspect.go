package sidecar

import (
	"context"
	"net/netip"

	mgcap "github.com/meshguard/meshguard/internal/capture"
)

// CaptureInspector records every stream's plaintext into a capture ring in front of next's
// observer, under a fresh conn ID that next finds in its context (threat events and
// captures name the same connection). self maps the inbound app address (loopback) to the
// pod's address, so the pcap shows the real endpoints; workload is "ns/name".
func CaptureInspector(mgr *mgcap.Manager, workload string, ids func() string, self func(netip.AddrPort) netip.AddrPort, next Inspector) Inspector {
	return func(ctx context.Context, s StreamInfo) StreamObserver {
		id := ids()
		ctx = withConnID(ctx, id)
		var obs StreamObserver
		if next != nil {
			obs = next(ctx, s)
		}
		dst := s.Dest
		if s.Direction == Inbound && self != nil {
			dst = self(dst)
		}
		cli, srv := pcapAddrs(s.SourceAddr, dst)
		rec := mgr.Open(mgcap.ConnInfo{ID: id, Workload: workload, Proto: mgcap.TCP, Client: cli, Server: srv})
		r := &recording{rec: rec, next: obs}
		if _, ok := obs.(h2Refuser); ok {
			return h2Recording{r} // keep the HTTP/2 layer under the inspector
		}
		return r
	}
}

// h2Recording is a recording whose inspector refuses single HTTP/2 streams (grpcdeny.go).
type h2Recording struct{ *recording }

func (h2Recording) refusesHTTP2() {}

// recording is Recorder.Tee that keeps the inner observer's Annotate (reports need it).
type recording struct {
	rec  *mgcap.Recorder
	next StreamObserver
}

func (r *recording) FromClient(p []byte) error {
	_ = r.rec.FromClient(p) // recorded first: a chunk the inspector refuses is in the capture
	if r.next == nil {
		return nil
	}
	return r.next.FromClient(p)
}

func (r *recording) FromServer(p []byte) error {
	_ = r.rec.FromServer(p)
	if r.next == nil {
		return nil
	}
	return r.next.FromServer(p)
}

// Close closes the inspector first: a trigger from its verdict still finds the ring open.
func (r *recording) Close() {
	if r.next != nil {
		r.next.Close()
	}
	r.rec.Close()
}

// Annotate implements Annotator.
func (r *recording) Annotate(rep *ConnReport) { annotate(r.next, rep) }

// pcapAddrs makes a conversation's endpoints writable as packets: plain IPv4 when mapped,
// the same family on both sides, and a placeholder for an unknown side.
func pcapAddrs(c, s netip.AddrPort) (netip.AddrPort, netip.AddrPort) {
	c = netip.AddrPortFrom(c.Addr().Unmap(), c.Port())
	s = netip.AddrPortFrom(s.Addr().Unmap(), s.Port())
	switch {
	case !c.Addr().IsValid() && !s.Addr().IsValid():
		return netip.AddrPortFrom(netip.IPv4Unspecified(), c.Port()), netip.AddrPortFrom(netip.IPv4Unspecified(), s.Port())
	case !c.Addr().IsValid():
		c = netip.AddrPortFrom(unspecifiedLike(s.Addr()), c.Port())
	case !s.Addr().IsValid():
		s = netip.AddrPortFrom(unspecifiedLike(c.Addr()), s.Port())
	case c.Addr().Is4() != s.Addr().Is4():
		s = netip.AddrPortFrom(unspecifiedLike(c.Addr()), s.Port())
	}
	return c, s
}

func unspecifiedLike(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}
