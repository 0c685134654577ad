package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DNSConfig configures the lab DNS server.
type DNSConfig struct {
	Addr      string                // host:port to listen on (UDP and TCP), the bridge gateway:53
	Records   map[string]netip.Addr // FQDN (lower-case, trailing dot) → address
	Upstreams []string              // host:port resolvers for names outside cluster.local; may be empty
	// Zones are delegated to their servers (longest match wins), over the transport the
	// query came in on, before cluster.local and the upstreams are considered.
	Zones []ForwardZone
	Log   *slog.Logger
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

// DNSServer answers cluster.local names from Records, forwards delegated zones to their
// servers and other names upstream.
type DNSServer struct {
	cfg    DNSConfig
	client *dns.Client // UDP
	tcp    *dns.Client
	zones  []ForwardZone // longest name first
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
	zones := make([]ForwardZone, 0, len(cfg.Zones))
	for i, z := range cfg.Zones {
		if _, ok := dns.IsDomainName(z.Name); !ok || !dns.IsFqdn(z.Name) || z.Name == "." {
			return nil, fmt.Errorf("lab dns: zones[%d].name %q: want a domain with a trailing dot such as t.example.net.", i, z.Name)
		}
		if _, err := netip.ParseAddrPort(z.Server); err != nil {
			return nil, fmt.Errorf("lab dns: zones[%d].server %q: want ip:port: %w", i, z.Server, err)
		}
		zones = append(zones, ForwardZone{Name: strings.ToLower(z.Name), Server: z.Server, Pod: z.Pod})
	}
	sort.SliceStable(zones, func(i, j int) bool { return dns.CountLabel(zones[i].Name) > dns.CountLabel(zones[j].Name) })
	return &DNSServer{cfg: cfg, zones: zones,
		client: &dns.Client{Timeout: 2 * time.Second},
		tcp:    &dns.Client{Net: "tcp", Timeout: 2 * time.Second},
	}, nil
}

// Listen binds the UDP and TCP sockets now (so bind errors surface before the lab is "ready")
// and returns a function that serves until ctx ends.
func (d *DNSServer) Listen(ctx context.Context) (run func() error, err error) {
	pc, err := net.ListenPacket("udp", d.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("lab dns: listen udp %s: %w", d.cfg.Addr, err)
	}
	// TCP on the port UDP got (the same as Addr's unless Addr asked for port 0).
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("lab dns: listen tcp %s: %w", pc.LocalAddr(), err)
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

// UDPAddr is the bound address once Listen succeeded (useful with port 0); TCP listens on
// the same port.
func (d *DNSServer) UDPAddr() string { return d.pc.LocalAddr().String() }

// ServeDNS implements dns.Handler.
func (d *DNSServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	_, overTCP := w.RemoteAddr().(*net.TCPAddr)
	_ = w.WriteMsg(d.answer(req, overTCP))
}

// answer builds the reply; overTCP says how the query came, so a delegated zone's server sees
// the same transport (a TCP-only tunnel or a truncated answer keeps working).
func (d *DNSServer) answer(req *dns.Msg, overTCP bool) *dns.Msg {
	resp := new(dns.Msg)
	if len(req.Question) != 1 {
		return resp.SetRcode(req, dns.RcodeFormatError)
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if z, ok := d.zoneOf(name); ok {
		return d.delegate(req, z, overTCP)
	}
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

// zoneOf finds the most specific delegated zone holding name (lower-case).
func (d *DNSServer) zoneOf(name string) (ForwardZone, bool) {
	for _, z := range d.zones {
		if dns.IsSubDomain(z.Name, name) {
			return z, true
		}
	}
	return ForwardZone{}, false
}

func (d *DNSServer) delegate(req *dns.Msg, z ForwardZone, overTCP bool) *dns.Msg {
	c := d.client
	if overTCP {
		c = d.tcp
	}
	in, _, err := c.Exchange(req, z.Server)
	if err != nil || in == nil {
		d.cfg.Log.Debug("lab dns: delegated zone server failed", "zone", z.Name, "server", z.Server, "err", err)
		return new(dns.Msg).SetRcode(req, dns.RcodeServerFailure)
	}
	return in
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
