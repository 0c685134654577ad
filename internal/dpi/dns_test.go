package dpi

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/miekg/dns"
)

func dnsPair(t testing.TB) (query, response []byte) {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion("www.example.org.", dns.TypeA)
	r := new(dns.Msg)
	r.SetReply(q)
	r.Answer = append(r.Answer,
		&dns.CNAME{Hdr: dns.RR_Header{Name: "www.example.org.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 5}, Target: "web.example.org."},
		&dns.A{Hdr: dns.RR_Header{Name: "web.example.org.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(192, 0, 2, 7)})
	qb, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	rb, err := r.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return qb, rb
}

func TestDNSMessages(t *testing.T) {
	q, r := dnsPair(t)
	type msg struct {
		typ, name, qtype, rcode string
		answers                 []string
	}
	var got []msg
	collect := func(m *Message) {
		x := msg{typ: m.Type, name: string(m.Get(AttrName)), qtype: string(m.Get(AttrQType)), rcode: string(m.Get(AttrRCode))}
		for _, a := range m.Attrs() {
			if a.Key == AttrAnswer {
				x.answers = append(x.answers, string(a.Value))
			}
		}
		got = append(got, x)
	}
	// UDP: one datagram per message.
	p := DNS{}.NewFlowParser(FlowInfo{Transport: UDP})
	_ = p.Feed(ClientToServer, q, collect)
	_ = p.Feed(ServerToClient, r, collect)
	// TCP: length-prefixed, delivered one byte at a time.
	p = DNS{}.NewFlowParser(FlowInfo{Transport: TCP})
	framed := binary.BigEndian.AppendUint16(nil, uint16(len(r)))
	framed = append(framed, r...)
	for i := range framed {
		_ = p.Feed(ServerToClient, framed[i:i+1], collect)
	}
	if len(got) != 3 {
		t.Fatalf("got %d messages, want 3: %+v", len(got), got)
	}
	if g := got[0]; g.typ != TypeQuery || g.name != "www.example.org" || g.qtype != "A" || g.rcode != "" {
		t.Errorf("query: %+v", g)
	}
	for _, g := range got[1:] {
		if g.typ != TypeReply || g.rcode != "NOERROR" || len(g.answers) != 2 ||
			g.answers[0] != "web.example.org" || g.answers[1] != "192.0.2.7" {
			t.Errorf("response: %+v", g)
		}
	}
}

func TestDNSDetect(t *testing.T) {
	q, r := dnsPair(t)
	framed := append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)
	nb := new(dns.Msg)
	nb.SetQuestion("EPEJEDFFDIDBDCCNFIFACACACACACACA.", 0x20) // NetBIOS name service, UDP 137
	nbq, err := nb.Pack()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		p    Probe
		want Verdict
	}{
		{"udp query", Probe{Transport: UDP, Client: q}, Yes},
		{"netbios name service", Probe{Transport: UDP, Client: nbq}, No},
		{"udp response only", Probe{Transport: UDP, Server: r}, Yes},
		{"response first (mDNS announcement, missed query)", Probe{Transport: UDP, Client: r}, Yes},
		{"response first over tcp", Probe{Transport: TCP, Client: append(binary.BigEndian.AppendUint16(nil, uint16(len(r))), r...)}, No},
		{"tcp framed", Probe{Transport: TCP, Client: framed}, Yes},
		{"tcp partial", Probe{Transport: TCP, Client: framed[:9]}, NeedMore},
		{"tcp unframed", Probe{Transport: TCP, Client: q}, No},
		{"udp trailing junk", Probe{Transport: UDP, Client: append(append([]byte{}, q...), 1, 2, 3)}, No},
		{"http", Probe{Transport: TCP, Client: []byte("GET / HTTP/1.1\r\n\r\n")}, No},
	}
	for _, c := range cases {
		if got := (DNS{}).Detect(&c.p); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
