package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/miekg/dns"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/dpi"
	"github.com/meshguard/meshguard/internal/intercept"
)

// dnsProxy answers the app's redirected DNS queries by forwarding them to the upstream
// resolver from marked sockets (so they are not redirected back). It listens on loopback
// only: answers must leave from the address the redirect delivered to.
type dnsProxy struct {
	servers []*dns.Server
	log     *slog.Logger
}

// dnsInspection runs each forwarded exchange through DPI and reports it like a connection
// (app "dns", qname/qtype/rcode in L7), so outbound DNS shows in reports and the graph.
// A nil report turns it off.
type dnsInspection struct {
	eng    *dpi.Engine
	self   spiffeid.ID
	report func(ConnReport)
}

func (in *dnsInspection) observe(src net.Addr, upstream string, q, resp *dns.Msg, start time.Time, took time.Duration) {
	if in == nil || in.report == nil {
		return
	}
	qb, err := q.Pack()
	if err != nil {
		return
	}
	rb, _ := resp.Pack()
	o := &dpiObserver{fl: in.eng.NewFlow(dpi.FlowInfo{Transport: dpi.UDP, ServerPort: 53}, nil)}
	_ = o.FromClient(qb)
	if len(rb) > 0 {
		_ = o.FromServer(rb)
	}
	o.Close()
	rep := ConnReport{Direction: Outbound, Source: in.self, Start: start, Duration: took,
		BytesSent: int64(len(qb)), BytesReceived: int64(len(rb)), Reason: ReasonClosed}
	if ap, err := netip.ParseAddrPort(src.String()); err == nil {
		rep.SourceAddr = ap
	}
	if ap, err := netip.ParseAddrPort(upstream); err == nil {
		rep.DestAddr = ap
	}
	o.Annotate(&rep)
	in.report(rep)
}

func newDNSProxy(port uint16, upstream string, mark int, inspect *dnsInspection, log *slog.Logger) (*dnsProxy, error) {
	if _, _, err := net.SplitHostPort(upstream); err != nil {
		return nil, fmt.Errorf("sidecar: --upstream-dns %q: want host:port (%v)", upstream, err)
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: intercept.MarkControl(mark)}
	handler := func(proto string) dns.HandlerFunc {
		c := &dns.Client{Net: proto, Dialer: dialer, Timeout: 5 * time.Second}
		return func(w dns.ResponseWriter, q *dns.Msg) {
			start := time.Now()
			resp, _, err := c.Exchange(q, upstream)
			if err != nil {
				log.Debug("dns upstream failed", "err", err)
				m := new(dns.Msg)
				m.SetRcode(q, dns.RcodeServerFailure)
				resp = m
			}
			_ = w.WriteMsg(resp)
			inspect.observe(w.RemoteAddr(), upstream, q, resp, start, time.Since(start))
		}
	}
	p := &dnsProxy{log: log}
	for _, host := range []string{"127.0.0.1", "::1"} {
		addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
		for _, proto := range []string{"udp", "tcp"} {
			p.servers = append(p.servers, &dns.Server{Addr: addr, Net: proto, Handler: handler(proto)})
		}
	}
	return p, nil
}

func (p *dnsProxy) run(ctx context.Context) error {
	errc := make(chan error, len(p.servers))
	started := 0
	for _, s := range p.servers {
		up := make(chan struct{})
		s.NotifyStartedFunc = func() { close(up) }
		go func() { errc <- s.ListenAndServe() }()
		select {
		case <-up:
			started++
		case err := <-errc:
			// ::1 is missing when the pod has IPv6 disabled; IPv4 must work.
			if s.Addr[0] != '[' {
				p.shutdown()
				return fmt.Errorf("dns proxy on %s/%s: %w", s.Addr, s.Net, err)
			}
			p.log.Debug("dns proxy: no IPv6 loopback", "err", err)
		}
	}
	<-ctx.Done()
	p.shutdown()
	for ; started > 0; started-- {
		if err := <-errc; err != nil && !errors.Is(err, net.ErrClosed) {
			p.log.Debug("dns proxy stopped", "err", err)
		}
	}
	return nil
}

func (p *dnsProxy) shutdown() {
	for _, s := range p.servers {
		_ = s.Shutdown()
	}
}
