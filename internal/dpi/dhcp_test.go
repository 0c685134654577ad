package dpi

import "testing"

func TestDHCPCapture(t *testing.T) {
	for _, rel := range []string{"dhcp/dhcp-67.pcap", "dhcp/dhcp-10067.pcap"} {
		got := bbCheckCapture(t, DHCP{}, rel, Yes)
		bbWant(t, got,
			"client request client_mac=02:00:00:aa:bb:cc command=DISCOVER host=mg-host software=mg-dhcpc",
			"server reply client_mac=02:00:00:aa:bb:cc your_ip=10.0.0.42 command=OFFER server_id=10.0.0.1")
	}
}

func TestDHCP(t *testing.T) {
	f := bbCapture(t, "dhcp/dhcp-67.pcap")[0]
	disc := f.segs[0].data
	noCookie := append([]byte{}, disc...)
	noCookie[236] = 0
	truncOpt := append(append([]byte{}, disc[:240]...), 53, 1, 3, 12, 200, 'x') // hostname runs past the end
	for _, c := range []struct {
		name string
		b    []byte
		want Verdict
	}{
		{"discover", disc, Yes},
		{"no cookie", noCookie, No},
		{"bootp too short", disc[:100], No},
	} {
		if v := (DHCP{}).Detect(&Probe{Transport: UDP, Client: c.b}); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}
	got := bbFeed(t, DHCP{}, bbFlow{UDP, []bbSeg{{ClientToServer, truncOpt}}}, 0)
	bbWant(t, got, "client request client_mac=02:00:00:aa:bb:cc command=REQUEST")
}

func FuzzDHCP(f *testing.F) {
	bbSeeds(f, "dhcp/dhcp-67.pcap")
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, DHCP{}, data) })
}

func BenchmarkDHCP(b *testing.B) { bbBench(b, DHCP{}, "dhcp/dhcp-67.pcap") }
