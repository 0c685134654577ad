package threat

import (
	"bytes"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

func FuzzHTTPDetectors(f *testing.F) {
	for _, a := range loadCorpus(f, "attacks.txt")[:40] {
		f.Add(a.Raw)
	}
	f.Add([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\nx"))
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=\"\r\n\r\n--\r\n"))
	f.Add([]byte("GET /?a=%u%%%c0%ae${${${${:-j}}}} HTTP/1.1\r\nCookie: ;=;\"\r\n\r\n"))
	h, err := NewHTTP(HTTPConfig{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := ParseHTTPRequest(raw)
		if err != nil {
			return
		}
		for _, fd := range h.Inspect(&r, nil) {
			if len(fd.Evidence) > MaxEvidence {
				t.Fatalf("evidence of %d bytes", len(fd.Evidence))
			}
		}
	})
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("%25%32%65%u002e%c0%ae+%"), true)
	f.Add([]byte(`{"a":"\u00e9\"","b":["x\\",{"c":1}]`), false)
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"x\"; filename=\"../a\"\r\n\r\nv\r\n--b--"), false)
	f.Fuzz(func(t *testing.T, b []byte, plus bool) {
		s := &scratch{}
		d := fullDecode(s, b, plus)
		if len(d) > len(b) {
			t.Fatalf("decoding grew %d -> %d bytes", len(b), len(d))
		}
		walkPairs(b, func(n, v []byte) {})
		walkCookies(b, func(n, v []byte) {})
		walkJSON(s, b, func(k, v []byte, isKey bool) {
			if len(v) > len(b) {
				t.Fatal("json string longer than the input")
			}
		})
		walkMultipart(b, []byte("b"), func(p *multipartPart) {})
		_, _ = findJNDI(s, b)
		_ = dechunk(nil, b, 1024)
		_ = checkChunks(b, plus)
		_ = InspectSQL(b, false, nil)
	})
}

func FuzzDNSTunnel(f *testing.F) {
	f.Add([]byte("www.google.com."), "A")
	f.Add([]byte("ztu5aA0123456789\xbc\xbd.t.tunnel.test"), "NULL")
	f.Add([]byte("...."), "AXFR")
	f.Add(bytes.Repeat([]byte("a."), 200), "TXT")
	clk := clockwork.NewFakeClock()
	d, err := NewDNS(DNSConfig{Clock: clk, MaxTracked: 64})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name []byte, qtype string) {
		d.Observe(DNSQuery{Client: string(name[:min(len(name), 3)]), Name: name, QType: qtype}, nil)
		clk.Advance(time.Second)
		if d.Tracked() > 64 {
			t.Fatalf("tracked %d > 64", d.Tracked())
		}
	})
}
