package capture

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestRingMatchesModel writes random chunks through growth and wrap-around and checks the
// ring always holds exactly the newest whole chunks that fit, bytes intact and in order.
func TestRingMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, limit := range []int{1, 100, 5000, 70000} {
		var r ring
		var written [][]byte
		granted := 0
		grow := func(want int) int { granted += want; return want }
		for i := range 3000 {
			p := make([]byte, rng.IntN(3000)+1)
			for j := range p {
				p[j] = byte(i + j)
			}
			r.put(int64(i), i%3 == 0, p, limit, grow)
			if len(p) > limit {
				p = p[len(p)-limit:]
			}
			written = append(written, p)
			// Model: newest chunks whose total fits in the buffer.
			var want [][]byte
			total := 0
			for k := len(written) - 1; k >= 0 && total+len(written[k]) <= len(r.buf); k-- {
				total += len(written[k])
				want = append([][]byte{written[k]}, want...)
			}
			got := r.snapshot()
			if len(got) != len(want) {
				t.Fatalf("limit %d write %d: %d chunks, want %d", limit, i, len(got), len(want))
			}
			for k := range got {
				if !bytes.Equal(got[k].Data, want[k]) {
					t.Fatalf("limit %d write %d: chunk %d differs", limit, i, k)
				}
			}
		}
		if len(r.buf) > limit || granted != len(r.buf) {
			t.Fatalf("limit %d: buffer %d, granted %d", limit, len(r.buf), granted)
		}
	}
}
