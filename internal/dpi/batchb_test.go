package dpi

// Test helpers shared by the batch-B protocol tests (cassandra ... icmp): captures from
// internal/inspect/testdata split into flows, message rendering, segmentation and fuzz
// drivers. Names carry a bb prefix to stay clear of the other protocol tests in the package.

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

type bbSeg struct {
	dir  Direction
	data []byte
}

type bbFlow struct {
	transport Transport
	segs      []bbSeg
}

// bbCapture reads internal/inspect/testdata/<rel> into flows (in order of first packet); the
// side that sent the first packet of a flow is the client.
func bbCapture(tb testing.TB, rel string) []bbFlow {
	tb.Helper()
	f, err := os.Open(filepath.Join("..", "inspect", "testdata", rel))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	type key struct {
		t      Transport
		lo, hi netip.AddrPort
	}
	index := map[key]int{}
	clients := map[key]netip.AddrPort{}
	var flows []bbFlow
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		pkt := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		nl := pkt.NetworkLayer()
		if nl == nil {
			continue
		}
		srcIP, _ := netip.AddrFromSlice(nl.NetworkFlow().Src().Raw())
		dstIP, _ := netip.AddrFromSlice(nl.NetworkFlow().Dst().Raw())
		var t Transport
		var sp, dp uint16
		var payload []byte
		switch l := pkt.TransportLayer().(type) {
		case *layers.TCP:
			t, sp, dp, payload = TCP, uint16(l.SrcPort), uint16(l.DstPort), l.Payload
			if l.SYN && !l.ACK {
				// a SYN decides who the client is even without payload
				src := netip.AddrPortFrom(srcIP, sp)
				dst := netip.AddrPortFrom(dstIP, dp)
				k := key{t, src, dst}
				if dst.Compare(src) < 0 {
					k = key{t, dst, src}
				}
				if _, ok := clients[k]; !ok {
					clients[k] = src
				}
			}
		case *layers.UDP:
			t, sp, dp, payload = UDP, uint16(l.SrcPort), uint16(l.DstPort), l.Payload
		default:
			if pkt.Layer(layers.LayerTypeICMPv4) == nil && pkt.Layer(layers.LayerTypeICMPv6) == nil {
				continue
			}
			t, payload = ICMP, nl.LayerPayload()
		}
		if len(payload) == 0 {
			continue
		}
		src, dst := netip.AddrPortFrom(srcIP, sp), netip.AddrPortFrom(dstIP, dp)
		k := key{t, src, dst}
		if dst.Compare(src) < 0 {
			k = key{t, dst, src}
		}
		if _, ok := clients[k]; !ok {
			clients[k] = src
		}
		i, ok := index[k]
		if !ok {
			i = len(flows)
			index[k] = i
			flows = append(flows, bbFlow{transport: t})
		}
		dir := ClientToServer
		if src != clients[k] {
			dir = ServerToClient
		}
		flows[i].segs = append(flows[i].segs, bbSeg{dir, bytes.Clone(payload)})
	}
	if len(flows) == 0 {
		tb.Fatalf("%s: no payloads", rel)
	}
	return flows
}

// bbProbe builds the detection probe of a flow: the first payload of each direction (for TCP,
// the concatenation up to MaxProbe).
func bbProbe(f bbFlow) *Probe {
	p := &Probe{Transport: f.transport}
	for _, s := range f.segs {
		side := &p.Client
		if s.dir == ServerToClient {
			side = &p.Server
		}
		if f.transport != TCP {
			if *side == nil {
				*side = s.data
			}
			continue
		}
		if len(*side) < MaxProbe {
			*side = append(*side, s.data[:min(len(s.data), MaxProbe-len(*side))]...)
		}
	}
	return p
}

// bbRender renders one message as "dir type k=v k=v".
func bbRender(m *Message) string {
	var b strings.Builder
	b.WriteString(m.Dir.String())
	b.WriteByte(' ')
	b.WriteString(m.Type)
	for _, a := range m.Attrs() {
		b.WriteByte(' ')
		b.WriteString(a.Key)
		b.WriteByte('=')
		b.Write(a.Value)
	}
	return b.String()
}

// bbFeed feeds segments to a new parser, cutting TCP data into chunks of at most chunk bytes
// (0: as captured), and returns the rendered messages.
func bbFeed(tb testing.TB, proto Protocol, f bbFlow, chunk int) []string {
	tb.Helper()
	p := proto.NewParser()
	var out []string
	emit := func(m *Message) { out = append(out, bbRender(m)) }
	for _, s := range f.segs {
		d := s.data
		if f.transport != TCP || chunk == 0 {
			if err := p.Feed(s.dir, d, emit); err != nil {
				tb.Fatalf("feed: %v", err)
			}
			continue
		}
		for len(d) > 0 {
			n := min(chunk, len(d))
			if err := p.Feed(s.dir, d[:n], emit); err != nil {
				tb.Fatalf("feed (chunk %d): %v", chunk, err)
			}
			d = d[n:]
		}
	}
	return out
}

// bbCheckCapture asserts that every flow of a capture is detected with want and that the
// parser emits the same messages whole, in 1-byte and in 7-byte pieces (TCP); it returns
// the messages of all flows.
func bbCheckCapture(t *testing.T, proto Protocol, rel string, want Verdict) []string {
	t.Helper()
	var all []string
	for i, f := range bbCapture(t, rel) {
		if v := proto.Detect(bbProbe(f)); v != want {
			t.Errorf("%s flow %d: Detect = %v, want %v", rel, i, v, want)
		}
		whole := bbFeed(t, proto, f, 0)
		if f.transport == TCP {
			for _, chunk := range []int{1, 7} {
				got := bbFeed(t, proto, f, chunk)
				if strings.Join(got, "\n") != strings.Join(whole, "\n") {
					t.Errorf("%s flow %d in %d-byte pieces:\n%s\nwant\n%s", rel, i, chunk,
						strings.Join(got, "\n"), strings.Join(whole, "\n"))
				}
			}
		}
		all = append(all, whole...)
	}
	return all
}

// bbWant asserts that every line of want occurs in got, in order.
func bbWant(t *testing.T, got []string, want ...string) {
	t.Helper()
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("missing message %q; got:\n%s", want[i], strings.Join(got, "\n"))
	}
}

// bbNoSecret asserts that no rendered message contains secret.
func bbNoSecret(t *testing.T, got []string, secret string) {
	t.Helper()
	for _, g := range got {
		if strings.Contains(g, secret) {
			t.Errorf("secret %q recorded: %s", secret, g)
		}
	}
}

// bbSeeds adds every payload of the captures (and the whole client stream of TCP flows) to f.
func bbSeeds(f *testing.F, rels ...string) {
	for _, rel := range rels {
		for _, fl := range bbCapture(f, rel) {
			var stream []byte
			for _, s := range fl.segs {
				f.Add(s.data)
				if s.dir == ClientToServer {
					stream = append(stream, s.data...)
				}
			}
			if fl.transport == TCP {
				f.Add(stream)
			}
		}
	}
}

// bbFuzz runs detection and parsing on arbitrary bytes: as a client probe, a server probe,
// a stream cut at a data-dependent point, both directions, and as datagrams. It must not
// panic, and messages must respect the attribute cap.
func bbFuzz(t *testing.T, proto Protocol, data []byte) {
	for _, tr := range []Transport{TCP, UDP, ICMP} {
		if proto.Transports()&tr == 0 {
			continue
		}
		proto.Detect(&Probe{Transport: tr, Client: data})
		proto.Detect(&Probe{Transport: tr, Server: data})
		proto.Detect(&Probe{Transport: tr, Client: data, Server: data, Midstream: true})
		proto.Detect(&Probe{Transport: tr, Client: []byte{}, Server: data})
		proto.Detect(&Probe{Transport: tr, Client: data, Server: []byte{}})
		p := proto.NewParser()
		emit := func(m *Message) {
			if len(m.Attrs()) > 16 {
				t.Fatalf("%d attributes", len(m.Attrs()))
			}
			for _, a := range m.Attrs() {
				if len(a.Value) > MaxBuffer {
					t.Fatalf("attribute %s of %d bytes", a.Key, len(a.Value))
				}
			}
		}
		if tr == TCP {
			cut := 1
			if len(data) > 0 {
				cut = int(data[0])%(len(data)+1) + 1
			}
			for d := data; len(d) > 0; {
				n := min(cut, len(d))
				if p.Feed(ClientToServer, d[:n], emit) != nil {
					break
				}
				d = d[n:]
			}
			q := proto.NewParser()
			_ = q.Feed(ServerToClient, data, emit)
			_ = q.Feed(ServerToClient, data, emit)
			continue
		}
		_ = p.Feed(ClientToServer, data, emit)
		_ = p.Feed(ServerToClient, data, emit)
		_ = p.Feed(ClientToServer, data, emit)
	}
}

// bbBench measures a capture's flows two ways: "flow" is detection plus a new parser per flow
// (the per-connection cost), "steady" feeds the flows' bytes again and again to parsers that
// already exist (the per-message cost, which should not allocate).
func bbBench(b *testing.B, proto Protocol, rels ...string) {
	var flows []bbFlow
	var n int64
	for _, rel := range rels {
		for _, f := range bbCapture(b, rel) {
			flows = append(flows, f)
			for _, s := range f.segs {
				n += int64(len(s.data))
			}
		}
	}
	probes := make([]*Probe, len(flows))
	for i, f := range flows {
		probes[i] = bbProbe(f)
	}
	emit := func(*Message) {}
	b.Run("flow", func(b *testing.B) {
		b.SetBytes(n)
		b.ReportAllocs()
		for b.Loop() {
			for i, f := range flows {
				proto.Detect(probes[i])
				p := proto.NewParser()
				for _, s := range f.segs {
					_ = p.Feed(s.dir, s.data, emit)
				}
			}
		}
	})
	b.Run("steady", func(b *testing.B) {
		parsers := make([]Parser, len(flows))
		for i := range flows {
			parsers[i] = proto.NewParser()
		}
		b.SetBytes(n)
		b.ReportAllocs()
		for b.Loop() {
			for i, f := range flows {
				for _, s := range f.segs {
					if parsers[i].Feed(s.dir, s.data, emit) != nil {
						parsers[i] = proto.NewParser()
					}
				}
			}
		}
	})
}

// bbWantPrefix is bbWant matching message prefixes.
func bbWantPrefix(t *testing.T, got []string, want ...string) {
	t.Helper()
	i := 0
	for _, g := range got {
		if i < len(want) && strings.HasPrefix(g, want[i]) {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("missing message starting %q; got:\n%s", want[i], strings.Join(got, "\n"))
	}
}
