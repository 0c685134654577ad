package dpi

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// fakeProto is a scripted protocol for engine tests.
type fakeProto struct {
	name   string
	ports  []uint16
	detect func(p *Probe) Verdict
	parser func() Parser
}

func (f fakeProto) Name() string            { return f.name }
func (f fakeProto) Transports() Transport   { return TCP | UDP }
func (f fakeProto) Ports() []uint16         { return f.ports }
func (f fakeProto) Detect(p *Probe) Verdict { return f.detect(p) }
func (f fakeProto) NewParser() Parser {
	if f.parser != nil {
		return f.parser()
	}
	return parserFunc(func(Direction, []byte, func(*Message)) error { return nil })
}

type parserFunc func(Direction, []byte, func(*Message)) error

func (p parserFunc) Feed(d Direction, b []byte, emit func(*Message)) error { return p(d, b, emit) }

func TestConfigValidate(t *testing.T) {
	yes := func(*Probe) Verdict { return Yes }
	for name, cfg := range map[string]Config{
		"empty":     {},
		"duplicate": {Protocols: []Protocol{fakeProto{name: "a", detect: yes}, fakeProto{name: "a", detect: yes}}},
		"uppercase": {Protocols: []Protocol{fakeProto{name: "HTTP", detect: yes}}},
		"unknown":   {Protocols: []Protocol{fakeProto{name: Unknown, detect: yes}}},
		"negative":  {Protocols: []Protocol{fakeProto{name: "a", detect: yes}}, MaxSummaryKeys: -1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted an invalid config", name)
		}
	}
	if _, err := New(Config{Protocols: DefaultProtocols()}); err != nil {
		t.Fatalf("default registry rejected: %v", err)
	}
}

// TestCapturedFlows runs every core capture through the engine, whole and cut into tiny
// segments, and checks the protocol is the directory's and the summary does not depend on
// segmentation.
func TestCapturedFlows(t *testing.T) {
	e := coreEngine(t)
	for dir, want := range map[string]string{"http": "http", "http2": "http2", "tls": "tls", "dns": "dns"} {
		for _, f := range loadCaptures(t, dir) {
			whole := runFlow(t, e, f, nil)
			if got := whole.Protocol(); got != want {
				t.Errorf("%s port %d: protocol %q, want %q", f.name, f.serverPort, got, want)
				continue
			}
			if whole.Summary().Empty() {
				t.Errorf("%s port %d: empty L7 summary", f.name, f.serverPort)
			}
			if f.transport != TCP {
				continue
			}
			wantSum, _ := json.Marshal(whole.Summary())
			for _, size := range []int{1, 3, 7, 100} {
				fl := e.NewFlow(FlowInfo{Transport: TCP, ServerPort: f.serverPort}, nil)
				for _, s := range f.segs {
					for b := s.data; len(b) > 0; {
						n := min(size, len(b))
						fl.Feed(s.dir, b[:n])
						b = b[n:]
					}
				}
				fl.Close()
				got, _ := json.Marshal(fl.Summary())
				if fl.Protocol() != want || string(got) != string(wantSum) {
					t.Errorf("%s port %d in %d-byte segments: %s %s, want %s %s",
						f.name, f.serverPort, size, fl.Protocol(), got, want, wantSum)
				}
			}
		}
	}
}

func TestUnknownAndMismatch(t *testing.T) {
	e := coreEngine(t)
	junk := []byte("\x00\x01\x02 not a protocol anyone speaks \xff\xfe")
	fl := e.NewFlow(FlowInfo{Transport: TCP, ServerPort: 9999}, nil)
	fl.Feed(ClientToServer, junk)
	fl.Close()
	if fl.Protocol() != Unknown || fl.Mismatch() {
		t.Errorf("junk on 9999: %q mismatch=%v, want unknown without mismatch", fl.Protocol(), fl.Mismatch())
	}
	fl = e.NewFlow(FlowInfo{Transport: UDP, ServerPort: 53}, nil)
	fl.Feed(ClientToServer, junk)
	fl.Close()
	if fl.Protocol() != Unknown || !fl.Mismatch() {
		t.Errorf("junk on udp/53: %q mismatch=%v, want unknown with mismatch", fl.Protocol(), fl.Mismatch())
	}
	req := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	for port, mismatch := range map[uint16]bool{80: false, 53: true, 443: true, 12345: false} {
		fl = e.NewFlow(FlowInfo{Transport: TCP, ServerPort: port}, nil)
		fl.Feed(ClientToServer, req)
		if !fl.Detected() || fl.Protocol() != "http" || fl.Mismatch() != mismatch {
			t.Errorf("http on %d: detected=%v %q mismatch=%v, want http mismatch=%v",
				port, fl.Detected(), fl.Protocol(), fl.Mismatch(), mismatch)
		}
	}
}

func TestDetectionOrder(t *testing.T) {
	// "slow" needs 8 bytes to decide and comes first: "eager" must wait for it.
	slow := fakeProto{name: "slow", detect: func(p *Probe) Verdict {
		if len(p.Client) < 8 {
			return NeedMore
		}
		if strings.HasPrefix(string(p.Client), "SLOWSLOW") {
			return Yes
		}
		return No
	}}
	eager := fakeProto{name: "eager", detect: func(p *Probe) Verdict { return Yes }}
	maybe := fakeProto{name: "maybe", detect: func(p *Probe) Verdict { return Maybe }}
	e, err := New(Config{Protocols: []Protocol{slow, eager}})
	if err != nil {
		t.Fatal(err)
	}
	fl := e.NewFlow(FlowInfo{Transport: TCP}, nil)
	fl.Feed(ClientToServer, []byte("SLOW"))
	if fl.Detected() {
		t.Fatalf("decided %q before the earlier protocol could", fl.Protocol())
	}
	fl.Feed(ClientToServer, []byte("SLOW"))
	if fl.Protocol() != "slow" {
		t.Fatalf("got %q, want slow", fl.Protocol())
	}
	fl = e.NewFlow(FlowInfo{Transport: TCP}, nil)
	fl.Feed(ClientToServer, []byte("abc"))
	fl.Close() // end of flow: the pending NeedMore no longer blocks the Yes
	if fl.Protocol() != "eager" {
		t.Fatalf("at close got %q, want eager", fl.Protocol())
	}

	e, _ = New(Config{Protocols: []Protocol{maybe, fakeProto{name: "no", detect: func(*Probe) Verdict { return No }}}})
	fl = e.NewFlow(FlowInfo{Transport: UDP}, nil)
	fl.Feed(ClientToServer, []byte("x"))
	if fl.Protocol() != "maybe" {
		t.Fatalf("Maybe fallback: got %q", fl.Protocol())
	}
}

func TestProbeIsBounded(t *testing.T) {
	need := fakeProto{name: "need", detect: func(p *Probe) Verdict {
		if len(p.Client) > MaxProbe || len(p.Server) > MaxProbe {
			panic("probe beyond MaxProbe")
		}
		return NeedMore
	}}
	e, _ := New(Config{Protocols: []Protocol{need}})
	fl := e.NewFlow(FlowInfo{Transport: TCP}, nil)
	chunk := make([]byte, 100)
	for i := 0; i < 100 && !fl.Detected(); i++ {
		fl.Feed(ClientToServer, chunk)
	}
	if fl.Protocol() != Unknown {
		t.Fatalf("after %d bytes of NeedMore: %q, want unknown", 100*len(chunk), fl.Protocol())
	}
}

func TestParserPanicIsContained(t *testing.T) {
	boom := fakeProto{name: "boom", detect: func(*Probe) Verdict { return Yes },
		parser: func() Parser {
			return parserFunc(func(Direction, []byte, func(*Message)) error { panic("parser bug") })
		}}
	e, _ := New(Config{Protocols: []Protocol{boom}})
	fl := e.NewFlow(FlowInfo{Transport: TCP}, nil)
	fl.Feed(ClientToServer, []byte("x"))
	fl.Feed(ClientToServer, []byte("y"))
	if fl.Err() == nil || fl.Protocol() != "boom" || fl.Bytes(ClientToServer) != 2 {
		t.Fatalf("err=%v proto=%q bytes=%d", fl.Err(), fl.Protocol(), fl.Bytes(ClientToServer))
	}
}

func TestSummaryIsBounded(t *testing.T) {
	e := coreEngine(t)
	fl := e.NewFlow(FlowInfo{Transport: TCP, ServerPort: 80}, nil)
	for i := 0; i < 50; i++ {
		fl.Feed(ClientToServer, []byte(fmt.Sprintf("GET /p%d HTTP/1.1\r\nHost: h%d\r\nX-Long: %s\r\n\r\n", i, i, strings.Repeat("a", 300))))
	}
	s := fl.Summary()
	if s.Count(TypeRequest) != 50 {
		t.Errorf("requests counted %d, want 50", s.Count(TypeRequest))
	}
	if got := s.Values(AttrPath); len(got) != 4 || got[0] != "/p0" {
		t.Errorf("paths %q, want the first 4", got)
	}
	b, _ := json.Marshal(s)
	if !strings.Contains(string(b), `"/p3","..."`) {
		t.Errorf("capped key not marked: %s", b)
	}
}

// TestSteadyStateAllocations is the hot-path guarantee: once a flow is detected and its
// summary caps are reached, HTTP/1 and DNS packets cost no allocation.
func TestSteadyStateAllocations(t *testing.T) {
	e := coreEngine(t)
	req := []byte("GET /index.html HTTP/1.1\r\nHost: example\r\nUser-Agent: bench\r\n\r\n")
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello")
	fl := e.NewFlow(FlowInfo{Transport: TCP, ServerPort: 80}, nil)
	fl.Feed(ClientToServer, req)
	fl.Feed(ServerToClient, resp)
	if n := testing.AllocsPerRun(200, func() {
		fl.Feed(ClientToServer, req)
		fl.Feed(ServerToClient, resp)
	}); n != 0 {
		t.Errorf("http1: %v allocations per request/response, want 0", n)
	}
	q, r := dnsPair(t)
	fl = e.NewFlow(FlowInfo{Transport: UDP, ServerPort: 53}, nil)
	fl.Feed(ClientToServer, q)
	fl.Feed(ServerToClient, r)
	if fl.Protocol() != "dns" {
		t.Fatalf("dns pair detected as %q", fl.Protocol())
	}
	if n := testing.AllocsPerRun(200, func() {
		fl.Feed(ClientToServer, q)
		fl.Feed(ServerToClient, r)
	}); n != 0 {
		t.Errorf("dns: %v allocations per query/response, want 0", n)
	}
}

// TestShortClientBytesDoNotStall: a few bytes of a protocol later in the registry (Redis's
// "PING\r\n") must not be held back by the core detectors' NeedMore, and a detector that
// keeps saying NeedMore holds a later Yes back only a couple of turns.
func TestShortClientBytesDoNotStall(t *testing.T) {
	redisLike := fakeProto{name: "pinger", detect: func(p *Probe) Verdict {
		if string(p.Client) == "PING\r\n" {
			return Yes
		}
		return No
	}}
	e, err := New(Config{Protocols: []Protocol{HTTP2{}, HTTP1{}, TLS{}, DNS{}, redisLike}})
	if err != nil {
		t.Fatal(err)
	}
	fl := e.NewFlow(FlowInfo{Transport: TCP, ServerPort: 6379}, nil)
	fl.Feed(ClientToServer, []byte("PING\r\n"))
	if fl.Protocol() != "pinger" {
		t.Fatalf("after one PING: %q, want pinger", fl.Protocol())
	}
}

func TestHesitantDetectorIsBounded(t *testing.T) {
	hesitant := fakeProto{name: "hesitant", detect: func(*Probe) Verdict { return NeedMore }}
	sure := fakeProto{name: "sure", detect: func(*Probe) Verdict { return Yes }}
	e, _ := New(Config{Protocols: []Protocol{hesitant, sure}})
	fl := e.NewFlow(FlowInfo{Transport: TCP}, nil)
	turns := 0
	for ; turns < 10 && !fl.Detected(); turns++ {
		fl.Feed(Direction(turns%2), []byte("x"))
	}
	if fl.Protocol() != "sure" || turns > 4 {
		t.Fatalf("after %d turns: %q, want sure within 4", turns, fl.Protocol())
	}
}

// TestMidstreamReprobes: a flow picked up inside a large body is recognised at the next
// message start, beyond the first probe.
func TestMidstreamReprobes(t *testing.T) {
	e := coreEngine(t)
	fl := e.NewFlow(FlowInfo{Transport: TCP, ServerPort: 8081, Midstream: true}, nil)
	body := make([]byte, 1000)
	for i := range body {
		body[i] = byte(i*7) | 0x80
	}
	for i := 0; i < 5; i++ { // 5000 bytes of body: more than MaxProbe
		fl.Feed(ServerToClient, body)
	}
	fl.Feed(ServerToClient, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	fl.Close()
	if fl.Protocol() != "http" || fl.Summary().Count(TypeResponse) != 1 {
		t.Fatalf("got %q with %d responses", fl.Protocol(), fl.Summary().Count(TypeResponse))
	}
}

// TestGapBeforeAnyBytes: losing the first segment of a flow must not decide Unknown on an
// empty probe; the bytes after the hole are probed as mid-stream.
func TestGapBeforeAnyBytes(t *testing.T) {
	e := coreEngine(t)
	fl := e.NewFlow(FlowInfo{Transport: TCP, ServerPort: 80}, nil)
	fl.Gap(ClientToServer)
	fl.Feed(ClientToServer, []byte("er: 1\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"))
	fl.Close()
	if fl.Protocol() != "http" || fl.Summary().Count(TypeRequest) != 1 {
		t.Fatalf("got %q, %d requests", fl.Protocol(), fl.Summary().Count(TypeRequest))
	}
}
