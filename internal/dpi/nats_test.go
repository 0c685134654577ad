package dpi

import "testing"

func TestNATSCapture(t *testing.T) {
	for _, rel := range []string{"nats/nats-4222.pcap", "nats/nats-14222.pcap"} {
		got := bbCheckCapture(t, NATS{}, rel, Yes)
		bbWant(t, got,
			"client command command=CONNECT client_id=mg-test software=python version=1.0.0",
			"client command command=SUB topic=greet.*",
			"client command command=PUB topic=greet.joe",
			"server reply command=MSG topic=greet.joe",
			"server reply command=PONG")
	}
}

func TestNATSDetect(t *testing.T) {
	for _, c := range []struct {
		name           string
		client, server string
		want           Verdict
	}{
		{"server info", "", `INFO {"server_id":"x"}` + "\r\n", Yes},
		{"client connect", `CONNECT {"verbose":false}` + "\r\n", "", Yes},
		{"partial", "CONN", "", NeedMore},
		{"http connect", "CONNECT example.com:443 HTTP/1.1\r\n\r\n", "", No},
		{"mid-stream pub", "PUB a.b 5\r\nhello\r\n", "", Maybe},
		{"redis", "*1\r\n$4\r\nPING\r\n", "", No},
	} {
		p := &Probe{Transport: TCP, Client: []byte(c.client), Server: []byte(c.server)}
		if v := (NATS{}).Detect(p); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}
}

func TestNATSParser(t *testing.T) {
	// Payloads that look like commands are skipped by size, credentials never read.
	f := bbFlow{TCP, []bbSeg{
		{ClientToServer, []byte(`CONNECT {"user":"bob","pass":"hunter2","name":"svc"}` + "\r\n")},
		{ClientToServer, []byte("PUB orders.new reply.1 16\r\nSUB fake.subject\r\n\r\n")},
		{ClientToServer, []byte("HPUB h.subj 12 14\r\nNATS/1.0\r\n\r\nhi\r\nSUB q.subj workers 9\r\n")},
		{ServerToClient, []byte("-ERR 'Authorization Violation'\r\n")},
	}}
	got := bbFeed(t, NATS{}, f, 1)
	bbWant(t, got,
		"client command command=CONNECT client_id=svc auth=user",
		"client command command=PUB topic=orders.new",
		"client command command=HPUB topic=h.subj",
		"client command command=SUB topic=q.subj queue=workers",
		"server reply command=-ERR status=Authorization Violation")
	bbNoSecret(t, got, "hunter2")
	bbNoSecret(t, got, "fake.subject")
	// An endless line is dropped, not buffered, and parsing resumes after it.
	p := (NATS{}).NewParser()
	var n int
	long := make([]byte, 3*natsMaxLine)
	for i := range long {
		long[i] = 'x'
	}
	_ = p.Feed(ClientToServer, long, func(*Message) {})
	_ = p.Feed(ClientToServer, []byte("\r\nPING\r\n"), func(*Message) { n++ })
	if n != 1 || len(p.(*natsParser).r[0].buf) != 0 {
		t.Errorf("after a long line: %d messages, %d buffered", n, len(p.(*natsParser).r[0].buf))
	}
}

func FuzzNATS(f *testing.F) {
	bbSeeds(f, "nats/nats-4222.pcap")
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, NATS{}, data) })
}

func BenchmarkNATS(b *testing.B) { bbBench(b, NATS{}, "nats/nats-4222.pcap") }
