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
