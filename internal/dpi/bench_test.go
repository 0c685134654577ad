package dpi

import (
	"testing"
)

// Benchmarks: detection + parsing throughput over the real captures, with the full registry
// (detection cost grows with it). Bytes are L7 payload bytes; b.SetBytes makes MB/s.
//
//	go test ./internal/dpi -run '^$' -bench 'Detect|Steady' -benchmem

func benchFlows(b *testing.B, flows []*capturedFlow) {
	e := fullEngine(b)
	total := 0
	for _, f := range flows {
		total += f.bytes()
	}
	b.SetBytes(int64(total))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, f := range flows {
			fl := e.NewFlow(FlowInfo{Transport: f.transport, ServerPort: f.serverPort}, nil)
			for _, s := range f.segs {
				fl.Feed(s.dir, s.data)
			}
			fl.Close()
		}
	}
}

func BenchmarkDetectParse(b *testing.B) {
	var mixed []*capturedFlow
	for _, proto := range []string{"http", "http2", "tls", "dns"} {
		flows := loadCaptures(b, proto)
		mixed = append(mixed, flows...)
		b.Run(proto, func(b *testing.B) { benchFlows(b, flows) })
	}
	b.Run("mixed", func(b *testing.B) { benchFlows(b, mixed) })
}

// BenchmarkSteady is the per-packet cost on a detected flow: the sidecar's hot path.
func BenchmarkSteady(b *testing.B) {
	e := fullEngine(b)
	b.Run("http1", func(b *testing.B) {
		req := []byte("GET /api/v1/orders?id=42 HTTP/1.1\r\nHost: orders.internal\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
		resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"id\":42,\"status\":\"placed\"}")
		fl := e.NewFlow(FlowInfo{Transport: TCP, ServerPort: 80}, nil)
		fl.Feed(ClientToServer, req)
		fl.Feed(ServerToClient, resp)
		b.SetBytes(int64(len(req) + len(resp)))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			fl.Feed(ClientToServer, req)
			fl.Feed(ServerToClient, resp)
		}
	})
	b.Run("dns", func(b *testing.B) {
		q, r := dnsPair(b)
		fl := e.NewFlow(FlowInfo{Transport: UDP, ServerPort: 53}, nil)
		fl.Feed(ClientToServer, q)
		fl.Feed(ServerToClient, r)
		b.SetBytes(int64(len(q) + len(r)))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			fl.Feed(ClientToServer, q)
			fl.Feed(ServerToClient, r)
		}
	})
}
