package dpi

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// TestJA3JA4KnownClient checks the fingerprints against a published Chrome 143 hello
// (browserleaks.com output: ja3_text / ja4_ro and their hashes).
func TestJA3JA4KnownClient(t *testing.T) {
	h := tlsHello{
		version:  0x0303,
		ciphers:  []uint16{4865, 4866, 4867, 49195, 49199, 49196, 49200, 52393, 52392, 49171, 49172, 156, 157, 47, 53},
		exts:     []uint16{45, 51, 16, 65037, 23, 17613, 0, 11, 10, 43, 65281, 35, 18, 5, 13, 27},
		groups:   []uint16{4588, 29, 23, 24},
		points:   []uint8{0},
		sigAlgs:  []uint16{0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601},
		versions: []uint16{0x0304, 0x0303},
		sni:      []byte("tls.browserleaks.com"),
		alpn:     [][]byte{[]byte("h2"), []byte("http/1.1")},
	}
	if got, want := ja3(&h), "98487aa16281980e7d1120d399efb6a4"; got != want {
		t.Errorf("ja3 %s, want %s", got, want)
	}
	if got, want := ja4(&h, 't'), "t13d1516h2_8daaf6152771_d8a2da3f94cd"; got != want {
		t.Errorf("ja4 %s, want %s", got, want)
	}
	// GREASE values do not count and no ALPN / no SNI are spelled out.
	h.ciphers = append([]uint16{0x0a0a}, h.ciphers...)
	h.exts = append([]uint16{0x1a1a}, h.exts...)
	h.alpn, h.sni = nil, nil
	if got := ja4(&h, 'q'); !strings.HasPrefix(got, "q13i151600_8daaf6152771_") {
		t.Errorf("ja4 with GREASE, no SNI/ALPN: %s", got)
	}
}

// recordingConn captures what a TLS client writes and fails its reads.
type recordingConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *recordingConn) Write(b []byte) (int, error)      { return c.buf.Write(b) }
func (c *recordingConn) Read([]byte) (int, error)         { return 0, errors.New("no server") }
func (c *recordingConn) Close() error                     { return nil }
func (c *recordingConn) SetDeadline(time.Time) error      { return nil }
func (c *recordingConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recordingConn) SetWriteDeadline(time.Time) error { return nil }

func goClientHello(t testing.TB) []byte {
	t.Helper()
	c := &recordingConn{}
	_ = tls.Client(c, &tls.Config{ServerName: "api.meshguard.test", NextProtos: []string{"h2", "http/1.1"}}).Handshake()
	if c.buf.Len() == 0 {
		t.Fatal("crypto/tls wrote no ClientHello")
	}
	return c.buf.Bytes()
}

func TestTLSClientHello(t *testing.T) {
	hello := goClientHello(t)
	var msgs []string
	for _, size := range []int{len(hello), 1, 5, 13} {
		p := TLS{}.NewParser()
		for b := hello; len(b) > 0; {
			n := min(size, len(b))
			_ = p.Feed(ClientToServer, b[:n], func(m *Message) {
				msgs = append(msgs, m.Type+" "+string(m.Get(AttrVersion))+" "+string(m.Get(AttrSNI))+" "+
					string(m.Get(AttrALPN))+" "+string(m.Get(AttrJA4))[:10])
			})
			b = b[n:]
		}
	}
	want := "client_hello TLS 1.3 api.meshguard.test h2 t13d"
	if len(msgs) != 4 {
		t.Fatalf("got %d hellos, want 4: %q", len(msgs), msgs)
	}
	for _, m := range msgs {
		if !strings.HasPrefix(m, want) || m != msgs[0] {
			t.Errorf("hello %q, want prefix %q and the same at every segmentation", m, want)
		}
	}
}

func TestTLSDetect(t *testing.T) {
	hello := goClientHello(t)
	appData := []byte{23, 3, 3, 0, 2, 'h', 'i', 23, 3, 3, 0, 1, 'x'}
	cases := []struct {
		name string
		p    Probe
		want Verdict
	}{
		{"client hello", Probe{Transport: TCP, Client: hello}, Yes},
		{"first bytes", Probe{Transport: TCP, Client: hello[:3]}, NeedMore},
		{"http", Probe{Transport: TCP, Client: []byte("GET / HTTP/1.1\r\n")}, No},
		{"app data midstream", Probe{Transport: TCP, Client: appData, Midstream: true}, Maybe},
		{"app data from the start", Probe{Transport: TCP, Client: appData}, No},
		{"sslv2-compatible hello", Probe{Transport: TCP, Client: []byte{0x80, 0x2e, 1, 3, 1, 0, 0x15, 0, 0, 0, 0x10}}, Yes},
	}
	for _, c := range cases {
		if got := (TLS{}).Detect(&c.p); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
