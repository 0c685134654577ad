package threat

import "testing"

// BenchmarkHTTPInspectPath is a clean GET whose path needs percent-decoding (decoded once for
// the restricted-file, value and SQL-fragment checks).
func BenchmarkHTTPInspectPath(b *testing.B) {
	h, err := NewHTTP(HTTPConfig{})
	if err != nil {
		b.Fatal(err)
	}
	r := &HTTPRequest{Method: []byte("GET"), Proto: []byte("HTTP/1.1"),
		URI: []byte("/docs/%E6%96%87%E6%A1%A3/annual%20report%202024%20%28final%29.pdf?lang=de&page=3"),
		Headers: []Header{{Name: []byte("Host"), Value: []byte("shop.example.org")},
			{Name: []byte("User-Agent"), Value: []byte("Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0")}}}
	if f := h.Inspect(r, nil); len(f) != 0 {
		b.Fatalf("clean request flagged: %+v", f)
	}
	b.ReportAllocs()
	for b.Loop() {
		h.Inspect(r, nil)
	}
}
