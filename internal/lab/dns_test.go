package lab

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func startDNS(t *testing.T, records map[string]netip.Addr, upstreams []string) string {
	t.Helper()
	srv, err := NewDNSServer(DNSConfig{Addr: "127.0.0.1:0", Records: records, Upstreams: upstreams, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run, err := srv.Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = run(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv.UDPAddr()
}

func query(t *testing.T, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Timeout: 2 * time.Second}
	var in *dns.Msg
	var err error
	for i := 0; i < 3; i++ { // UDP: the server goroutine may not be serving yet; bounded retries
		if in, _, err = c.Exchange(m, addr); err == nil {
			return in
		}
	}
	t.Fatalf("query %s: %v", name, err)
	return nil
}

func TestDNSServer(t *testing.T) {
	st := &State{Services: []ServiceState{{Service: Service{Name: "web", Namespace: "shop"}, VIP: "10.96.0.1", DNSName: "web.shop.svc.cluster.local"}}}
	// A fake upstream answering every name with 192.0.2.7.
	upPC, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &dns.Server{PacketConn: upPC, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.IPv4(192, 0, 2, 7)})
		_ = w.WriteMsg(m)
	})}
	go func() { _ = up.ActivateAndServe() }()
	t.Cleanup(func() { _ = up.Shutdown() })

	addr := startDNS(t, ServiceRecords(st), []string{upPC.LocalAddr().String()})

	in := query(t, addr, "Web.Shop.svc.cluster.local.", dns.TypeA)
	if in.Rcode != dns.RcodeSuccess || len(in.Answer) != 1 || in.Answer[0].(*dns.A).A.String() != "10.96.0.1" {
		t.Fatalf("A web: %v", in)
	}
	in = query(t, addr, "web.shop.svc.cluster.local.", dns.TypeAAAA)
	if in.Rcode != dns.RcodeSuccess || len(in.Answer) != 0 {
		t.Fatalf("AAAA web: want NOERROR without data, got %v", in)
	}
	in = query(t, addr, "nope.shop.svc.cluster.local.", dns.TypeA)
	if in.Rcode != dns.RcodeNameError {
		t.Fatalf("unknown service: want NXDOMAIN, got %v", in)
	}
	in = query(t, addr, "example.org.", dns.TypeA)
	if len(in.Answer) != 1 || in.Answer[0].(*dns.A).A.String() != "192.0.2.7" {
		t.Fatalf("forwarded: %v", in)
	}
}

func TestDNSServerNoUpstream(t *testing.T) {
	addr := startDNS(t, nil, nil)
	if in := query(t, addr, "example.org.", dns.TypeA); in.Rcode != dns.RcodeServerFailure {
		t.Fatalf("want SERVFAIL without upstreams, got %v", in)
	}
}

// FuzzDNSAnswer feeds arbitrary queries (pods send the lab DNS whatever they like) to the
// handler: it must never panic and must answer cluster.local names without upstreams.
func FuzzDNSAnswer(f *testing.F) {
	seed := func(name string, qt uint16) []byte {
		m := new(dns.Msg)
		m.SetQuestion(name, qt)
		b, _ := m.Pack()
		return b
	}
	f.Add(seed("web.shop.svc.cluster.local.", dns.TypeA))
	f.Add(seed("x.cluster.local.", dns.TypeAAAA))
	f.Add(seed("example.org.", dns.TypeA))
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0})
	srv, err := NewDNSServer(DNSConfig{Addr: "127.0.0.1:0", Records: map[string]netip.Addr{"web.shop.svc.cluster.local.": netip.MustParseAddr("10.96.0.1")}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(dns.Msg)
		if req.Unpack(b) != nil {
			return
		}
		resp := srv.answer(req, false)
		if resp == nil || resp.Id != req.Id {
			t.Fatalf("bad response %v to %v", resp, req)
		}
		if _, err := resp.Pack(); err != nil && len(req.Question) == 1 && dns.IsSubDomain("cluster.local.", req.Question[0].Name) {
			t.Fatalf("response does not pack: %v", err)
		}
	})
}
