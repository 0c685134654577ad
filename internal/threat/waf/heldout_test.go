package waf

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/threat"
)

// The CRS's own regression tests (go-ftw YAML, shipped in the coraza-coreruleset module) are a
// corpus this repository did not write: tests that expect a paranoia-level-1 attack rule of the
// LFI/RCE/XSS/SQLi/Java families are attacks, and tests that only list rules that must NOT fire
// are the CRS's false-positive regressions. TestCRSHeldOut measures the built-in detectors on
// them (the CRS itself passes its own tests by construction).

type ftwFile struct {
	Tests []struct {
		TestID any    `json:"test_id"`
		Desc   string `json:"desc"`
		Stages []struct {
			Input struct {
				Method  string            `json:"method"`
				URI     string            `json:"uri"`
				Version string            `json:"version"`
				Headers map[string]string `json:"headers"`
				Data    string            `json:"data"`
				Encoded string            `json:"encoded_request"`
			} `json:"input"`
			Output struct {
				Log struct {
					Expect   []int `json:"expect_ids"`
					NoExpect []int `json:"no_expect_ids"`
				} `json:"log"`
			} `json:"output"`
		} `json:"stages"`
	} `json:"tests"`
}

func crsDir(t *testing.T) string {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/corazawaf/coraza-coreruleset/v4").Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		t.Skipf("coraza-coreruleset module not in the module cache: %v", err)
	}
	return dir
}

// pl1Rules returns the ids of paranoia-level-1 rules in the CRS rule files.
func pl1Rules(t *testing.T, dir string) map[int]bool {
	files, _ := filepath.Glob(filepath.Join(dir, "rules", "@owasp_crs", "REQUEST-9*.conf"))
	idRe := regexp.MustCompile(`id:(\d+)`)
	pl1 := map[int]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, rule := range strings.Split(string(b), "\nSecRule") {
			m := idRe.FindStringSubmatch(rule)
			if m != nil && strings.Contains(rule, "paranoia-level/1'") {
				id, _ := strconv.Atoi(m[1])
				pl1[id] = true
			}
		}
	}
	return pl1
}

func TestCRSHeldOut(t *testing.T) {
	if testing.Short() {
		t.Skip("reads the CRS module's test suite")
	}
	h, err := threat.NewHTTP(threat.HTTPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	type tally struct{ attacks, detected, negatives, fps int }
	per := map[string]*tally{}
	for _, fam := range []string{"930", "932", "933", "934", "941", "942", "944"} {
		per[fam] = &tally{}
	}
	for _, c := range crsSuite(t) {
		tl := per[c.family]
		if tl == nil {
			continue
		}
		r, err := threat.ParseHTTPRequest([]byte(c.raw))
		if err != nil {
			continue
		}
		found := h.Inspect(&r, nil)
		if c.attack {
			tl.attacks++
			if len(found) > 0 {
				tl.detected++
			} else {
				t.Logf("missed %s: %.160q", c.name, c.raw)
			}
		} else {
			tl.negatives++
			if len(found) > 0 {
				tl.fps++
				t.Logf("false positive %s: %v", c.name, found[0])
			}
		}
	}
	var total tally
	keys := make([]string, 0, len(per))
	for k := range per {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		tl := per[k]
		fmt.Printf("CRS %s tests, built-in detectors: %d/%d PL1 attacks detected, %d/%d FP-regression tests flagged\n",
			k, tl.detected, tl.attacks, tl.fps, tl.negatives)
		total.attacks += tl.attacks
		total.detected += tl.detected
		total.negatives += tl.negatives
		total.fps += tl.fps
	}
	fmt.Printf("CRS held-out total, built-in detectors: %d/%d PL1 attacks detected (%.1f%%), %d/%d FP-regression tests flagged\n",
		total.detected, total.attacks, 100*float64(total.detected)/float64(max(total.attacks, 1)), total.fps, total.negatives)
}

func ftwRaw(method, uri, version string, headers map[string]string, data string) string {
	if method == "" {
		method = "GET"
	}
	if version == "" {
		version = "HTTP/1.1"
	}
	var b strings.Builder
	b.WriteString(method + " " + uri + " " + version + "\r\n")
	hasCT := false
	for k, v := range headers {
		if strings.EqualFold(k, "content-type") {
			hasCT = true
		}
		if strings.EqualFold(k, "content-length") {
			continue
		}
		b.WriteString(k + ": " + v + "\r\n")
	}
	if data != "" {
		if !hasCT {
			b.WriteString("Content-Type: application/x-www-form-urlencoded\r\n")
		}
		b.WriteString("Content-Length: " + strconv.Itoa(len(data)) + "\r\n")
	}
	b.WriteString("\r\n" + data)
	return b.String()
}
