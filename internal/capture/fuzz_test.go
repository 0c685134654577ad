package capture

import (
	"bytes"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// FuzzWritePCAP: any recorded bytes re-frame into a pcap that reads back with exactly the
// payload bytes per direction (for TCP) and never fails or panics.
func FuzzWritePCAP(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), []byte("HTTP/1.1 200 OK\r\n\r\n"), uint16(3000), false)
	f.Add([]byte{}, bytes.Repeat([]byte{0xff}, 4000), uint16(1), true)
	f.Fuzz(func(t *testing.T, a, b []byte, split uint16, udp bool) {
		if len(a)+len(b) > 1<<16 {
			return
		}
		t0 := time.Unix(1_700_000_000, 0)
		c := Conversation{Client: netip.MustParseAddrPort("10.0.0.1:1234"), Server: netip.MustParseAddrPort("10.0.0.2:80"), Closed: true}
		if udp {
			c.Proto = UDP
		}
		s := int(split) % (len(a) + 1)
		for i, seg := range [][]byte{a[:s], b, a[s:]} {
			if len(seg) > 0 {
				c.Segments = append(c.Segments, Segment{Time: t0.Add(time.Duration(i) * time.Millisecond), FromClient: i != 1, Data: seg})
			}
		}
		var out bytes.Buffer
		if err := WritePCAP(&out, []Conversation{c}); err != nil {
			t.Fatal(err)
		}
		r, err := pcapgo.NewReader(&out)
		if err != nil {
			t.Fatal(err)
		}
		var fromClient, fromServer []byte
		for {
			data, _, err := r.ReadPacketData()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
			if p.ErrorLayer() != nil {
				t.Fatalf("undecodable packet: %v", p.ErrorLayer().Error())
			}
			var pl []byte
			var sport uint16
			if tl, ok := p.TransportLayer().(*layers.TCP); ok {
				pl, sport = tl.Payload, uint16(tl.SrcPort)
			} else if ul, ok := p.TransportLayer().(*layers.UDP); ok {
				pl, sport = ul.Payload, uint16(ul.SrcPort)
			}
			if sport == 1234 {
				fromClient = append(fromClient, pl...)
			} else {
				fromServer = append(fromServer, pl...)
			}
		}
		if !bytes.Equal(fromClient, append(append([]byte(nil), a[:s]...), a[s:]...)) || !bytes.Equal(fromServer, b) {
			t.Fatalf("payload not preserved: client %d/%d server %d/%d bytes", len(fromClient), len(a), len(fromServer), len(b))
		}
	})
}
