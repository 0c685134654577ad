package dpi

import (
	"strings"
	"testing"
)

// Fuzz targets for the core parsers and the engine. Seeds are the real captures in
// ../inspect/testdata; `go test` runs the seeds, `go test -fuzz=FuzzX` explores. Each target
// feeds both directions in fuzzer-chosen segment sizes, directly to the parser (so a panic is
// a crash, not a recovered parse error) and checks the per-direction buffers stay bounded.

func addCaptureSeeds(f *testing.F, dirs ...string) {
	for _, d := range dirs {
		for _, fl := range loadCaptures(f, d) {
			f.Add(fl.stream(ClientToServer), fl.stream(ServerToClient), uint8(len(fl.segs)), false)
		}
	}
}

// feedParser alternates client and server chunks of size split+1 and calls check after each.
func feedParser(t *testing.T, p Parser, client, server []byte, split uint8, check func()) {
	size := int(split) + 1
	emit := func(m *Message) {
		for _, a := range m.Attrs() {
			_ = len(a.Value)
		}
	}
	for len(client) > 0 || len(server) > 0 {
		n := min(size, len(client))
		if n > 0 {
			if p.Feed(ClientToServer, client[:n], emit) != nil {
				return
			}
			client = client[n:]
		}
		n = min(size, len(server))
		if n > 0 {
			if p.Feed(ServerToClient, server[:n], emit) != nil {
				return
			}
			server = server[n:]
		}
		check()
	}
}

func FuzzHTTP1(f *testing.F) {
	addCaptureSeeds(f, "http")
	f.Add([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n"), []byte("HTTP/1.1 200 OK\r\n\r\n"), uint8(3), true)
	f.Fuzz(func(t *testing.T, client, server []byte, split uint8, mid bool) {
		p := HTTP1{}.NewParser().(*http1Parser)
		if mid {
			p.Midstream()
		}
		feedParser(t, p, client, server, split, func() {
			for _, d := range p.d {
				if len(d.buf) > MaxBuffer {
					t.Fatalf("buffered %d bytes", len(d.buf))
				}
			}
		})
	})
}

func FuzzHTTP2(f *testing.F) {
	addCaptureSeeds(f, "http2")
	c := grpcConversation(f)
	f.Add(c.client.Bytes(), c.server.Bytes(), uint8(0), false)
	f.Fuzz(func(t *testing.T, client, server []byte, split uint8, mid bool) {
		p := HTTP2{}.NewParser().(*http2Parser)
		if mid {
			p.Midstream()
		}
		feedParser(t, p, client, server, split, func() {
			for _, d := range p.d {
				if len(d.payload) > MaxBuffer || len(d.block) > MaxBuffer || len(d.h1buf) > 8<<10 {
					t.Fatalf("buffered %d/%d/%d bytes", len(d.payload), len(d.block), len(d.h1buf))
				}
			}
		})
	})
}

func FuzzTLS(f *testing.F) {
	addCaptureSeeds(f, "tls")
	f.Add(goClientHello(f), []byte{22, 3, 3, 0, 4, 2, 0, 0, 0}, uint8(4), false)
	f.Fuzz(func(t *testing.T, client, server []byte, split uint8, mid bool) {
		p := TLS{}.NewParser().(*tlsParser)
		if mid {
			p.Midstream()
		}
		feedParser(t, p, client, server, split, func() {
			for _, d := range p.d {
				if len(d.hs) > MaxBuffer {
					t.Fatalf("buffered %d bytes", len(d.hs))
				}
			}
		})
	})
}

func FuzzDNS(f *testing.F) {
	for _, fl := range loadCaptures(f, "dns") {
		f.Add(fl.stream(ClientToServer), fl.stream(ServerToClient), uint8(255), fl.transport == TCP)
	}
	q, r := dnsPair(f)
	f.Add(q, r, uint8(255), false)
	f.Fuzz(func(t *testing.T, client, server []byte, split uint8, tcp bool) {
		tr := UDP
		if tcp {
			tr = TCP
		}
		if (DNS{}).Detect(&Probe{Transport: tr, Client: client, Server: server}) == Yes && !tcp {
			// A Yes over UDP promises the message walks cleanly.
			if !dnsPlausible(client, false, true) && !dnsPlausible(client, true, true) && !dnsPlausible(server, true, true) {
				t.Fatal("detected a message that does not parse")
			}
		}
		p := DNS{}.NewFlowParser(FlowInfo{Transport: tr}).(*dnsParser)
		feedParser(t, p, client, server, split, func() {
			for _, b := range p.buf {
				if len(b) > 2+65535 {
					t.Fatalf("buffered %d bytes", len(b))
				}
			}
		})
	})
}

// FuzzEngine runs the whole registry (every protocol of every helper): detection and parsing
// must never panic, whatever the bytes, segmentation, transport or mid-stream flag.
func FuzzEngine(f *testing.F) {
	addCaptureSeeds(f, "http", "http2", "tls", "dns")
	f.Fuzz(func(t *testing.T, client, server []byte, split uint8, mid bool) {
		e := fullEngine(t)
		for _, tr := range []Transport{TCP, UDP} {
			fl := e.NewFlow(FlowInfo{Transport: tr, ServerPort: uint16(split) * 7, Midstream: mid}, nil)
			size := int(split) + 1
			c, s := client, server
			for len(c) > 0 || len(s) > 0 {
				n := min(size, len(c))
				fl.Feed(ClientToServer, c[:n])
				c = c[n:]
				n = min(size, len(s))
				fl.Feed(ServerToClient, s[:n])
				s = s[n:]
			}
			fl.Close()
			if err := fl.Err(); err != nil && strings.Contains(err.Error(), "panic") {
				t.Fatalf("%s parser over %s: %v", fl.Protocol(), tr, err)
			}
			_, _ = fl.Summary().MarshalJSON()
		}
	})
}
