package sidecar

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/miekg/dns"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/dpi"
)

func TestDPIInspectorNamesProtocolFromBytes(t *testing.T) {
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	inspect := DPIInspector(eng)
	for _, tc := range []struct {
		name         string
		port         uint16
		client, serv string
		proto        string
		mismatch     bool
		l7           [2]string
	}{
		{"http on the redis port", 6379, "GET /cart HTTP/1.1\r\nHost: web\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "http", true, [2]string{"path", "/cart"}},
		{"redis on an http port", 8080, "*1\r\n$4\r\nPING\r\n", "+PONG\r\n", "redis", true, [2]string{}},
		{"http on its port", 80, "GET / HTTP/1.1\r\nHost: web\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "http", false, [2]string{"method", "GET"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := inspect(context.Background(), StreamInfo{Direction: Inbound, DestPort: tc.port})
			if err := obs.FromClient([]byte(tc.client)); err != nil {
				t.Fatal(err)
			}
			if err := obs.FromServer([]byte(tc.serv)); err != nil {
				t.Fatal(err)
			}
			obs.Close()
			var rep ConnReport
			annotate(obs, &rep)
			if rep.AppProtocol != tc.proto {
				t.Errorf("protocol %q, want %q (l7 %v)", rep.AppProtocol, tc.proto, rep.L7)
			}
			if got := rep.L7["mismatch"] == "true"; got != tc.mismatch {
				t.Errorf("mismatch %v, want %v (l7 %v)", got, tc.mismatch, rep.L7)
			}
			if k := tc.l7[0]; k != "" && !strings.Contains(rep.L7[k], tc.l7[1]) {
				t.Errorf("l7[%s] = %q, want %q (l7 %v)", k, rep.L7[k], tc.l7[1], rep.L7)
			}
			if p := rep.Proto(); p.GetAppProtocol() != tc.proto {
				t.Errorf("proto report app %q", p.GetAppProtocol())
			}
		})
	}
}

func TestDPIObserverBoundsWhatItFeeds(t *testing.T) {
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	obs := DPIInspector(eng)(context.Background(), StreamInfo{DestPort: 9000}).(*dpiObserver)
	chunk := make([]byte, 16<<10)
	for range 10 {
		if err := obs.FromClient(chunk); err != nil {
			t.Fatal(err)
		}
	}
	obs.Close()
	if got := obs.fl.Bytes(dpi.ClientToServer); got != dpiBudget {
		t.Fatalf("fed %d bytes, want the budget %d", got, dpiBudget)
	}
}

func TestDNSProxyForwardsToUpstream(t *testing.T) {
	answer := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		rr, _ := dns.NewRR(q.Question[0].Name + " 30 IN A 10.96.0.7")
		m.Answer = append(m.Answer, rr)
		_ = w.WriteMsg(m)
	})
	// The upstream serves UDP and TCP on one port, like the lab's DNS server.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*dns.Server{{Listener: ln, Handler: answer}, {PacketConn: pc, Handler: answer}} {
		up := make(chan struct{})
		s.NotifyStartedFunc = func() { close(up) }
		go func() { _ = s.ActivateAndServe() }()
		<-up
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	upstreamAddr := ln.Addr().String()

	port := freePort(t)
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	reports := make(chan ConnReport, 4)
	self := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/client")
	p, err := newDNSProxy(port, upstreamAddr, 0, &dnsInspection{eng: eng, self: self, report: func(r ConnReport) { reports <- r }}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	q := new(dns.Msg)
	q.SetQuestion("web.shop.svc.cluster.local.", dns.TypeA)
	for _, proto := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: proto, Timeout: 2 * time.Second}
		var resp *dns.Msg
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, _, err = c.Exchange(q, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond) // the proxy's listeners start asynchronously
		}
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		if len(resp.Answer) != 1 || !strings.Contains(resp.Answer[0].String(), "10.96.0.7") {
			t.Fatalf("%s answer: %v", proto, resp.Answer)
		}
		// Each forwarded exchange is inspected and reported as outbound DNS.
		select {
		case r := <-reports:
			if r.AppProtocol != "dns" || r.Direction != Outbound || r.Source != self ||
				!strings.Contains(r.L7["name"], "web.shop.svc.cluster.local") || r.DestAddr.String() != upstreamAddr {
				t.Fatalf("%s report: %+v", proto, r)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no report for the DNS exchange", proto)
		}
	}
}

func TestRuntimeConfigRefusesIncompleteConfig(t *testing.T) {
	good := RuntimeConfig{SPIFFEID: spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web"), Namespace: "shop", Workload: "web",
		IdentityAddr: "10.0.0.1:7444", XDSAddr: "10.0.0.1:7445", ServerCAs: newCA(t, "cluster.local").bundle().X509Authorities(),
		OutboundPort: 15001, InboundPort: 15006, TunnelPort: 15008, AdminPort: 15020, Clock: clockwork.NewRealClock(), Log: quietLog()}
	rt, err := NewRuntime(good)
	if err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	if rt.cfg.DNSPort != 0 {
		t.Errorf("DNS redirected to port %d without a DNS proxy (no upstream)", rt.cfg.DNSPort)
	}
	withDNS := good
	withDNS.UpstreamDNS = "10.0.0.1:53"
	if rt, err := NewRuntime(withDNS); err != nil {
		t.Errorf("with an upstream: %v", err)
	} else if rt.cfg.DNSPort != DefaultDNSPort {
		t.Errorf("with an upstream: dns port %d, want %d", rt.cfg.DNSPort, DefaultDNSPort)
	}
	for name, mut := range map[string]func(*RuntimeConfig){
		"spiffe-id": func(c *RuntimeConfig) { c.SPIFFEID = spiffeid.ID{} },
		"namespace": func(c *RuntimeConfig) { c.Namespace = "" },
		"xds":       func(c *RuntimeConfig) { c.XDSAddr = "" },
		"ca-file":   func(c *RuntimeConfig) { c.ServerCAs = nil },
		"ports":     func(c *RuntimeConfig) { c.TunnelPort = 0 },
	} {
		c := good
		mut(&c)
		if _, err := NewRuntime(c); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: err %v, want one naming %s", name, err, name)
		}
	}
}

func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// BenchmarkDPIObserverStream is the inspection cost of one short HTTP stream: flow, feed
// both ways, close and annotate the report.
func BenchmarkDPIObserverStream(b *testing.B) {
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		b.Fatal(err)
	}
	inspect := DPIInspector(eng)
	req := []byte("GET /cart HTTP/1.1\r\nHost: web\r\nUser-Agent: bench\r\n\r\n")
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + strings.Repeat("x", 1024))
	b.ReportAllocs()
	for b.Loop() {
		obs := inspect(context.Background(), StreamInfo{DestPort: 8080})
		_ = obs.FromClient(req)
		_ = obs.FromServer(resp)
		obs.Close()
		var rep ConnReport
		annotate(obs, &rep)
	}
}

// BenchmarkDPIObserverBulk is the per-chunk cost on a long stream past the DPI budget.
func BenchmarkDPIObserverBulk(b *testing.B) {
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		b.Fatal(err)
	}
	obs := DPIInspector(eng)(context.Background(), StreamInfo{DestPort: 9000})
	chunk := make([]byte, 32<<10)
	for range 4 {
		_ = obs.FromClient(chunk)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		_ = obs.FromClient(chunk)
	}
}
