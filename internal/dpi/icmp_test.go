package dpi

import (
	"encoding/binary"
	"testing"
)

func TestICMPCapture(t *testing.T) {
	got := bbCheckCapture(t, ICMPProto{}, "icmp/ping.pcap", Yes)
	bbWantPrefix(t, got,
		"client icmp version=4 command=echo_request id=", "client icmp version=4 command=echo_reply id=",
		"client icmpv6 version=6 command=echo_request id=", "client icmpv6 version=6 command=echo_reply id=")
}

// icmpTestV4 builds an ICMPv4 message with a valid checksum.
func icmpTestV4(typ, code byte, rest []byte) []byte {
	b := append([]byte{typ, code, 0, 0}, rest...)
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[2:], ^uint16(sum))
	return b
}

func TestICMP(t *testing.T) {
	for _, c := range []struct {
		b    []byte
		want string
	}{
		{icmpTestV4(3, 3, make([]byte, 32)), "client icmp version=4 command=destination_unreachable code=port_unreachable"},
		{icmpTestV4(11, 0, make([]byte, 32)), "client icmp version=4 command=time_exceeded code=ttl_exceeded"},
		{icmpTestV4(8, 0, []byte{0x12, 0x34, 0, 9}), "client icmp version=4 command=echo_request id=4660 seq=9"},
		// Type 3 with a wrong ICMPv4 checksum is ICMPv6 "time exceeded".
		{[]byte{3, 0, 0xde, 0xad, 0, 0, 0, 0}, "client icmpv6 version=6 command=time_exceeded code=hop_limit_exceeded"},
		{[]byte{1, 4, 0, 0, 0, 0, 0, 0}, "client icmpv6 version=6 command=destination_unreachable code=port_unreachable"},
		{[]byte{135, 0, 0, 0, 0, 0, 0, 0}, "client icmpv6 version=6 command=neighbor_solicitation"},
		{icmpTestV4(99, 7, nil), "client icmp version=4 command=99 code=7"},
	} {
		got := bbFeed(t, ICMPProto{}, bbFlow{ICMP, []bbSeg{{ClientToServer, c.b}}}, 0)
		if len(got) != 1 || got[0] != c.want {
			t.Errorf("%x: %q, want %q", c.b, got, c.want)
		}
	}
	if v := (ICMPProto{}).Detect(&Probe{Transport: UDP, Client: []byte{8, 0, 0, 0}}); v != No {
		t.Errorf("udp: %v", v)
	}
	if v := (ICMPProto{}).Detect(&Probe{Transport: ICMP, Client: []byte{8, 0}}); v != No {
		t.Errorf("2 bytes: %v", v)
	}
}

func FuzzICMP(f *testing.F) {
	bbSeeds(f, "icmp/ping.pcap")
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, ICMPProto{}, data) })
}

func BenchmarkICMP(b *testing.B) { bbBench(b, ICMPProto{}, "icmp/ping.pcap") }
