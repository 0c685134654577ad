package inspect

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// outerIPv4 wraps payload in an IPv4 header (10.99.0.1 -> 10.99.0.2) of protocol proto.
func outerIPv4(proto byte, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0], h[8], h[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	copy(h[12:], []byte{10, 99, 0, 1, 10, 99, 0, 2})
	return append(h, payload...)
}

func outerEthernet(etype uint16, payload []byte) []byte {
	h := make([]byte, 14, 14+len(payload))
	copy(h, []byte{2, 0, 0, 0, 0, 0xaa, 2, 0, 0, 0, 0, 0xbb})
	binary.BigEndian.PutUint16(h[12:], etype)
	return append(h, payload...)
}

// TestEncapsulations: the same TCP conversation framed as cloud and carrier captures frame
// it — QinQ, MPLS, Ethernet with FCS, SLL2, VXLAN, GRE (Ethernet, IP, ERSPAN II), as a
// nanosecond pcap, a big-endian pcap and a pcapng with two interfaces of different link
// types — and with garbage frames in between: every variant reports the same flows.
func TestEncapsulations(t *testing.T) {
	frames, lt := readFrames(t, "testdata/http/curl-nginx-80.pcap")
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
	udp := func(dport uint16, payload []byte) []byte {
		h := make([]byte, 8, 8+len(payload))
		binary.BigEndian.PutUint16(h, 51000)
		binary.BigEndian.PutUint16(h[2:], dport)
		binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
		return append(h, payload...)
	}
	cases := map[string][]byte{
		"qinq": writePcap(t, lt, reframe(func(e []byte) []byte {
			v := append([]byte{}, e[:12]...)
			v = append(v, 0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00, 0x2a)
			return append(v, e[12:]...)
		})),
		"mpls": writePcap(t, lt, reframe(func(e []byte) []byte {
			return outerEthernet(0x8847, append([]byte{0, 1, 0x40, 64, 0, 2, 0x01, 64}, e[14:]...))
		})),
		"fcs": writePcap(t, lt, reframe(func(e []byte) []byte {
			return append(append([]byte{}, e...), 0xde, 0xad, 0xbe, 0xef)
		})),
		"sll2": writePcap(t, linkTypeLinuxSLL2, reframe(func(e []byte) []byte {
			h := make([]byte, 20, 20+len(e))
			copy(h, e[12:14])
			return append(h, e[14:]...)
		})),
		"vxlan": writePcap(t, lt, reframe(func(e []byte) []byte {
			vx := append([]byte{0x08, 0, 0, 0, 0, 0x12, 0x34, 0}, e...)
			return outerEthernet(0x0800, outerIPv4(17, udp(4789, vx)))
		})),
		"gre-ethernet": writePcap(t, lt, reframe(func(e []byte) []byte {
			g := append([]byte{0x20, 0, 0x65, 0x58, 0, 0, 0, 7}, e...) // with a key
			return outerEthernet(0x0800, outerIPv4(47, g))
		})),
		"gre-ip": writePcap(t, layers.LinkTypeRaw, reframe(func(e []byte) []byte {
			return outerIPv4(47, append([]byte{0, 0, 0x08, 0}, e[14:]...))
		})),
		"erspan2": writePcap(t, lt, reframe(func(e []byte) []byte {
			g := append([]byte{0x10, 0, 0x88, 0xbe, 0, 0, 0, 1, 0x10, 0x01, 0, 0, 0, 0, 0, 0}, e...)
			return outerEthernet(0x0800, outerIPv4(47, g))
		})),
		"nanosecond": func() []byte {
			var b bytes.Buffer
			w := pcapgo.NewWriterNanos(&b)
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
		}(),
		"big-endian": bigEndianPcap(frames, lt),
		"pcapng-two-interfaces": func() []byte {
			var b bytes.Buffer
			w, err := pcapgo.NewNgWriterInterface(&b, pcapgo.NgInterface{Name: "eth0", LinkType: lt, SnapLength: 65536}, pcapgo.DefaultNgWriterOptions)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := w.AddInterface(pcapgo.NgInterface{Name: "tun0", LinkType: layers.LinkTypeRaw, SnapLength: 65536})
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range frames {
				ci, data := f.ci, f.data
				if i%2 == 1 { // every other frame seen on the raw-IP interface
					ci.InterfaceIndex, data = raw, data[14:]
				}
				ci.CaptureLength, ci.Length = len(data), len(data)
				if err := w.WritePacket(ci, data); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			return b.Bytes()
		}(),
	}
	// Corrupt frames in the middle: skipped and counted, the file goes on.
	var junk []frame
	for i, f := range frames {
		junk = append(junk, f)
		if i == len(frames)/2 {
			junk = append(junk,
				frame{f.ci, []byte{1, 2, 3}},                                    // shorter than Ethernet
				frame{f.ci, outerEthernet(0x0800, []byte{0x45, 0, 0, 20})},      // truncated IPv4
				frame{f.ci, outerEthernet(0x86dd, bytes.Repeat([]byte{6}, 30))}, // truncated IPv6
				frame{f.ci, outerEthernet(0x0800, outerIPv4(6, []byte{0, 80}))}, // truncated TCP
				frame{f.ci, outerEthernet(0x0800, outerIPv4(47, []byte{0xff, 0xff, 0, 0}))},
				frame{f.ci, outerEthernet(0x0800, outerIPv4(17, udp(4789, []byte{0x08, 0, 0, 0, 0, 0, 1, 0, 9})))},
			)
		}
	}
	cases["corrupt frames"] = writePcap(t, lt, junk)
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			res := inspectBytes(t, b)
			got := l7Lines(t, res)
			if name == "corrupt frames" {
				if res.Undecodable < 5 || res.Malformed != 3 {
					t.Errorf("undecodable %d, malformed %d: want the 5 bad frames counted, 3 of them (truncated IPv4, IPv6, TCP) as malformed",
						res.Undecodable, res.Malformed)
				}
				// The short VXLAN-port datagram is a flow of its own (udp, unknown).
				got = dropLines(got, "10.99.0.1:51000")
			}
			if got != want {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func dropLines(s, sub string) string {
	var out []string
	for _, l := range bytes.Split([]byte(s), []byte("\n")) {
		if !bytes.Contains(l, []byte(sub)) {
			out = append(out, string(l))
		}
	}
	var b bytes.Buffer
	for i, l := range out {
		b.WriteString(l)
		if i < len(out)-1 {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// bigEndianPcap writes a classic pcap as a big-endian host (SPARC, POWER) would.
func bigEndianPcap(frames []frame, lt layers.LinkType) []byte {
	be := binary.BigEndian
	b := be.AppendUint32(nil, 0xa1b2c3d4)
	b = be.AppendUint16(b, 2)
	b = be.AppendUint16(b, 4)
	b = be.AppendUint32(b, 0)
	b = be.AppendUint32(b, 0)
	b = be.AppendUint32(b, 65536)
	b = be.AppendUint32(b, uint32(lt))
	for _, f := range frames {
		b = be.AppendUint32(b, uint32(f.ci.Timestamp.Unix()))
		b = be.AppendUint32(b, uint32(f.ci.Timestamp.Nanosecond()/1000))
		b = be.AppendUint32(b, uint32(len(f.data)))
		b = be.AppendUint32(b, uint32(len(f.data)))
		b = append(b, f.data...)
	}
	return b
}
