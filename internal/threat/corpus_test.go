package threat

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/meshguard/meshguard/internal/threat/corpus"
)

func loadCorpus(t testing.TB, name string) []corpus.Request {
	t.Helper()
	reqs, err := corpus.Load(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return reqs
}

// TestCorpusRates measures the built-in detectors on the attack and benign corpora and asserts
// the floors from issue 7 (attacks detected >= 70 %, false positives <= 1 %).
func TestCorpusRates(t *testing.T) {
	h, err := NewHTTP(HTTPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	attacks, benign := loadCorpus(t, "attacks.txt"), loadCorpus(t, "benign.txt")
	if len(attacks) < 150 || len(benign) < 300 {
		t.Fatalf("corpora too small: %d attacks, %d benign", len(attacks), len(benign))
	}
	detected, byLabel, missLabel := 0, map[string]int{}, map[string]int{}
	for _, a := range attacks {
		r, err := ParseHTTPRequest(a.Raw)
		if err != nil {
			t.Fatalf("attacks.txt:%d: %v", a.Line, err)
		}
		f := h.Inspect(&r, nil)
		if len(f) > 0 {
			detected++
			byLabel[a.Label]++
		} else {
			missLabel[a.Label]++
			t.Logf("missed attacks.txt:%d (%s): %.120q", a.Line, a.Label, a.Raw)
		}
	}
	fps := 0
	for _, b := range benign {
		r, err := ParseHTTPRequest(b.Raw)
		if err != nil {
			t.Fatalf("benign.txt:%d: %v", b.Line, err)
		}
		if f := h.Inspect(&r, nil); len(f) > 0 {
			fps++
			t.Logf("false positive benign.txt:%d: %v", b.Line, f[0])
		}
	}
	dr := 100 * float64(detected) / float64(len(attacks))
	fpr := 100 * float64(fps) / float64(len(benign))
	fmt.Printf("built-in detectors: detected %d/%d attacks (%.1f%%), false positives %d/%d (%.2f%%)\n",
		detected, len(attacks), dr, fps, len(benign), fpr)
	for l, n := range byLabel {
		fmt.Printf("  %-18s %d detected, %d missed\n", l, n, missLabel[l])
	}
	if dr < 70 {
		t.Errorf("detection rate %.1f%% below the 70%% floor", dr)
	}
	if fpr > 1 {
		t.Errorf("false-positive rate %.2f%% above the 1%% ceiling", fpr)
	}
}
