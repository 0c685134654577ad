package dpi

import (
	"encoding/binary"
	"testing"
)

func stunTestMsg(typ uint16, attrs ...[]byte) []byte {
	var a []byte
	for _, x := range attrs {
		a = append(a, x...)
	}
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(a)))
	b = binary.BigEndian.AppendUint32(b, stunCookie)
	b = append(b, "txid-123456."...)
	return append(b, a...)
}

func stunTestAttr(t uint16, v string) []byte {
	b := binary.BigEndian.AppendUint16(nil, t)
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestSTUNCapture(t *testing.T) {
	for _, rel := range []string{"stun/stun-3478.pcap", "stun/stun-13478.pcap"} {
		got := bbCheckCapture(t, STUN{}, rel, Yes)
		bbWant(t, got, "client request method=Binding software=mg-stun-client 1.0",
			"server success method=Binding mapped=127.0.0.1 software=mg-stun-server")
	}
}

func TestSTUN(t *testing.T) {
	alloc := stunTestMsg(0x0003, stunTestAttr(0x0006, "alice:secret-ufrag"), stunTestAttr(0x0014, "example.org"),
		stunTestAttr(0x0008, "01234567890123456789")) // USERNAME, REALM, MESSAGE-INTEGRITY
	errResp := stunTestMsg(0x0113, stunTestAttr(0x0009, "\x00\x00\x04\x01Unauthorized"))
	for _, c := range []struct {
		name string
		tr   Transport
		b    []byte
		want Verdict
	}{
		{"allocate", UDP, alloc, Yes},
		{"error response", UDP, errResp, Yes},
		{"trailing bytes over udp", UDP, append(alloc, 0, 0, 0, 0), No},
		{"no cookie", UDP, append(append([]byte{}, alloc[:4]...), make([]byte, 16)...), No},
		{"partial tcp", TCP, alloc[:6], NeedMore},
		{"rtp", UDP, []byte{0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}, No},
	} {
		if v := (STUN{}).Detect(&Probe{Transport: c.tr, Client: c.b}); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}
	channelData := []byte{0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0}
	for _, tr := range []Transport{UDP, TCP} {
		f := bbFlow{tr, []bbSeg{{ClientToServer, alloc}, {ServerToClient, errResp}, {ClientToServer, channelData}, {ClientToServer, alloc}}}
		got := bbFeed(t, STUN{}, f, 1)
		bbWant(t, got, "client request method=Allocate realm=example.org", "server error method=Allocate status=401",
			"client request method=Allocate realm=example.org")
		bbNoSecret(t, got, "secret-ufrag")
		if len(got) != 3 {
			t.Errorf("%v: %q", tr, got)
		}
	}
}

func FuzzSTUN(f *testing.F) {
	bbSeeds(f, "stun/stun-3478.pcap")
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, STUN{}, data) })
}

func BenchmarkSTUN(b *testing.B) { bbBench(b, STUN{}, "stun/stun-3478.pcap") }
