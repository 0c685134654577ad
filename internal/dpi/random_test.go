package dpi

import (
	"math/rand/v2"
	"testing"
)

// TestRandomBytesStayUnknown: real captures are full of traffic no detector knows (encrypted
// or proprietary). Flows of random bytes, TCP and UDP, from the start and mid-stream, must come
// out unknown; the bound is 1 in 2000 (weak signatures — an opcode byte or two — used to name
// more than 1 in 100 random UDP flows OpenVPN).
func TestRandomBytesStayUnknown(t *testing.T) {
	e, err := New(Config{Protocols: DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	const flows = 20000
	rng := rand.New(rand.NewPCG(1, 2))
	named := map[string]int{}
	total := 0
	for i := 0; i < flows; i++ {
		tr := TCP
		if i%2 == 1 {
			tr = UDP
		}
		f := e.NewFlow(FlowInfo{Transport: tr, ServerPort: uint16(1024 + rng.IntN(60000)), Midstream: i%4 < 2}, nil)
		for j := 0; j < 4; j++ {
			b := make([]byte, 1+rng.IntN(1400))
			for k := range b {
				b[k] = byte(rng.Uint32())
			}
			f.Feed(Direction(j%2), b)
		}
		f.Close()
		if p := f.Protocol(); p != Unknown {
			named[p]++
			total++
		}
	}
	if total > flows/2000 {
		t.Errorf("%d of %d random flows were given a protocol: %v", total, flows, named)
	}
	t.Logf("random flows named: %v", named)
}

// TestRandomTextStaysUnknown: line-based text of no known protocol (words, numbers, "OK", "+",
// "200", status-like lines from both sides; not "220", which is the SMTP/FTP greeting) must not be named SMTP, FTP, POP3, IMAP or Redis
// because a line happens to start like theirs. Bound: 1 in 2000 flows.
func TestRandomTextStaysUnknown(t *testing.T) {
	e, err := New(Config{Protocols: DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	words := []string{"hello", "world", "ok", "GET", "data", "user", "id", "value", "200", "OK", "+", "-",
		"ping", "PONG", "status", "list", "{\"a\":1}", "<xml>", "1", "42", "foo", "bar", "key", "set"}
	const flows = 20000
	rng := rand.New(rand.NewPCG(3, 4))
	named := map[string]int{}
	total := 0
	for i := 0; i < flows; i++ {
		tr := TCP
		if i%2 == 1 {
			tr = UDP
		}
		f := e.NewFlow(FlowInfo{Transport: tr, ServerPort: uint16(1024 + rng.IntN(60000)), Midstream: i%4 < 2}, nil)
		for j := 0; j < 4; j++ {
			var b []byte
			for l := 0; l < 1+rng.IntN(3); l++ {
				for w := 0; w < 1+rng.IntN(6); w++ {
					if w > 0 {
						b = append(b, ' ')
					}
					b = append(b, words[rng.IntN(len(words))]...)
				}
				if rng.IntN(2) == 0 {
					b = append(b, '\r')
				}
				b = append(b, '\n')
			}
			f.Feed(Direction(j%2), b)
		}
		f.Close()
		if p := f.Protocol(); p != Unknown {
			named[p]++
			total++
		}
	}
	if total > flows/2000 {
		t.Errorf("%d of %d random text flows were given a protocol: %v", total, flows, named)
	}
	t.Logf("random text flows named: %v", named)
}
