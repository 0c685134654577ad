package dpi

import "testing"

func TestWireGuardCapture(t *testing.T) {
	for _, rel := range []string{"wireguard/wireguard-51820.pcap", "wireguard/wireguard-41820.pcap"} {
		got := bbCheckCapture(t, WireGuard{}, rel, Yes)
		bbWant(t, got,
			"client handshake_initiation command=handshake_initiation sender=287454020",
			"server handshake_response command=handshake_response sender=1432778632 receiver=287454020",
			"client transport_data command=transport_data receiver=1432778632")
	}
}

func TestWireGuard(t *testing.T) {
	msg := func(typ byte, n int) []byte { b := make([]byte, n); b[0] = typ; b[4] = 7; return b }
	for _, c := range []struct {
		name           string
		client, server []byte
		want           Verdict
	}{
		{"initiation", msg(1, 148), nil, Yes},
		{"initiation and response", msg(1, 148), msg(2, 92), Yes},
		{"initiation of 149 bytes", msg(1, 149), nil, No},
		{"reserved bytes set", append([]byte{1, 1}, make([]byte, 146)...), nil, No},
		{"transport data only", msg(4, 64), msg(4, 32), Maybe},
		{"keepalive", msg(4, 32), nil, Maybe},
		{"unpadded data", msg(4, 40), nil, No},
		{"cookie reply", nil, msg(3, 64), Maybe},
	} {
		if v := (WireGuard{}).Detect(&Probe{Transport: UDP, Client: c.client, Server: c.server}); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}
	got := bbFeed(t, WireGuard{}, bbFlow{UDP, []bbSeg{{ServerToClient, msg(3, 64)}, {ClientToServer, msg(9, 64)}}}, 0)
	if len(got) != 1 || got[0] != "server cookie_reply command=cookie_reply receiver=7" {
		t.Errorf("got %q", got)
	}
}

func FuzzWireGuard(f *testing.F) {
	bbSeeds(f, "wireguard/wireguard-51820.pcap")
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, WireGuard{}, data) })
}

func BenchmarkWireGuard(b *testing.B) { bbBench(b, WireGuard{}, "wireguard/wireguard-51820.pcap") }
