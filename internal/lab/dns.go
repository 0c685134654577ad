package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DNSConfig configures the lab DNS server.
type DNSConfig struct {
	Addr      string                // host:port to listen on (UDP and TCP), the bridge gateway:53
	Records   map[string]netip.Addr // FQDN (lower-case, trailing dot) → address
	Upstreams []string              // host:port resolvers for names outside cluster.local; may be empty
	Log       *slog.Logger
}

// ServiceRecords builds the A records of a lab: <svc>.<ns>.svc.cluster.local → VIP.
func ServiceRecords(s *State) map[string]netip.Addr {
	out := make(map[string]netip.Addr, len(s.Services))
	for _, sv := range s.Services {
		if ip, err := netip.ParseAddr(sv.VIP); err == nil {
			out[dns.Fqdn(strings.ToLower(sv.DNSName))] = ip
		}
	}
	return out
}

// DNSServer answers cluster.local names from Records and forwards other names upstream.
type DNSServer struct {
	cfg    DNSConfig
	client *dns.Client
	pc     net.PacketConn
}

// NewDNSServer validates cfg and builds the server.
func NewDNSServer(cfg DNSConfig) (*DNSServer, error) {
	if cfg.Log == nil {
		return nil, errors.New("lab dns: logger is required")
	}
	if _, err := netip.ParseAddrPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("lab dns: addr %q: want ip:port: %w", cfg.Addr, err)
	}
	return &DNSServer{cfg: cfg, client: &dns.Client{Timeout: 2 * time.Second}}, nil
}

// Listen binds the UDP and TCP sockets now (so bind errors surface before the lab is "ready")
// and returns a function that serves until ctx ends.
func (d *DNSServer) Listen(ctx context.Context) (run func() error, err error) {
	pc, err := net.ListenPacket("udp", d.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("lab dns: listen udp %s: %w", d.cfg.Addr, err)
	}
	ln, err := net.Listen("tcp", d.cfg.Addr)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("lab dns: listen tcp %s: %w", d.cfg.Addr, err)
	}
	d.pc = pc
	return func() error {
		udp := &dns.Server{PacketConn: pc, Handler: d}
		tcp := &dns.Server{Listener: ln, Handler: d}
		errc := make(chan error, 2)
		go func() { errc <- udp.ActivateAndServe() }()
		go func() { errc <- tcp.ActivateAndServe() }()
		select {
		case <-ctx.Done():
		case err := <-errc:
			d.cfg.Log.Error("lab dns stopped", "err", err)
		}
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
		return nil
	}, nil
}

// UDPAddr is the bound UDP address once Listen succeeded (useful with port 0).
func (d *DNSServer) UDPAddr() string { return d.pc.LocalAddr().String() }

// ServeDNS implements dns.Handler.
func (d *DNSServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	_ = w.WriteMsg(d.answer(req))
}

func (d *DNSServer) answer(req *dns.Msg) *dns.Msg {
	resp := new(dns.Msg)
	if len(req.Question) != 1 {
		return resp.SetRcode(req, dns.RcodeFormatError)
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if !dns.IsSubDomain("cluster.local.", name) {
		return d.forward(req)
	}
	resp.SetReply(req)
	resp.Authoritative = true
	ip, ok := d.cfg.Records[name]
	if !ok {
		resp.Rcode = dns.RcodeNameError
		return resp
	}
	if q.Qclass == dns.ClassINET && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY) {
		resp.Answer = append(resp.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
			A:   ip.AsSlice(),
		})
	}
	return resp // AAAA and others: NOERROR, no data
}

func (d *DNSServer) forward(req *dns.Msg) *dns.Msg {
	for _, up := range d.cfg.Upstreams {
		in, _, err := d.client.Exchange(req, up)
		if err == nil && in != nil {
			return in
		}
	}
	resp := new(dns.Msg)
	return resp.SetRcode(req, dns.RcodeServerFailure)
}

// HostUpstreams returns the nameservers of the host's resolv.conf as host:port.
func HostUpstreams(path string) []string {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(cc.Servers))
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	return out
}
