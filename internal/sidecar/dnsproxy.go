package sidecar

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	mgcap "github.com/meshguard/meshguard/internal/capture"
	"github.com/meshguard/meshguard/internal/dpi"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/intercept"
	"github.com/meshguard/meshguard/internal/threat"
)

// dnsProxy answers the app's redirected DNS queries by forwarding them to the upstream
// resolver from marked sockets (so they are not redirected back). It listens on loopback
// only: answers must leave from the address the redirect delivered to.
type dnsProxy struct {
	servers []*dns.Server
	log     *slog.Logger
}

// dnsInspection runs each forwarded exchange through DPI and reports it like a connection
// (app "dns", qname/qtype/rcode in L7), so outbound DNS shows in reports and the graph; with
// threats it runs the DNS tunnel detector on each query before forwarding (a blocking
// decision answers REFUSED), and with a capture manager it records each client's queries
// and answers so a triggered capture holds the tunnel traffic. A nil report turns the
// connection reports off.
type dnsInspection struct {
	eng     *dpi.Engine
	self    spiffeid.ID
	report  func(ConnReport)
	threats *Threats      // nil: no threat detection
	recs    *dnsRecorders // nil: DNS is not recorded
}

func (in *dnsInspection) observe(src net.Addr, upstream string, qb, rb []byte, start time.Time, took time.Duration) {
	if in == nil || in.report == nil || len(qb) == 0 {
		return
	}
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
	if rep.L7 == nil {
		rep.L7 = map[string]string{}
	}
	// The hop to the pod's resolver, not a flow the app chose: the controller records it but
	// does not judge it against the policy (resolution must work in every mode).
	rep.L7["resolver"] = "true"
	in.report(rep)
}

// refuse runs the DNS detectors on q from src; true when the decision blocks it.
func (in *dnsInspection) refuse(src netip.AddrPort, connID, upstream string, q *dns.Msg) bool {
	if in == nil || in.threats == nil {
		return false
	}
	t := in.threats
	var f []threat.Finding
	l7 := ""
	for _, qq := range q.Question {
		qt := dns.Type(qq.Qtype).String()
		n := len(f)
		f = t.dns.Observe(threat.DNSQuery{Client: t.cfg.Workload, Name: []byte(qq.Name), QType: qt}, f)
		if len(f) > n && l7 == "" {
			l7 = clip(qt+" "+qq.Name, 256)
		}
	}
	if len(f) == 0 {
		return false
	}
	v := t.view.Load()
	sc := &threatScope{view: v, connID: connID, protocol: "dns", l7: l7, captureWorkload: true,
		src: events.Endpoint{Workload: v.workload, Group: v.group}, dst: events.Endpoint{Address: upstream}}
	if !v.self.IsZero() {
		sc.src.Identity = v.self.String()
	}
	if src.IsValid() {
		sc.src.Address = netip.AddrPortFrom(src.Addr().Unmap(), src.Port()).String()
	}
	return t.act(sc, f).block
}

// handler answers one query: detect, forward (or refuse), record, report.
func (in *dnsInspection) handler(c *dns.Client, upstream string, log *slog.Logger) dns.HandlerFunc {
	return func(w dns.ResponseWriter, q *dns.Msg) {
		start := time.Now()
		src, _ := netip.ParseAddrPort(w.RemoteAddr().String())
		qb, _ := q.Pack()
		var rec *dnsRec
		if in != nil && in.recs != nil {
			rec = in.recs.get(src)
			_ = rec.rec.FromClient(qb)
		}
		id := ""
		if rec != nil {
			id = rec.id
		}
		var resp *dns.Msg
		if in.refuse(src, id, upstream, q) {
			resp = new(dns.Msg)
			resp.SetRcode(q, dns.RcodeRefused)
		} else {
			var err error
			resp, _, err = c.Exchange(q, upstream)
			if err != nil {
				log.Debug("dns upstream failed", "err", err)
				resp = new(dns.Msg)
				resp.SetRcode(q, dns.RcodeServerFailure)
			}
		}
		_ = w.WriteMsg(resp)
		rb, _ := resp.Pack()
		if rec != nil {
			_ = rec.rec.FromServer(rb)
		}
		in.observe(w.RemoteAddr(), upstream, qb, rb, start, time.Since(start))
	}
}

func newDNSProxy(port uint16, upstream string, mark int, inspect *dnsInspection, log *slog.Logger) (*dnsProxy, error) {
	if _, _, err := net.SplitHostPort(upstream); err != nil {
		return nil, fmt.Errorf("sidecar: --upstream-dns %q: want host:port (%v)", upstream, err)
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: intercept.MarkControl(mark)}
	p := &dnsProxy{log: log}
	for _, host := range []string{"127.0.0.1", "::1"} {
		addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
		for _, proto := range []string{"udp", "tcp"} {
			c := &dns.Client{Net: proto, Dialer: dialer, Timeout: 5 * time.Second}
			p.servers = append(p.servers, &dns.Server{Addr: addr, Net: proto, Handler: inspect.handler(c, upstream, log)})
		}
	}
	return p, nil
}

// dnsRecorders keeps one capture recorder per DNS client address (the app's socket), the
// most recent maxDNSRecorders, each closed after dnsRecorderIdle without a query.
type dnsRecorders struct {
	mgr      *mgcap.Manager
	workload string
	server   netip.AddrPort // the upstream, as the pcap's server side
	ids      func() string

	mu     sync.Mutex
	byAddr map[netip.AddrPort]*list.Element
	lru    list.List // of *dnsRec, most recent first
}

type dnsRec struct {
	addr netip.AddrPort
	id   string
	rec  *mgcap.Recorder
	last time.Time
}

const (
	maxDNSRecorders = 256
	dnsRecorderIdle = 30 * time.Second
)

func newDNSRecorders(mgr *mgcap.Manager, workload, upstream string, ids func() string) *dnsRecorders {
	srv, err := netip.ParseAddrPort(upstream)
	if err != nil {
		srv = netip.AddrPortFrom(netip.IPv4Unspecified(), 53)
	}
	return &dnsRecorders{mgr: mgr, workload: workload, server: srv, ids: ids, byAddr: map[netip.AddrPort]*list.Element{}}
}

func (d *dnsRecorders) get(src netip.AddrPort) *dnsRec {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.byAddr[src]; ok {
		r := e.Value.(*dnsRec)
		r.last = now
		d.lru.MoveToFront(e)
		return r
	}
	for e := d.lru.Back(); e != nil && (d.lru.Len() >= maxDNSRecorders || now.Sub(e.Value.(*dnsRec).last) > dnsRecorderIdle); e = d.lru.Back() {
		r := e.Value.(*dnsRec)
		r.rec.Close()
		delete(d.byAddr, r.addr)
		d.lru.Remove(e)
	}
	cli, srv := pcapAddrs(src, d.server)
	r := &dnsRec{addr: src, id: d.ids(), last: now}
	r.rec = d.mgr.Open(mgcap.ConnInfo{ID: r.id, Workload: d.workload, Proto: mgcap.UDP, Client: cli, Server: srv})
	d.byAddr[src] = d.lru.PushFront(r)
	return r
}

// close ends every recorder (the proxy stopped).
func (d *dnsRecorders) close() {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for e := d.lru.Front(); e != nil; e = e.Next() {
		e.Value.(*dnsRec).rec.Close()
	}
	d.lru.Init()
	clear(d.byAddr)
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
