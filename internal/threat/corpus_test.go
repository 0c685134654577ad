package threat

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
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
	// benign_dev.txt: a developer-facing site (prose about SQL/shell/Java/PHP, code snippets and
	// stack traces in JSON, Windows paths, uploads), kept apart because the waf sensor flags it.
	dev := loadCorpus(t, "benign_dev.txt")
	devFPs := 0
	for _, b := range dev {
		r, err := ParseHTTPRequest(b.Raw)
		if err != nil {
			t.Fatalf("benign_dev.txt:%d: %v", b.Line, err)
		}
		if f := h.Inspect(&r, nil); len(f) > 0 {
			devFPs++
			t.Logf("false positive benign_dev.txt:%d: %v", b.Line, f[0])
		}
	}
	dr := 100 * float64(detected) / float64(len(attacks))
	fpr := 100 * float64(fps) / float64(len(benign))
	devFPR := 100 * float64(devFPs) / float64(max(len(dev), 1))
	fmt.Printf("built-in detectors: detected %d/%d attacks (%.1f%%), false positives %d/%d (%.2f%%), developer-site false positives %d/%d (%.2f%%)\n",
		detected, len(attacks), dr, fps, len(benign), fpr, devFPs, len(dev), devFPR)
	for l, n := range byLabel {
		fmt.Printf("  %-18s %d detected, %d missed\n", l, n, missLabel[l])
	}
	if devFPR > 1 {
		t.Errorf("developer-site false-positive rate %.2f%% above the 1%% ceiling", devFPR)
	}
	if dr < 70 {
		t.Errorf("detection rate %.1f%% below the 70%% floor", dr)
	}
	if fpr > 1 {
		t.Errorf("false-positive rate %.2f%% above the 1%% ceiling", fpr)
	}
}

// TestHeldOutPayloads measures the built-in detectors on testdata/heldout_attacks.txt, payloads
// from public lists written down before tuning: each is sent as a query parameter, a form field
// and a JSON string value. It asserts the issue-7 floor (>= 70 %) on the query placement.
func TestHeldOutPayloads(t *testing.T) {
	h, err := NewHTTP(HTTPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join("testdata", "heldout_attacks.txt"))
	if err != nil {
		t.Fatal(err)
	}
	places := []string{"query", "form", "json"}
	total, hits := 0, map[string]int{}
	perLabel, perLabelHit := map[string]int{}, map[string]int{}
	for _, line := range strings.Split(string(data), "\n") {
		label, payload, ok := strings.Cut(line, "\t")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		total++
		perLabel[label]++
		for _, p := range places {
			var raw string
			switch p {
			case "query":
				raw = "GET /search?q=" + url.QueryEscape(payload) + "&page=1 HTTP/1.1\r\nHost: app\r\n\r\n"
			case "form":
				b := "name=alice&comment=" + url.QueryEscape(payload)
				raw = fmt.Sprintf("POST /submit HTTP/1.1\r\nHost: app\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
			case "json":
				js, _ := json.Marshal(map[string]string{"comment": payload})
				raw = fmt.Sprintf("POST /api/comments HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(js), js)
			}
			r, err := ParseHTTPRequest([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			if len(h.Inspect(&r, nil)) > 0 {
				hits[p]++
				if p == "query" {
					perLabelHit[label]++
				}
			} else if p == "query" {
				t.Logf("missed (%s) %q", label, payload)
			}
		}
	}
	labels := make([]string, 0, len(perLabel))
	for l := range perLabel {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	for _, l := range labels {
		fmt.Printf("  held-out %-10s %d/%d\n", l, perLabelHit[l], perLabel[l])
	}
	for _, p := range places {
		fmt.Printf("held-out payloads as %s: detected %d/%d (%.1f%%)\n", p, hits[p], total, 100*float64(hits[p])/float64(total))
	}
	if 100*hits["query"] < 70*total {
		t.Errorf("held-out query detection %d/%d below the 70%% floor", hits["query"], total)
	}
}
