package dpi

import "testing"

func TestOpenVPNCapture(t *testing.T) {
	for _, rel := range []string{"openvpn/openvpn-udp-1194.pcap", "openvpn/openvpn-tcp-11940.pcap"} {
		got := bbCheckCapture(t, OpenVPN{}, rel, Yes)
		bbWantPrefix(t, got,
			"client packet command=P_CONTROL_HARD_RESET_CLIENT_V2 key_id=0 session=",
			"server packet command=P_CONTROL_HARD_RESET_SERVER_V2 key_id=0 session=",
			"client packet command=P_CONTROL_V1 key_id=0",
			"client packet command=P_ACK_V1 key_id=0")
	}
}

func TestOpenVPN(t *testing.T) {
	reset := append([]byte{0x38, 1, 2, 3, 4, 5, 6, 7, 8, 0}, 0, 0, 0, 0)
	sreset := append([]byte{0x40, 9, 9, 9, 9, 9, 9, 9, 9, 1, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, 0, 0, 0, 0)
	tcp := func(b []byte) []byte { return append([]byte{0, byte(len(b))}, b...) }
	for _, c := range []struct {
		name           string
		tr             Transport
		client, server []byte
		want           Verdict
	}{
		{"udp reset", UDP, reset, nil, Yes},
		{"udp reset and server reset", UDP, reset, sreset, Yes},
		{"tcp reset", TCP, tcp(reset), nil, Yes},
		{"tcp partial", TCP, tcp(reset)[:5], nil, NeedMore},
		{"key id set", UDP, append([]byte{0x39}, reset[1:]...), nil, No},
		{"data opcode first", UDP, append([]byte{0x48}, reset[1:]...), nil, No},
		{"too short", UDP, reset[:10], nil, No},
	} {
		if v := (OpenVPN{}).Detect(&Probe{Transport: c.tr, Client: c.client, Server: c.server}); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}
	data := append([]byte{0x48, 0, 0, 1}, make([]byte, 40)...)
	for _, tr := range []Transport{UDP, TCP} {
		wrap := func(b []byte) []byte { return b }
		if tr == TCP {
			wrap = tcp
		}
		f := bbFlow{tr, []bbSeg{{ClientToServer, wrap(reset)}, {ServerToClient, wrap(sreset)},
			{ClientToServer, wrap(data)}, {ClientToServer, wrap(data)}}}
		got := bbFeed(t, OpenVPN{}, f, 1)
		bbWant(t, got,
			"client packet command=P_CONTROL_HARD_RESET_CLIENT_V2 key_id=0 session=0102030405060708",
			"server packet command=P_CONTROL_HARD_RESET_SERVER_V2 key_id=0 session=0909090909090909",
			"client packet command=P_DATA_V2 key_id=0")
		if len(got) != 3 {
			t.Errorf("%v: data packets reported more than once: %q", tr, got)
		}
	}
}

func FuzzOpenVPN(f *testing.F) {
	bbSeeds(f, "openvpn/openvpn-udp-1194.pcap", "openvpn/openvpn-tcp-11940.pcap")
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, OpenVPN{}, data) })
}

func BenchmarkOpenVPN(b *testing.B) {
	bbBench(b, OpenVPN{}, "openvpn/openvpn-udp-1194.pcap", "openvpn/openvpn-tcp-11940.pcap")
}
