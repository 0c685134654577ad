package dpi

import (
	"strconv"
	"testing"
)

func TestSyslogCapture(t *testing.T) {
	for _, rel := range []string{"syslog/logger-514.pcap", "syslog/logger-10514.pcap"} {
		got := bbCheckCapture(t, Syslog{}, rel, Yes)
		bbWant(t, got,
			"client log facility=local3 severity=warning version=1 host=vm name=mg-app",
			"client log facility=auth severity=info host=vm name=mg-bsd",
			"client log facility=daemon severity=err version=1 host=vm name=mg-tcp",
			"client log facility=user severity=notice version=1 host=vm name=mg-tcp-nl")
		bbNoSecret(t, got, "message")
	}
}

func TestSyslog(t *testing.T) {
	const m5424 = "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\"] password=hunter2"
	const m3164 = "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8"
	for _, c := range []struct {
		name string
		tr   Transport
		b    string
		want Verdict
	}{
		{"5424", UDP, m5424, Yes},
		{"3164", UDP, m3164, Yes},
		{"octet counted", TCP, "120 " + m5424, Yes},
		{"pri only", UDP, "<13>hello", Maybe},
		{"partial", TCP, "<1", NeedMore},
		{"pri too big", UDP, "<192>1 x", No},
		{"html", TCP, "<html>", No},
	} {
		if v := (Syslog{}).Detect(&Probe{Transport: c.tr, Client: []byte(c.b)}); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}
	want := []string{
		"client log facility=local4 severity=notice version=1 host=mymachine.example.com name=evntslog msgid=ID47",
		"client log facility=auth severity=crit host=mymachine name=su",
	}
	// UDP datagrams, TCP newline framing, TCP octet counting: byte by byte.
	got := bbFeed(t, Syslog{}, bbFlow{UDP, []bbSeg{{ClientToServer, []byte(m5424)}, {ClientToServer, []byte(m3164)}}}, 0)
	bbWant(t, got, want...)
	bbNoSecret(t, got, "hunter2")
	got = bbFeed(t, Syslog{}, bbFlow{TCP, []bbSeg{{ClientToServer, []byte(m5424 + "\n" + m3164 + "\n")}}}, 1)
	bbWant(t, got, want...)
	got = bbFeed(t, Syslog{}, bbFlow{UDP, []bbSeg{{ClientToServer, []byte("<13>short one")}, {ClientToServer, []byte(m3164)}}}, 0)
	bbWant(t, got, "client log facility=user severity=notice host=short", want[1])
	oc := []byte(strconv.Itoa(len(m5424)) + " " + m5424 + strconv.Itoa(len(m3164)) + " " + m3164)
	got = bbFeed(t, Syslog{}, bbFlow{TCP, []bbSeg{{ClientToServer, oc}}}, 1)
	bbWant(t, got, want...)
	if len(got) != 2 {
		t.Errorf("octet counting: %q", got)
	}
}

func FuzzSyslog(f *testing.F) {
	bbSeeds(f, "syslog/logger-514.pcap")
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, Syslog{}, data) })
}

func BenchmarkSyslog(b *testing.B) { bbBench(b, Syslog{}, "syslog/logger-514.pcap") }
