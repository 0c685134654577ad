package inspect

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/miekg/dns"
)

type frame struct {
	ci   gopacket.CaptureInfo
	data []byte
}

func readFrames(t testing.TB, path string) ([]frame, layers.LinkType) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var out []frame
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		out = append(out, frame{ci, data})
	}
	return out, r.LinkType()
}

func writePcap(t testing.TB, lt layers.LinkType, frames []frame) []byte {
	t.Helper()
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	if err := w.WriteFileHeader(65536, lt); err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		ci := f.ci
		ci.CaptureLength, ci.Length = len(f.data), len(f.data)
		if err := w.WritePacket(ci, f.data); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func inspectBytes(t testing.TB, b []byte) *Result {
	t.Helper()
	res, err := newInspector(t).Read(context.Background(), bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// l7Lines renders what must not depend on packet-level accidents: endpoints, protocol, L7.
func l7Lines(t testing.TB, res *Result) string {
	var b strings.Builder
	for _, f := range res.Flows {
		l7, _ := f.L7.MarshalJSON()
		b.WriteString(f.Src + " " + f.Dst + " " + f.Transport + " " + f.Protocol + " " + string(l7) + "\n")
	}
	return b.String()
}

// TestReorderedAndRetransmitted swaps neighbouring segments and repeats others: TCP
// reassembly must hand the engine the same streams.
func TestReorderedAndRetransmitted(t *testing.T) {
	for _, path := range []string{"testdata/http/curl-nginx-80.pcap", "testdata/http2/grpc-health-50051.pcap", "testdata/tls/curl-nginx-443.pcap"} {
		frames, lt := readFrames(t, path)
		want := l7Lines(t, inspectBytes(t, writePcap(t, lt, frames)))
		var mangled []frame
		for i := 0; i < len(frames); i++ {
			switch {
			case i%5 == 3 && i+1 < len(frames): // out of order
				mangled = append(mangled, frames[i+1], frames[i])
				i++
			case i%4 == 2: // retransmitted
				mangled = append(mangled, frames[i], frames[i])
			default:
				mangled = append(mangled, frames[i])
			}
		}
		if got := l7Lines(t, inspectBytes(t, writePcap(t, lt, mangled))); got != want {
			t.Errorf("%s mangled:\n%s\nwant\n%s", path, got, want)
		}
	}
}

// TestMidstream drops the start of the capture (handshake and first request): the flow is
// still HTTP, oriented to the server port, with the later messages parsed.
func TestMidstream(t *testing.T) {
	frames, lt := readFrames(t, "testdata/http/curl-nginx-80.pcap")
	res := inspectBytes(t, writePcap(t, lt, frames[4:]))
	if len(res.Flows) == 0 {
		t.Fatal("no flows")
	}
	f := res.Flows[0]
	if f.Protocol != "http" || !strings.HasSuffix(f.Dst, ":80") || f.L7.Count("response") == 0 {
		l7, _ := f.L7.MarshalJSON()
		t.Fatalf("midstream flow: %s -> %s %s %s", f.Src, f.Dst, f.Protocol, l7)
	}
}

// TestLinkTypes re-frames an Ethernet capture as raw IP, Linux cooked (SLL) and VLAN-tagged
// Ethernet: the flows must not change.
func TestLinkTypes(t *testing.T) {
	frames, lt := readFrames(t, "testdata/dns/dig-udp-53.pcap")
	if lt != layers.LinkTypeEthernet {
		t.Fatalf("expected an Ethernet capture, got %v", lt)
	}
	want := l7Lines(t, inspectBytes(t, writePcap(t, lt, frames)))
	reframe := func(fn func(eth []byte) []byte) []frame {
		out := make([]frame, len(frames))
		for i, f := range frames {
			out[i] = frame{f.ci, fn(f.data)}
		}
		return out
	}
	cases := map[string][]byte{
		"raw": writePcap(t, layers.LinkTypeRaw, reframe(func(e []byte) []byte { return e[14:] })),
		"sll": writePcap(t, layers.LinkTypeLinuxSLL, reframe(func(e []byte) []byte {
			h := make([]byte, 16, 16+len(e))
			binary.BigEndian.PutUint16(h[14:], binary.BigEndian.Uint16(e[12:]))
			return append(h, e[14:]...)
		})),
		"vlan": writePcap(t, layers.LinkTypeEthernet, reframe(func(e []byte) []byte {
			v := append([]byte{}, e[:12]...)
			v = append(v, 0x81, 0x00, 0x00, 0x2a)
			return append(v, e[12:]...)
		})),
	}
	for name, b := range cases {
		if got := l7Lines(t, inspectBytes(t, b)); got != want {
			t.Errorf("%s:\n%s\nwant\n%s", name, got, want)
		}
	}
}

func TestIPv6(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("v6.meshguard.test.", dns.TypeAAAA)
	r := new(dns.Msg)
	r.SetReply(q)
	qb, _ := q.Pack()
	rb, _ := r.Pack()
	c, s := net.ParseIP("fd00::1"), net.ParseIP("fd00::53")
	pkt := func(src, dst net.IP, sp, dp int, payload []byte) frame {
		ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: 64, SrcIP: src, DstIP: dst}
		udp := &layers.UDP{SrcPort: layers.UDPPort(sp), DstPort: layers.UDPPort(dp)}
		_ = udp.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, udp, gopacket.Payload(payload)); err != nil {
			t.Fatal(err)
		}
		return frame{gopacket.CaptureInfo{Timestamp: time.Unix(1, 0)}, buf.Bytes()}
	}
	res := inspectBytes(t, writePcap(t, layers.LinkTypeRaw, []frame{pkt(c, s, 40000, 53, qb), pkt(s, c, 53, 40000, rb)}))
	if len(res.Flows) != 1 {
		t.Fatalf("%d flows", len(res.Flows))
	}
	f := res.Flows[0]
	if f.Src != "[fd00::1]:40000" || f.Dst != "[fd00::53]:53" || f.Protocol != "dns" || f.Packets != 2 {
		t.Fatalf("got %+v", f)
	}
}

func TestTruncatedAndBadFiles(t *testing.T) {
	whole, err := os.ReadFile("testdata/http/curl-nginx-80.pcap")
	if err != nil {
		t.Fatal(err)
	}
	res, err := newInspector(t).Read(context.Background(), bytes.NewReader(whole[:len(whole)-30]))
	if !errors.Is(err, ErrTruncated) || res == nil || len(res.Flows) == 0 {
		t.Fatalf("truncated: err=%v res=%v", err, res)
	}
	for name, b := range map[string][]byte{
		"empty": nil,
		"text":  []byte("this is not a capture at all, just some text\n"),
		"short": whole[:10],
	} {
		res, err := newInspector(t).Read(context.Background(), bytes.NewReader(b))
		if err == nil || errors.Is(err, ErrTruncated) || res != nil {
			t.Errorf("%s: err=%v res=%v, want a plain error", name, err, res)
		}
	}
}

// FuzzInspectPcap feeds arbitrary files to the reader: errors are fine, panics are not.
func FuzzInspectPcap(f *testing.F) {
	for _, path := range captures(f) {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) < 64<<10 {
			f.Add(b)
		}
	}
	in := newInspector(f) // an Inspector keeps no state between captures
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = in.Read(context.Background(), bytes.NewReader(b))
	})
}

// TestSnaplen: a capture cut to 120 bytes per frame still tells each flow's protocol; the cut
// tails are holes, not stalls.
func TestSnaplen(t *testing.T) {
	for _, path := range []string{"testdata/http/curl-nginx-80.pcap", "testdata/tls/curl-nginx-443.pcap"} {
		frames, lt := readFrames(t, path)
		full := inspectBytes(t, writePcap(t, lt, frames))
		var b bytes.Buffer
		w := pcapgo.NewWriter(&b)
		_ = w.WriteFileHeader(120, lt)
		for _, f := range frames {
			ci := f.ci
			data := f.data[:min(len(f.data), 120)]
			ci.CaptureLength, ci.Length = len(data), len(f.data)
			_ = w.WritePacket(ci, data)
		}
		cut := inspectBytes(t, b.Bytes())
		if len(cut.Flows) != len(full.Flows) {
			t.Fatalf("%s: %d flows, want %d", path, len(cut.Flows), len(full.Flows))
		}
		for i := range cut.Flows {
			if cut.Flows[i].Protocol != full.Flows[i].Protocol || cut.Flows[i].Bytes != full.Flows[i].Bytes {
				t.Errorf("%s flow %d: %s %d bytes, want %s %d", path, i, cut.Flows[i].Protocol,
					cut.Flows[i].Bytes, full.Flows[i].Protocol, full.Flows[i].Bytes)
			}
		}
	}
}

// FuzzDecodeFrames drives the link/IP/transport decoders and the flow table frame by frame,
// much faster than whole files: the frames of a capture, each under a fuzzer-chosen link type.
func FuzzDecodeFrames(f *testing.F) {
	for _, path := range []string{"testdata/http/curl-nginx-80.pcap", "testdata/dns/dig-udp-53.pcap", "testdata/tls/curl-nginx-443.pcap", "testdata/icmp/ping-s3000-fragmented.pcap"} {
		frames, _ := readFrames(f, path)
		var all []byte
		for _, fr := range frames {
			all = binary.BigEndian.AppendUint16(all, uint16(len(fr.data)))
			all = append(all, fr.data...)
		}
		f.Add(uint8(0), all)
	}
	in := newInspector(f)
	kinds := []layers.LinkType{layers.LinkTypeEthernet, layers.LinkTypeRaw, layers.LinkTypeLinuxSLL,
		linkTypeLinuxSLL2, layers.LinkTypeNull, layers.LinkTypeIPv4, layers.LinkTypeIPv6}
	f.Fuzz(func(t *testing.T, kind uint8, b []byte) {
		tb := newTable(in.cfg)
		for len(b) >= 2 {
			n := min(int(binary.BigEndian.Uint16(b)), len(b)-2)
			lt := kinds[int(kind)%len(kinds)]
			tb.packet(lt, b[2:2+n], n, time.Time{})
			b = b[2+n:]
			kind++
		}
		for _, r := range tb.finish() {
			_, _ = r.MarshalLine()
		}
	})
}
