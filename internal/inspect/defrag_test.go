package inspect

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/miekg/dns"
)

// bigDNSAnswer is an EDNS answer of about 4 KB: over UDP it leaves in IP fragments.
func bigDNSAnswer(t testing.TB) (q, r []byte) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("big.meshguard.test.", dns.TypeTXT)
	m.SetEdns0(4096, true)
	rep := new(dns.Msg)
	rep.SetReply(m)
	for i := 0; i < 16; i++ {
		rep.Answer = append(rep.Answer, &dns.TXT{
			Hdr: dns.RR_Header{Name: "big.meshguard.test.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
			Txt: []string{strings.Repeat(string(rune('a'+i)), 250)},
		})
	}
	q, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	r, err = rep.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return q, r
}

// udpBytes is a UDP header and payload (the unfragmented IP payload).
func udpBytes(t testing.TB, sp, dp int, payload []byte) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	udp := &layers.UDP{SrcPort: layers.UDPPort(sp), DstPort: layers.UDPPort(dp)}
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fragments4 splits an IPv4 payload into Ethernet frames of at most mtu IP bytes.
func fragments4(t testing.TB, src, dst net.IP, proto layers.IPProtocol, id uint16, payload []byte, mtu int) []frame {
	t.Helper()
	var out []frame
	chunk := (mtu - 20) &^ 7
	for off := 0; off < len(payload); off += chunk {
		end := min(off+chunk, len(payload))
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: src, DstIP: dst, Id: id,
			FragOffset: uint16(off / 8)}
		if end < len(payload) {
			ip.Flags = layers.IPv4MoreFragments
		}
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, gopacket.Payload(payload[off:end])); err != nil {
			t.Fatal(err)
		}
		out = append(out, frame{gopacket.CaptureInfo{Timestamp: time.Unix(100, int64(off))}, buf.Bytes()})
	}
	return out
}

// fragments6 splits an IPv6 payload into raw-IP frames with fragment headers.
func fragments6(t testing.TB, src, dst net.IP, next layers.IPProtocol, id uint32, payload []byte, mtu int) []frame {
	t.Helper()
	var out []frame
	chunk := (mtu - 48) &^ 7
	for off := 0; off < len(payload); off += chunk {
		end := min(off+chunk, len(payload))
		fh := make([]byte, 8, 8+end-off)
		fh[0] = byte(next)
		fo := uint16(off)
		if end < len(payload) {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], id)
		ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolIPv6Fragment, HopLimit: 64, SrcIP: src, DstIP: dst}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ip, gopacket.Payload(append(fh, payload[off:end]...))); err != nil {
			t.Fatal(err)
		}
		out = append(out, frame{gopacket.CaptureInfo{Timestamp: time.Unix(100, int64(off))}, buf.Bytes()})
	}
	return out
}

func reversed(fs []frame) []frame {
	out := make([]frame, len(fs))
	for i, f := range fs {
		out[len(fs)-1-i] = f
	}
	return out
}

// TestFragmentedDNS: a 4 KB EDNS answer in IP fragments (in order, reversed, interleaved with
// another datagram's fragments, one fragment duplicated) is reassembled and parsed as DNS over
// IPv4 and IPv6; every fragment counts as a packet of the flow.
func TestFragmentedDNS(t *testing.T) {
	qb, rb := bigDNSAnswer(t)
	c4, s4 := net.IPv4(10, 0, 0, 1).To4(), net.IPv4(10, 0, 0, 53).To4()
	c6, s6 := net.ParseIP("fd00::1"), net.ParseIP("fd00::53")
	query4 := fragments4(t, c4, s4, layers.IPProtocolUDP, 7, udpBytes(t, 40000, 53, qb), 1500)
	answer4 := fragments4(t, s4, c4, layers.IPProtocolUDP, 9, udpBytes(t, 53, 40000, rb), 1500)
	if len(answer4) < 3 {
		t.Fatalf("answer in %d fragments, want several", len(answer4))
	}
	query6 := fragments6(t, c6, s6, layers.IPProtocolUDP, 7, udpBytes(t, 40000, 53, qb), 1280)
	answer6 := fragments6(t, s6, c6, layers.IPProtocolUDP, 9, udpBytes(t, 53, 40000, rb), 1280)
	other4 := fragments4(t, s4, c4, layers.IPProtocolUDP, 10, udpBytes(t, 53, 40001, rb), 1500)

	interleaved := []frame{}
	for i := range answer4 {
		interleaved = append(interleaved, answer4[i], other4[len(other4)-1-i])
	}
	cases := map[string]struct {
		lt     layers.LinkType
		frames []frame
		flows  int
	}{
		"v4 in order":    {layers.LinkTypeEthernet, append(query4, answer4...), 1},
		"v4 reversed":    {layers.LinkTypeEthernet, append(query4, reversed(answer4)...), 1},
		"v4 interleaved": {layers.LinkTypeEthernet, append(query4, interleaved...), 2},
		"v4 duplicate":   {layers.LinkTypeEthernet, append(append(query4, answer4[0]), answer4...), 1},
		"v6 in order":    {layers.LinkTypeRaw, append(query6, answer6...), 1},
		"v6 reversed":    {layers.LinkTypeRaw, append(query6, reversed(answer6)...), 1},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			res := inspectBytes(t, writePcap(t, c.lt, c.frames))
			if len(res.Flows) != c.flows {
				t.Fatalf("%d flows, want %d:\n%s", len(res.Flows), c.flows, l7Lines(t, res))
			}
			f := res.Flows[0]
			if f.Protocol != "dns" || !strings.Contains(l7Lines(t, res), "big.meshguard.test") {
				t.Fatalf("got %+v\n%s", f, l7Lines(t, res))
			}
			if !strings.HasSuffix(f.Dst, ":53") {
				t.Errorf("dst %s, want the DNS server", f.Dst)
			}
			if name != "v4 duplicate" && f.Packets != uint64(len(c.frames))/uint64(c.flows) && c.flows == 1 {
				t.Errorf("packets %d, want %d (every fragment)", f.Packets, len(c.frames))
			}
			if res.Reassembled < 1 || res.Undecodable != 0 {
				t.Errorf("reassembled %d, undecodable %d", res.Reassembled, res.Undecodable)
			}
		})
	}
}

// TestFragmentedICMP: a 3000-byte ping over IPv4 (as `ping -s 3000` on a 1500 MTU link).
func TestFragmentedICMP(t *testing.T) {
	echo := make([]byte, 8+3000)
	echo[0] = 8 // echo request
	binary.BigEndian.PutUint16(echo[4:], 1)
	binary.BigEndian.PutUint16(echo[6:], 1)
	reply := append([]byte(nil), echo...)
	reply[0] = 0
	a, b := net.IPv4(10, 0, 0, 1).To4(), net.IPv4(10, 0, 0, 2).To4()
	frames := append(fragments4(t, a, b, layers.IPProtocolICMPv4, 1, echo, 1500), fragments4(t, b, a, layers.IPProtocolICMPv4, 2, reply, 1500)...)
	res := inspectBytes(t, writePcap(t, layers.LinkTypeEthernet, frames))
	if len(res.Flows) != 1 || res.Flows[0].Protocol != "icmp" || res.Flows[0].Packets != uint64(len(frames)) {
		t.Fatalf("got %+v\n%s", res.Flows, l7Lines(t, res))
	}
}

// TestFragmentBounds: fragments that never complete are held within the bounds and counted;
// a lone last fragment is not mistaken for a datagram.
func TestFragmentBounds(t *testing.T) {
	d := newDefragger()
	ts := time.Unix(0, 0)
	src := net.IPv4(10, 0, 0, 1)
	for i := 0; i < 10*maxFragDatagrams; i++ {
		k := fragKey{id: uint32(i), proto: 17}
		k.src, _ = netipAddr(src)
		if _, _, _, ok := d.add(k, 8, false, make([]byte, 100), ts, 134); ok {
			t.Fatal("a datagram without its first fragment completed")
		}
		if len(d.dgrams) > maxFragDatagrams {
			t.Fatalf("%d datagrams held, bound %d", len(d.dgrams), maxFragDatagrams)
		}
	}
	k := fragKey{id: 1 << 20, proto: 17}
	for i := 0; i < 2*maxFragsPerDgram; i++ {
		d.add(k, i*8, true, make([]byte, 8), ts, 42)
	}
	if g := d.dgrams[k]; g != nil && len(g.pieces) > maxFragsPerDgram {
		t.Fatalf("%d pieces held, bound %d", len(g.pieces), maxFragsPerDgram)
	}
	// Timeout: a datagram whose first fragment is older than fragTimeout starts over.
	k2 := fragKey{id: 1 << 21, proto: 17}
	d.add(k2, 0, true, make([]byte, 8), ts, 42)
	if _, _, _, ok := d.add(k2, 8, false, make([]byte, 8), ts.Add(fragTimeout+time.Second), 42); ok {
		t.Fatal("completed a datagram from fragments older than the timeout")
	}
}

func netipAddr(ip net.IP) (netip.Addr, bool) { return netip.AddrFromSlice(ip.To4()) }

// FuzzDefrag feeds arbitrary fragment sequences (offsets, MF flags, sizes, ids, times): no
// panic, the bounds hold, and a completed datagram is as long as its last fragment (MF clear) says.
func FuzzDefrag(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0, 8, 0, 1, 0, 0, 0, 16, 0})
	f.Add([]byte{1, 1, 0, 200, 0, 1, 0, 0, 0, 0, 1, 5})
	f.Fuzz(func(t *testing.T, ops []byte) {
		d := newDefragger()
		src, _ := netip.ParseAddr("10.0.0.1")
		ends := map[uint32]int{} // id -> end of the last fragment given
		for len(ops) >= 6 {
			k := fragKey{src: src, id: uint32(ops[0] % 4), proto: 17}
			off := int(ops[1])<<8 | int(ops[2])
			more := ops[3]&1 != 0
			n := int(ops[4]) * 8
			ts := time.Unix(int64(ops[5]), 0)
			ops = ops[6:]
			if !more {
				ends[k.id] = off + n
			}
			payload, frames, _, ok := d.add(k, off, more, make([]byte, n), ts, n+34)
			if ok {
				if len(payload) != ends[k.id] || frames == 0 {
					t.Fatalf("completed datagram of %d bytes (%d frames), last fragment ends at %d", len(payload), frames, ends[k.id])
				}
				delete(ends, k.id)
			}
			if len(d.dgrams) > maxFragDatagrams {
				t.Fatalf("%d datagrams held", len(d.dgrams))
			}
			for _, g := range d.dgrams {
				if len(g.pieces) > maxFragsPerDgram {
					t.Fatalf("%d pieces held", len(g.pieces))
				}
			}
		}
	})
}
