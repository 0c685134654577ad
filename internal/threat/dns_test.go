package threat

import (
	"errors"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/jonboulle/clockwork"
	"github.com/miekg/dns"
)

func newDNS(t testing.TB, cfg DNSConfig) (*DNSDetector, *clockwork.FakeClock) {
	t.Helper()
	clk := clockwork.NewFakeClock()
	cfg.Clock = clk
	d, err := NewDNS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d, clk
}

// pcapQueries returns the DNS questions sent by clients in a pcap (UDP to port 53).
func pcapQueries(t *testing.T, path string) []DNSQuery {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var out []DNSQuery
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pkt := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		udp, _ := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if udp == nil || ip == nil || udp.DstPort != 53 {
			continue
		}
		var m dns.Msg
		if err := m.Unpack(udp.Payload); err != nil || len(m.Question) == 0 {
			continue
		}
		q := m.Question[0]
		qt, ok := dns.TypeToString[q.Qtype]
		if !ok {
			qt = "TYPE" + strconv.Itoa(int(q.Qtype))
		}
		out = append(out, DNSQuery{Client: ip.SrcIP.String(), Name: []byte(q.Name), QType: qt})
	}
	return out
}

// replay feeds qs to a fresh detector at one query per 100 ms; it returns the findings and
// the index of the query that produced the first one (-1 if none did).
func replay(t *testing.T, qs []DNSQuery) (found []Finding, first int) {
	t.Helper()
	d, clk := newDNS(t, DNSConfig{})
	first = -1
	for i, q := range qs {
		found = d.Observe(q, found)
		if len(found) > 0 && first < 0 {
			first = i
		}
		clk.Advance(100 * time.Millisecond)
	}
	return found, first
}

// TestIodineTunnelDetected replays the questions of a real iodine session (testdata/iodine.pcap,
// made by testdata/gen-iodine.sh) at one query per 100 ms.
func TestIodineTunnelDetected(t *testing.T) {
	qs := pcapQueries(t, "testdata/iodine.pcap")
	if len(qs) < 20 {
		t.Fatalf("only %d queries in the capture", len(qs))
	}
	found, first := replay(t, qs)
	if first > 10 {
		t.Fatalf("tunnel reported only after %d queries", first+1)
	}
	if len(found) != 1 || found[0].Detector != DNSTunnel || found[0].Location != "dns:tunnel.test" {
		t.Fatalf("want one dns-tunnel finding for tunnel.test, got %v", found)
	}
	t.Logf("%v", found[0])

	// Without the NULL type (iodine -T A / -T CNAME) the names alone give it away.
	d, _ := newDNS(t, DNSConfig{})
	found = found[:0]
	for _, q := range qs {
		q.QType = "A"
		found = d.Observe(q, found)
	}
	if len(found) != 1 {
		t.Fatalf("iodine names as A queries: %v", found)
	}
	t.Logf("%v", found[0])
}

// TestDNS2TCPTunnelDetected replays a real dns2tcp session (testdata/dns2tcp.pcap, made by
// testdata/gen-dns2tcp.sh): base64 data in TXT queries.
func TestDNS2TCPTunnelDetected(t *testing.T) {
	qs := pcapQueries(t, "testdata/dns2tcp.pcap")
	if len(qs) < 20 {
		t.Fatalf("only %d queries in the capture", len(qs))
	}
	found, first := replay(t, qs)
	if len(found) != 1 || found[0].Detector != DNSTunnel || found[0].Location != "dns:tunnel2.test" || first > 15 {
		t.Fatalf("want one dns-tunnel finding for tunnel2.test within 16 queries, got %v after %d", found, first+1)
	}
	t.Logf("after %d queries: %v", first+1, found[0])
}

// TestBenignDNSQuiet: everyday names, each resolved repeatedly by one client, raise nothing.
func TestBenignDNSQuiet(t *testing.T) {
	names := []struct{ name, qtype string }{
		{"www.google.com", "A"}, {"www.google.com", "AAAA"}, {"mail.google.com", "A"}, {"accounts.google.com", "A"},
		{"d1a2b3c4d5e6f7.cloudfront.net", "A"}, {"e1234.dscb.akamaiedge.net", "A"}, {"a248.e.akamai.net", "A"},
		{"my-loadbalancer-1234567890.us-west-2.elb.amazonaws.com", "A"}, {"ec2-54-123-45-67.compute-1.amazonaws.com", "A"},
		{"r3---sn-4g5e6nsz.googlevideo.com", "A"}, {"s3.dualstack.us-east-1.amazonaws.com", "AAAA"},
		{"vpce-0a1b2c3d4e5f67890-abcdefgh.s3.us-east-1.vpce.amazonaws.com", "A"},
		{"_sip._tcp.example.com", "SRV"}, {"_xmpp-client._tcp.jabber.org", "SRV"}, {"_ldap._tcp.dc._msdcs.corp.example.com", "SRV"},
		{"selector1._domainkey.example.com", "TXT"}, {"google._domainkey.example.org", "TXT"}, {"_dmarc.example.com", "TXT"},
		{"example.com", "TXT"}, {"example.com", "MX"}, {"my-svc.my-namespace.svc.cluster.local", "A"},
		{"10-244-1-5.default.pod.cluster.local", "A"}, {"_http._tcp.my-svc.prod.svc.cluster.local", "SRV"},
		{"api.github.com", "A"}, {"objects.githubusercontent.com", "A"}, {"registry-1.docker.io", "A"},
		{"production.cloudflare.docker.com", "A"}, {"www.bbc.co.uk", "A"}, {"news.bbc.co.uk", "AAAA"},
		{"login.microsoftonline.com", "A"}, {"outlook.office365.com", "CNAME"}, {"time.windows.com", "A"},
		{"1.debian.pool.ntp.org", "A"}, {"deb.debian.org", "AAAA"}, {"security.debian.org", "A"},
		{"fonts.gstatic.com", "A"}, {"ajax.googleapis.com", "A"}, {"connect.facebook.net", "A"},
		{"a1b2c3d4.execute-api.eu-west-1.amazonaws.com", "A"}, {"storage.googleapis.com", "A"},
		{"xn--bcher-kva.example", "A"}, {"kubernetes.default.svc.cluster.local", "A"},
		{"_acme-challenge.www.example.com", "TXT"}, {"s1024._domainkey.yahoo.com", "TXT"},
	}
	d, clk := newDNS(t, DNSConfig{})
	for round := 0; round < 20; round++ {
		for _, n := range names {
			if f := d.Observe(DNSQuery{Client: "10.0.0.5", Name: []byte(n.name + "."), QType: n.qtype}, nil); len(f) > 0 {
				t.Fatalf("benign %s %s: %v", n.name, n.qtype, f)
			}
			clk.Advance(50 * time.Millisecond)
		}
	}
}

func TestDNSSignals(t *testing.T) {
	t.Run("base32 labels", func(t *testing.T) {
		d, _ := newDNS(t, DNSConfig{})
		var f []Finding
		for i := 0; i < 5; i++ {
			name := "mzxw6ytboi" + strconv.Itoa(i) + "qgc3tfnzsxe43tn5.xw4zlsnzqxgz3fmfxgg" + strconv.Itoa(i) + ".exfil.example.com"
			f = d.Observe(DNSQuery{Client: "c", Name: []byte(name), QType: "A"}, f)
		}
		if len(f) != 1 || f[0].Location != "dns:example.com" {
			t.Fatalf("got %v", f)
		}
	})
	t.Run("unique names", func(t *testing.T) {
		d, _ := newDNS(t, DNSConfig{UniqueNames: 50})
		var f []Finding
		for i := 0; i < 60; i++ {
			f = d.Observe(DNSQuery{Client: "c", Name: []byte("h" + strconv.Itoa(i*7919) + ".data.evil.org"), QType: "A"}, f)
		}
		if len(f) != 1 {
			t.Fatalf("got %v", f)
		}
	})
	t.Run("txt volume", func(t *testing.T) {
		d, _ := newDNS(t, DNSConfig{})
		var f []Finding
		for i := 0; i < 40; i++ {
			f = d.Observe(DNSQuery{Client: "c", Name: []byte("p" + strconv.Itoa(i%12) + ".c2.example.net"), QType: "TXT"}, f)
		}
		if len(f) != 1 {
			t.Fatalf("got %v", f)
		}
		// One TXT record polled repeatedly is not a tunnel.
		d2, _ := newDNS(t, DNSConfig{})
		for i := 0; i < 200; i++ {
			if f := d2.Observe(DNSQuery{Client: "c", Name: []byte("_dmarc.example.net"), QType: "TXT"}, nil); len(f) > 0 {
				t.Fatalf("polling one TXT: %v", f)
			}
		}
	})
	t.Run("zone transfer", func(t *testing.T) {
		d, _ := newDNS(t, DNSConfig{})
		f := d.Observe(DNSQuery{Client: "c", Name: []byte("corp.example.com."), QType: "AXFR"}, nil)
		if len(f) != 1 || f[0].Detector != DNSZoneTransfer {
			t.Fatalf("got %v", f)
		}
	})
	t.Run("window resets", func(t *testing.T) {
		d, clk := newDNS(t, DNSConfig{EncodedQueries: 3})
		q := func(i int) DNSQuery {
			return DNSQuery{Client: "c", Name: []byte(strconv.Itoa(i) + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.t.example.com"), QType: "A"}
		}
		for i := 0; i < 2; i++ {
			if f := d.Observe(q(i), nil); len(f) > 0 {
				t.Fatal("fired early")
			}
		}
		// The same name again does not count.
		if f := d.Observe(q(1), nil); len(f) > 0 {
			t.Fatal("a repeated name counted as new data")
		}
		clk.Advance(time.Minute)
		for i := 2; i < 4; i++ {
			if f := d.Observe(q(i), nil); len(f) > 0 {
				t.Fatal("counts survived the window")
			}
		}
		if f := d.Observe(q(4), nil); len(f) != 1 {
			t.Fatal("third encoded name in the window did not fire")
		}
	})
	t.Run("bounded", func(t *testing.T) {
		d, _ := newDNS(t, DNSConfig{MaxTracked: 100})
		for i := 0; i < 1000; i++ {
			d.Observe(DNSQuery{Client: strconv.Itoa(i), Name: []byte("www.example.com"), QType: "A"}, nil)
		}
		if n := d.Tracked(); n != 100 {
			t.Fatalf("tracked %d pairs, want 100", n)
		}
	})
}

func TestMismatchFinding(t *testing.T) {
	f := MismatchFinding("udp", 53, "openvpn")
	if f.Detector != ProtocolMismatch || f.Severity != High {
		t.Fatalf("got %v", f)
	}
	if f := MismatchFinding("tcp", 443, "ssh"); f.Severity != Medium {
		t.Fatalf("got %v", f)
	}
}
