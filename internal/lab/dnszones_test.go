package lab

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

func TestParseTopologyDNSZones(t *testing.T) {
	src := goodTopology + "dns:\n  zones:\n    - name: T.Example.NET\n      server: shop/client\n    - name: other.example.org.\n      server: 192.0.2.9:5353\n"
	topo, err := ParseTopology("shop.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	z := topo.DNS.Zones
	if len(z) != 2 || z[0].Name != "t.example.net." || z[0].Server != "shop/client" || z[1].Name != "other.example.org." || z[1].Server != "192.0.2.9:5353" {
		t.Fatalf("zones: %+v", z)
	}
	st, err := Plan(topo, t.TempDir(), DefaultPodCIDR, DefaultServiceCIDR)
	if err != nil {
		t.Fatal(err)
	}
	client := st.Pods[2] // web-0, web-1, client
	want := []ForwardZone{{Name: "t.example.net.", Server: client.IP + ":53", Pod: "shop/client"}, {Name: "other.example.org.", Server: "192.0.2.9:5353"}}
	if len(st.DNSZones) != 2 || st.DNSZones[0] != want[0] || st.DNSZones[1] != want[1] {
		t.Fatalf("planned zones %+v, want %+v", st.DNSZones, want)
	}
	if _, err := NewDNSServer(DNSConfig{Addr: "127.0.0.1:0", Zones: st.DNSZones, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
		t.Fatalf("the daemon's DNS server refuses the planned zones: %v", err)
	}
}

func TestParseTopologyDNSZoneMistakes(t *testing.T) {
	pod := "pods:\n  - name: a\n    namespace: ext\n    command: [x]\n"
	cases := []struct{ name, src, want string }{
		{"unknown pod", pod + "dns:\n  zones:\n    - {name: t.example.net, server: ext/b}\n", `t.yaml:7: dns.zones[0].server: no pod "ext/b" in this topology`},
		{"bad server", pod + "dns:\n  zones:\n    - {name: t.example.net, server: dnsserver}\n", `t.yaml:7: dns.zones[0].server: "dnsserver" is neither a pod`},
		{"server without port", pod + "dns:\n  zones:\n    - {name: t.example.net, server: 10.0.0.9}\n", `dns.zones[0].server: "10.0.0.9" is neither`},
		{"missing server", pod + "dns:\n  zones:\n    - {name: t.example.net}\n", `t.yaml:7: dns.zones[0].server: missing`},
		{"missing name", pod + "dns:\n  zones:\n    - {server: ext/a}\n", `t.yaml:7: dns.zones[0].name: missing`},
		{"bad name", pod + "dns:\n  zones:\n    - {name: \"t..example\", server: ext/a}\n", `dns.zones[0].name: "t..example" is not a DNS name`},
		{"root", pod + "dns:\n  zones:\n    - {name: \".\", server: ext/a}\n", `dns.zones[0].name: must not be empty or the root`},
		{"cluster.local", pod + "dns:\n  zones:\n    - {name: x.svc.cluster.local, server: ext/a}\n", `inside cluster.local`},
		{"twice", pod + "dns:\n  zones:\n    - {name: t.example.net, server: ext/a}\n    - {name: T.example.net., server: ext/a}\n", `t.yaml:8: dns.zones[1].name: zone "T.example.net." is listed twice (first at line 7`},
		{"unknown field", pod + "dns:\n  zones:\n    - {name: t.example.net, server: ext/a, port: 53}\n", `dns.zones[0].port: unknown field (known: name, server)`},
		{"unknown dns field", pod + "dns:\n  forward: []\n", `t.yaml:6: dns.forward: unknown field (known: zones)`},
		{"zones not a list", pod + "dns:\n  zones: t.example.net\n", `t.yaml:6: dns.zones: want a list`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTopology("t.yaml", []byte(tc.src), nil)
			wantErr(t, err, tc.want)
		})
	}
}

// zoneServer is an authoritative server for a delegated zone on loopback, UDP and TCP on
// the same port; it answers TXT with the transport it saw and counts queries.
type zoneServer struct {
	addr    string
	queries atomic.Int32
}

func startZoneServer(t *testing.T) *zoneServer {
	t.Helper()
	z := &zoneServer{}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		z.queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		proto := "udp"
		if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
			proto = "tcp"
		}
		// Echo the query name as the server received it (case preserved: tunnels encode data in it).
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{proto, r.Question[0].Name}})
		_ = w.WriteMsg(m)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		ln.Close()
		t.Skipf("udp port %s taken (tcp twin free): %v", ln.Addr(), err)
	}
	udp := &dns.Server{PacketConn: pc, Handler: handler}
	tcp := &dns.Server{Listener: ln, Handler: handler}
	go func() { _ = udp.ActivateAndServe() }()
	go func() { _ = tcp.ActivateAndServe() }()
	t.Cleanup(func() { _ = udp.Shutdown(); _ = tcp.Shutdown() })
	z.addr = ln.Addr().String()
	return z
}

func exchange(t *testing.T, network, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Net: network}
	var err error
	for i := 0; i < 3; i++ { // the servers' goroutines may not be serving yet; bounded retries
		var in *dns.Msg
		if in, _, err = c.Exchange(m, addr); err == nil {
			return in
		}
	}
	t.Fatalf("%s query %s: %v", network, name, err)
	return nil
}

func txt(m *dns.Msg) []string {
	if len(m.Answer) != 1 {
		return nil
	}
	if tx, ok := m.Answer[0].(*dns.TXT); ok {
		return tx.Txt
	}
	return nil
}

func TestDNSServerDelegatesZones(t *testing.T) {
	zone := startZoneServer(t)
	inner := startZoneServer(t)
	st := &State{Services: []ServiceState{{Service: Service{Name: "web", Namespace: "shop"}, VIP: "10.96.0.1", DNSName: "web.shop.svc.cluster.local"}}}
	srv, err := NewDNSServer(DNSConfig{Addr: "127.0.0.1:0", Records: ServiceRecords(st), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Zones: []ForwardZone{{Name: "t.example.net.", Server: zone.addr}, {Name: "deep.t.example.net.", Server: inner.addr}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	run, err := srv.Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = run(); close(done) }()
	t.Cleanup(func() { <-done }) // t.Context ends before cleanups run
	addr := srv.UDPAddr()

	// Names in the zone (any case, data in the labels) reach its server over the query's transport.
	name := "AbC123xYz.Data.T.Example.Net."
	for _, network := range []string{"udp", "tcp"} {
		in := exchange(t, network, addr, name, dns.TypeTXT)
		if got := txt(in); in.Rcode != dns.RcodeSuccess || len(got) != 2 || got[0] != network || got[1] != name {
			t.Fatalf("%s: delegated answer %v, want TXT [%s %s]", network, in, network, name)
		}
	}
	if in := exchange(t, "udp", addr, "t.example.net.", dns.TypeTXT); len(txt(in)) != 2 {
		t.Fatalf("the zone apex is not delegated: %v", in)
	}
	if n := zone.queries.Load(); n != 3 {
		t.Fatalf("zone server saw %d queries, want 3", n)
	}
	// The most specific zone wins.
	if in := exchange(t, "udp", addr, "x.deep.t.example.net.", dns.TypeTXT); len(txt(in)) != 2 || inner.queries.Load() != 1 {
		t.Fatalf("sub-zone: %v (inner server saw %d)", in, inner.queries.Load())
	}
	// A look-alike outside the zone is not delegated; cluster.local is still answered locally.
	if in := exchange(t, "udp", addr, "xt.example.net.", dns.TypeTXT); in.Rcode != dns.RcodeServerFailure || zone.queries.Load() != 3 {
		t.Fatalf("xt.example.net: %v (zone server saw %d queries, want no new one)", in, zone.queries.Load())
	}
	if in := exchange(t, "tcp", addr, "web.shop.svc.cluster.local.", dns.TypeA); len(in.Answer) != 1 || in.Answer[0].(*dns.A).A.String() != "10.96.0.1" {
		t.Fatalf("cluster.local over tcp: %v", in)
	}
}

func TestDNSServerDelegatedZoneDown(t *testing.T) {
	ln, err := net.ListenPacket("udp", "127.0.0.1:0") // bound and never read: queries time out
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := tl.Addr().String()
	tl.Close() // closed: TCP queries are refused at once
	addr := startDNSWithZones(t, []ForwardZone{{Name: "t.example.net.", Server: dead}})
	if in := exchange(t, "tcp", addr, "a.t.example.net.", dns.TypeA); in.Rcode != dns.RcodeServerFailure {
		t.Fatalf("dead zone server: want SERVFAIL, got %v", in)
	}
}

func startDNSWithZones(t *testing.T, zones []ForwardZone) string {
	t.Helper()
	srv, err := NewDNSServer(DNSConfig{Addr: "127.0.0.1:0", Zones: zones, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	run, err := srv.Listen(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = run(); close(done) }()
	t.Cleanup(func() { <-done })
	return srv.UDPAddr()
}

func TestNewDNSServerRefusesBadZones(t *testing.T) {
	for _, z := range []ForwardZone{{Name: "t.example.net", Server: "127.0.0.1:53"}, {Name: ".", Server: "127.0.0.1:53"}, {Name: "t.example.net.", Server: "ext/dns"}} {
		_, err := NewDNSServer(DNSConfig{Addr: "127.0.0.1:0", Zones: []ForwardZone{z}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err == nil || !strings.Contains(err.Error(), "zones[0]") {
			t.Errorf("zone %+v: want an error naming zones[0], got %v", z, err)
		}
	}
}
