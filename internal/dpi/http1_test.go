package dpi

import (
	"strings"
	"testing"
)

type h1Event struct{ typ, a, b string }

func feedHTTP1(p Parser, segs []capturedSegment, size int) []h1Event {
	var out []h1Event
	emit := func(m *Message) {
		if m.Type == TypeRequest {
			out = append(out, h1Event{m.Type, string(m.Get(AttrMethod)), string(m.Get(AttrPath))})
		} else {
			out = append(out, h1Event{m.Type, string(m.Get(AttrStatus)), ""})
		}
	}
	for _, s := range segs {
		for b := s.data; len(b) > 0; {
			n := min(size, len(b))
			_ = p.Feed(s.dir, b[:n], emit)
			b = b[n:]
		}
	}
	return out
}

func TestHTTP1Framing(t *testing.T) {
	c := func(s string) capturedSegment { return capturedSegment{ClientToServer, []byte(s)} }
	s := func(s string) capturedSegment { return capturedSegment{ServerToClient, []byte(s)} }
	conv := []capturedSegment{
		// Pipelined: a POST with a body that looks like a request, then a HEAD.
		c("POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 26\r\n\r\nGET /fake HTTP/1.1\r\n\r\nxxxx" +
			"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n"),
		s("HTTP/1.1 100 Continue\r\n\r\n"),
		s("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nHTTP\r\n11\r\nHTTP/1.1 200 OK\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n"),
		// HEAD response: Content-Length but no body follows.
		s("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
		c("GET /after?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
		s("HTTP/1.1 304 Not Modified\r\n\r\n"),
		c("CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n"),
		s("HTTP/1.1 200 Connection established\r\n\r\n"),
		c("\x00\x00\x00\x08\x04\xd2\x16\x2f GET /tunnelled HTTP/1.1\r\n\r\n"), // tunnel bytes: not parsed
		s("HTTP/1.1 200 OK\r\n\r\n"),
	}
	want := []h1Event{
		{TypeRequest, "POST", "/submit"}, {TypeRequest, "HEAD", "/h"},
		{TypeResponse, "100", ""}, {TypeResponse, "200", ""}, {TypeResponse, "200", ""},
		{TypeRequest, "GET", "/after?x=1"}, {TypeResponse, "304", ""},
		{TypeRequest, "CONNECT", "db:5432"}, {TypeResponse, "200", ""},
	}
	for _, size := range []int{1, 2, 10, 1 << 20} {
		got := feedHTTP1(HTTP1{}.NewParser(), conv, size)
		if len(got) != len(want) {
			t.Fatalf("%d-byte segments: got %v\nwant %v", size, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%d-byte segments: event %d = %v, want %v", size, i, got[i], want[i])
			}
		}
	}
}

func TestHTTP1MidstreamAndGap(t *testing.T) {
	p := HTTP1{}.NewParser().(*http1Parser)
	p.Midstream()
	segs := []capturedSegment{
		{ClientToServer, []byte("tail of a body\r\nmore\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")},
		{ServerToClient, []byte("d of a response body\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")},
	}
	got := feedHTTP1(p, segs, 1<<20)
	if len(got) != 2 || got[0] != (h1Event{TypeRequest, "GET", "/next"}) || got[1].a != "404" {
		t.Fatalf("midstream: %v", got)
	}
	// A hole in the middle of a Content-Length body: resynchronise on the next request.
	p = HTTP1{}.NewParser().(*http1Parser)
	_ = p.Feed(ClientToServer, []byte("PUT /big HTTP/1.1\r\nContent-Length: 100000\r\n\r\nabc"), func(*Message) {})
	p.Gap(ClientToServer)
	got = feedHTTP1(p, []capturedSegment{{ClientToServer, []byte("xyz\r\nDELETE /x HTTP/1.1\r\n\r\n")}}, 1<<20)
	if len(got) != 1 || got[0].a != "DELETE" {
		t.Fatalf("after gap: %v", got)
	}
}

func TestHTTP1HeaderBound(t *testing.T) {
	p := HTTP1{}.NewParser().(*http1Parser)
	_ = p.Feed(ClientToServer, []byte("GET / HTTP/1.1\r\n"), func(*Message) {})
	line := []byte("X-Pad: " + strings.Repeat("a", 1000) + "\r\n")
	for i := 0; i < 200; i++ {
		_ = p.Feed(ClientToServer, line, func(*Message) {})
		if len(p.d[0].buf) > MaxBuffer {
			t.Fatalf("header buffer grew to %d, bound is %d", len(p.d[0].buf), MaxBuffer)
		}
	}
	got := feedHTTP1(p, []capturedSegment{{ClientToServer, []byte("\r\nGET /ok HTTP/1.1\r\n\r\n")}}, 1<<20)
	if len(got) != 1 || got[0].b != "/ok" {
		t.Fatalf("after an oversized header block: %v", got)
	}
}

func TestHTTP1Detect(t *testing.T) {
	cases := []struct {
		p    Probe
		want Verdict
	}{
		{Probe{Client: []byte("GET / HTTP/1.1\r\n")}, Yes},
		{Probe{Client: []byte("\r\nPOST /x HTTP/1.0\r\n")}, Yes},
		{Probe{Client: []byte("GE")}, NeedMore},
		{Probe{Client: []byte("GET /very/long/path")}, NeedMore},
		{Probe{Client: []byte("DESCRIBE rtsp://x/ RTSP/1.0\r\n")}, No},
		{Probe{Client: []byte("INVITE sip:a@b SIP/2.0\r\n")}, No},
		{Probe{Client: []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")}, No},
		{Probe{Client: []byte("SET k v\r\n")}, No},
		{Probe{Server: []byte("HTTP/1.0 200 OK\r\n")}, Yes},
		{Probe{Server: []byte("SSH-2.0-OpenSSH_9.2\r\n")}, No},
		{Probe{Client: []byte("x\r\nPOST /a HTTP/1.1\r\n"), Midstream: true}, Yes},
	}
	for _, c := range cases {
		c.p.Transport = TCP
		if got := (HTTP1{}).Detect(&c.p); got != c.want {
			t.Errorf("%q/%q: %v, want %v", c.p.Client, c.p.Server, got, c.want)
		}
	}
}

// TestHTTP1SwappedMidstream: a flow picked up mid-way whose sides were guessed wrong (the
// "client" sends responses) still yields requests and responses.
func TestHTTP1SwappedMidstream(t *testing.T) {
	e := coreEngine(t)
	fl := e.NewFlow(FlowInfo{Transport: TCP, ServerPort: 45000, Midstream: true}, nil)
	fl.Feed(ClientToServer, []byte("ody>\n</html>\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	fl.Feed(ServerToClient, []byte("GET /next HTTP/1.1\r\nHost: a\r\n\r\n"))
	fl.Close()
	s := fl.Summary()
	if fl.Protocol() != "http" || s.Count(TypeRequest) != 1 || s.Count(TypeResponse) != 1 {
		b, _ := s.MarshalJSON()
		t.Fatalf("%q %s", fl.Protocol(), b)
	}
}
