package dpi

import "testing"

func TestNTPCapture(t *testing.T) {
	for _, rel := range []string{"ntp/chrony-123.pcap", "ntp/chrony-11123.pcap"} {
		got := bbCheckCapture(t, NTP{}, rel, Yes)
		bbWant(t, got, "client client mode=client version=4 stratum=0", "server server mode=server version=4 stratum=8")
	}
}

func TestNTP(t *testing.T) {
	client := make([]byte, 48)
	client[0] = 0x23 // v4 client
	client[47] = 1   // transmit timestamp
	server := make([]byte, 48)
	server[0], server[1] = 0x24, 1
	copy(server[12:], "GPS\x00")
	monlist := []byte{0x17, 0x00, 0x03, 0x2a, 0, 0, 0, 0}
	for _, c := range []struct {
		name           string
		client, server []byte
		want           Verdict
	}{
		{"client", client, nil, Yes},
		{"empty client, server reply", []byte{}, server, Maybe},
		{"exchange", client, server, Yes},
		{"monlist", monlist, nil, Maybe},
		{"short", client[:20], nil, No},
		{"version 0", append([]byte{0x03}, client[1:]...), nil, No},
		{"odd length", append(client, 1), nil, No},
		{"stratum 200", append(append([]byte{}, client[:1]...), append([]byte{200}, client[2:]...)...), nil, No},
	} {
		if v := (NTP{}).Detect(&Probe{Transport: UDP, Client: c.client, Server: c.server}); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}
	got := bbFeed(t, NTP{}, bbFlow{UDP, []bbSeg{{ClientToServer, client}, {ServerToClient, server}, {ClientToServer, monlist}}}, 0)
	bbWant(t, got, "client client mode=client version=4 stratum=0",
		"server server mode=server version=4 stratum=1 refid=GPS",
		"client private mode=private version=2 command=42")
}

func FuzzNTP(f *testing.F) {
	bbSeeds(f, "ntp/chrony-123.pcap")
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, NTP{}, data) })
}

func BenchmarkNTP(b *testing.B) { bbBench(b, NTP{}, "ntp/chrony-123.pcap") }
