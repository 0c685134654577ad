package waf

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/threat"
)

// benchRequests: a GET, a 1 KB form POST and a 100 KB JSON body, all benign (the common case).
func benchRequests() []struct {
	name string
	raw  []byte
} {
	get := "GET /api/v1/products?category=shoes&size=42&sort=price&page=2 HTTP/1.1\r\nHost: shop.internal\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0\r\nAccept: application/json\r\nCookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\n\r\n"
	form := url.Values{}
	for i := 0; len(form.Encode()) < 1024; i++ {
		form.Set("field"+strconv.Itoa(i), "O'Brien & Sons, 42 Main St. -- order #"+strconv.Itoa(i))
	}
	fb := form.Encode()
	post := fmt.Sprintf("POST /checkout HTTP/1.1\r\nHost: shop.internal\r\nUser-Agent: curl/8\r\nAccept: */*\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", len(fb), fb)
	type item struct {
		ID    int      `json:"id"`
		Name  string   `json:"name"`
		Notes string   `json:"notes"`
		Tags  []string `json:"tags"`
	}
	var items []item
	// About 100 KB of valid JSON (~1100 objects).
	for i := 0; i < 1100; i++ {
		items = append(items, item{i, "Item " + strconv.Itoa(i), "It's a \"great\" product; ships in 2-3 days (see FAQ)", []string{"a", "b"}})
	}
	js, _ := json.Marshal(items)
	body := fmt.Sprintf("POST /api/v1/import HTTP/1.1\r\nHost: shop.internal\r\nUser-Agent: curl/8\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(js), js)
	return []struct {
		name string
		raw  []byte
	}{{"GET", []byte(get)}, {"Form1KB", []byte(post)}, {"JSON100KB", []byte(body)}}
}

// cpuTime is the process's user+system CPU time: on a shared, overloaded machine wall time per
// op mostly measures waiting for a core, CPU time per op what a request costs.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkRequest compares, per request: parsing only (no detectors), the built-in detectors,
// and the WAF sensor (CRS PL1) on top of them.
func BenchmarkRequest(b *testing.B) {
	builtin, err := threat.NewHTTP(threat.HTTPConfig{MaxBody: 128 << 10})
	if err != nil {
		b.Fatal(err)
	}
	w := mustWAF(b, Config{})
	for _, r := range benchRequests() {
		b.Run(r.name+"/none", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(r.raw)))
			start := cpuTime()
			defer reportCPU(b, start)
			for b.Loop() {
				req, _ := threat.ParseHTTPRequest(r.raw)
				_ = req
			}
		})
		b.Run(r.name+"/builtin", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(r.raw)))
			var f []threat.Finding
			start := cpuTime()
			defer reportCPU(b, start)
			for b.Loop() {
				req, _ := threat.ParseHTTPRequest(r.raw)
				if f = builtin.Inspect(&req, f[:0]); len(f) > 0 {
					b.Fatalf("benign request flagged: %v", f)
				}
			}
		})
		b.Run(r.name+"/waf", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(r.raw)))
			var f []threat.Finding
			start := cpuTime()
			defer reportCPU(b, start)
			for b.Loop() {
				req, _ := threat.ParseHTTPRequest(r.raw)
				f = builtin.Inspect(&req, f[:0])
				f = w.Inspect(&req, f)
				if len(f) > 0 {
					b.Fatalf("benign request flagged: %v", f)
				}
			}
		})
	}
}
