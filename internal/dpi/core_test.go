package dpi

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// capturedSegment is one payload-carrying packet of a capture.
type capturedSegment struct {
	dir  Direction
	data []byte
}

// capturedFlow is the payload of one flow of a real capture, in capture order. The test
// captures are clean loopback recordings (no loss or reordering), so packet order is stream
// order; internal/inspect tests reassembly itself.
type capturedFlow struct {
	name       string
	transport  Transport
	serverPort uint16
	segs       []capturedSegment
}

func (f *capturedFlow) stream(dir Direction) []byte {
	var b []byte
	for _, s := range f.segs {
		if s.dir == dir {
			b = append(b, s.data...)
		}
	}
	return b
}

func (f *capturedFlow) bytes() int {
	n := 0
	for _, s := range f.segs {
		n += len(s.data)
	}
	return n
}

// loadCaptures reads the core captures of internal/inspect/testdata/<dir>/*.pcap.
func loadCaptures(t testing.TB, dir string) []*capturedFlow {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("..", "inspect", "testdata", dir, "*.pcap"))
	if len(files) == 0 {
		t.Fatalf("no captures in ../inspect/testdata/%s", dir)
	}
	var out []*capturedFlow
	for _, file := range files {
		out = append(out, readCapture(t, file)...)
	}
	return out
}

func readCapture(t testing.TB, file string) []*capturedFlow {
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r, err := pcapgo.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ lo, hi uint16 }
	flows := map[key]*capturedFlow{}
	var order []*capturedFlow
	client := map[key]uint16{}
	src := gopacket.NewPacketSource(r, r.LinkType())
	for pkt := range src.Packets() {
		var sp, dp uint16
		var payload []byte
		var tr Transport
		var syn bool
		if tcp, ok := pkt.TransportLayer().(*layers.TCP); ok {
			sp, dp, payload, tr = uint16(tcp.SrcPort), uint16(tcp.DstPort), tcp.Payload, TCP
			syn = tcp.SYN && !tcp.ACK
		} else if udp, ok := pkt.TransportLayer().(*layers.UDP); ok {
			sp, dp, payload, tr = uint16(udp.SrcPort), uint16(udp.DstPort), udp.Payload, UDP
		} else {
			continue
		}
		k := key{min(sp, dp), max(sp, dp)}
		f := flows[k]
		if f == nil {
			f = &capturedFlow{name: filepath.Base(file), transport: tr, serverPort: dp}
			client[k] = sp
			if !syn && tr == TCP && sp < dp {
				f.serverPort, client[k] = sp, dp
			}
			flows[k] = f
			order = append(order, f)
		}
		if len(payload) == 0 {
			continue
		}
		dir := ClientToServer
		if sp != client[k] {
			dir = ServerToClient
		}
		f.segs = append(f.segs, capturedSegment{dir, slices.Clone(payload)})
	}
	return order
}

// runFlow feeds a captured flow through a fresh engine flow and returns it closed.
func runFlow(t testing.TB, e *Engine, f *capturedFlow, onMsg func(*Message)) *Flow {
	t.Helper()
	fl := e.NewFlow(FlowInfo{Transport: f.transport, ServerPort: f.serverPort}, onMsg)
	for _, s := range f.segs {
		fl.Feed(s.dir, s.data)
	}
	fl.Close()
	return fl
}

func coreEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := New(Config{Protocols: []Protocol{HTTP2{}, HTTP1{}, TLS{}, DNS{}}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// fullEngine is the engine with the whole registry, as the sidecar and inspect use it.
func fullEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := New(Config{Protocols: DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	return e
}
