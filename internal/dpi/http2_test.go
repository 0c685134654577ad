package dpi

import (
	"bytes"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

type h2Conv struct {
	client, server bytes.Buffer
	cf, sf         *http2.Framer
	ce, se         *hpack.Encoder
	cb, sb         bytes.Buffer
}

func newH2Conv() *h2Conv {
	c := &h2Conv{}
	c.cf, c.sf = http2.NewFramer(&c.client, nil), http2.NewFramer(&c.server, nil)
	c.ce, c.se = hpack.NewEncoder(&c.cb), hpack.NewEncoder(&c.sb)
	return c
}

func (c *h2Conv) block(e *hpack.Encoder, b *bytes.Buffer, kv ...string) []byte {
	b.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		_ = e.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append([]byte(nil), b.Bytes()...)
}

func grpcConversation(t testing.TB) *h2Conv {
	c := newH2Conv()
	c.client.WriteString(h2Preface)
	_ = c.cf.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 8192})
	_ = c.sf.WriteSettings()
	for i, method := range []string{"GetOrder", "ListOrders"} {
		stream := uint32(1 + 2*i)
		blk := c.block(c.ce, &c.cb, ":method", "POST", ":scheme", "http", ":path", "/shop.v1.Orders/"+method,
			":authority", "orders:50051", "content-type", "application/grpc", "user-agent", "grpc-go/test", "te", "trailers")
		// First request split into HEADERS + CONTINUATION, the second padded with priority.
		if i == 0 {
			_ = c.cf.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: blk[:5]})
			_ = c.cf.WriteContinuation(stream, true, blk[5:])
		} else {
			_ = c.cf.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: blk, EndHeaders: true,
				PadLength: 7, Priority: http2.PriorityParam{StreamDep: 1, Weight: 9}})
		}
		_ = c.cf.WriteData(stream, true, []byte{0, 0, 0, 0, 3, 8, 1, 2})
		_ = c.sf.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, EndHeaders: true,
			BlockFragment: c.block(c.se, &c.sb, ":status", "200", "content-type", "application/grpc")})
		_ = c.sf.WriteData(stream, false, bytes.Repeat([]byte{1}, 20000%(i+1)+10))
		_ = c.sf.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, EndHeaders: true, EndStream: true,
			BlockFragment: c.block(c.se, &c.sb, "grpc-status", "0")})
	}
	return c
}

func TestHTTP2GRPC(t *testing.T) {
	c := grpcConversation(t)
	for _, size := range []int{1, 9, 1 << 20} {
		var got []string
		p := HTTP2{}.NewParser()
		emit := func(m *Message) {
			got = append(got, m.Type+" "+string(m.Get(AttrMethod))+string(m.Get(AttrStatus))+" "+
				string(m.Get(AttrService))+"/"+string(m.Get(AttrRPC))+" "+string(m.Get("grpc_status")))
		}
		for _, s := range []struct {
			dir Direction
			b   []byte
		}{{ClientToServer, c.client.Bytes()}, {ServerToClient, c.server.Bytes()}} {
			for b := s.b; len(b) > 0; {
				n := min(size, len(b))
				if err := p.Feed(s.dir, b[:n], emit); err != nil {
					t.Fatal(err)
				}
				b = b[n:]
			}
		}
		want := []string{
			"request POST shop.v1.Orders/GetOrder ", "request POST shop.v1.Orders/ListOrders ",
			"response 200 / ", "trailers  / 0", "response 200 / ", "trailers  / 0",
		}
		if len(got) != len(want) {
			t.Fatalf("%d-byte segments: got %q, want %q", size, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%d-byte segments: message %d = %q, want %q", size, i, got[i], want[i])
			}
		}
	}
}

func TestHTTP2Detect(t *testing.T) {
	c := grpcConversation(t)
	upgrade := []byte("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
	cases := []struct {
		name string
		p    Probe
		want Verdict
	}{
		{"preface", Probe{Client: c.client.Bytes()}, Yes},
		{"partial preface", Probe{Client: []byte("PRI * HT")}, NeedMore},
		{"server settings first", Probe{Server: c.server.Bytes()}, Yes},
		{"h2c upgrade request, no answer yet", Probe{Client: upgrade}, NeedMore},
		{"h2c upgrade accepted", Probe{Client: upgrade, Server: []byte("HTTP/1.1 101 Switching Protocols\r\n\r\n")}, Yes},
		{"h2c upgrade refused", Probe{Client: upgrade, Server: []byte("HTTP/1.1 200 OK\r\n\r\n")}, No},
		{"plain http/1.1", Probe{Client: []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")}, No},
		{"tls", Probe{Client: []byte{0x16, 3, 1, 0, 100, 1}}, No},
		{"frames midstream", Probe{Server: c.server.Bytes()[9:], Midstream: true}, Maybe},
	}
	for _, tc := range cases {
		tc.p.Transport = TCP
		if got := (HTTP2{}).Detect(&tc.p); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
