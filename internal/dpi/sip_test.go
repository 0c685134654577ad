package dpi

import (
	"strings"
	"testing"
)

func TestSIPCapture(t *testing.T) {
	for _, c := range []struct{ rel, port string }{{"sip/sipsak-5060.pcap", "5060"}, {"sip/sipsak-15060.pcap", "1506"}} {
		got := bbCheckCapture(t, SIP{}, c.rel, Yes)
		bbWantPrefix(t, got,
			"client request method=OPTIONS uri=sip:alice@127.0.0.1:"+c.port, // sipsak writes 4 port digits
			"client request method=OPTIONS uri=sip:bob@127.0.0.1:"+c.port)
		for _, g := range got {
			if strings.HasPrefix(g, "server response") && !strings.Contains(g, "status=200 reason=OK") {
				t.Errorf("response: %s", g)
			}
		}
	}
}

const sipInvite = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n" +
	"Max-Forwards: 70\r\n" +
	"To: Bob <sip:bob@biloxi.example.com>\r\n" +
	"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n" +
	"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n" +
	"CSeq: 314159 INVITE\r\n" +
	"Authorization: Digest username=\"alice\", response=\"6629fae49393a05397450978507c4ef1\"\r\n" +
	"User-Agent: softphone/1.2\r\n" +
	"Content-Type: application/sdp\r\n" +
	"Content-Length: 24\r\n\r\n" +
	"v=0\r\nREGISTER x SIP/2.0\r\n"

func TestSIPParser(t *testing.T) {
	want := "client request method=INVITE uri=sip:bob@biloxi.example.com to=Bob <sip:bob@biloxi.example.com> " +
		"from=Alice <sip:alice@atlanta.example.com>;tag=1928301774 call_id=a84b4c76e66710@pc33.atlanta.example.com " +
		"cseq=314159 INVITE user_agent=softphone/1.2"
	resp := "SIP/2.0 180 Ringing\r\nv: SIP/2.0/UDP x\r\nf: <sip:a@b>\r\nt: <sip:c@d>;tag=9\r\ni: abc\r\nl: 0\r\n\r\n"
	for _, tr := range []Transport{UDP, TCP} {
		f := bbFlow{tr, []bbSeg{{ClientToServer, []byte(sipInvite)}, {ServerToClient, []byte(resp)},
			{ClientToServer, []byte("\r\n\r\n")}, {ClientToServer, []byte("BYE sip:bob@b SIP/2.0\r\nCall-ID: abc\r\nContent-Length: 0\r\n\r\n")}}}
		got := bbFeed(t, SIP{}, f, 1)
		bbWant(t, got, want, "server response status=180 reason=Ringing from=<sip:a@b> to=<sip:c@d>;tag=9 call_id=abc",
			"client request method=BYE uri=sip:bob@b call_id=abc")
		bbNoSecret(t, got, "6629fae4")
		if len(got) != 3 {
			t.Errorf("%v: body parsed as a message: %q", tr, got)
		}
	}
	// A UDP datagram whose Content-Length lies does not swallow the next one.
	lying := strings.Replace(sipInvite, "Content-Length: 24", "Content-Length: 5000", 1)
	got := bbFeed(t, SIP{}, bbFlow{UDP, []bbSeg{{ClientToServer, []byte(lying)}, {ClientToServer, []byte(sipInvite)}}}, 0)
	if len(got) != 2 {
		t.Errorf("after a lying Content-Length: %q", got)
	}
	for _, c := range []struct {
		name string
		b    string
		want Verdict
	}{
		{"invite", sipInvite, Yes},
		{"response", "SIP/2.0 200 OK\r\n", Yes},
		{"keep-alive first", "\r\n\r\n" + sipInvite, Yes},
		{"partial", "INVI", NeedMore},
		{"http", "GET / HTTP/1.1\r\n", No},
		{"rtsp", "OPTIONS * RTSP/1.0\r\n", No},
		{"bad status", "SIP/2.0 999x\r\n", No},
	} {
		if v := (SIP{}).Detect(&Probe{Transport: UDP, Client: []byte(c.b)}); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}
}

func FuzzSIP(f *testing.F) {
	bbSeeds(f, "sip/sipsak-5060.pcap")
	f.Add([]byte(sipInvite))
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, SIP{}, data) })
}

func BenchmarkSIP(b *testing.B) { bbBench(b, SIP{}, "sip/sipsak-5060.pcap") }
