package waf

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/internal/threat"
)

// crsCase is one stage of the CRS regression suite, as a raw request.
type crsCase struct {
	family string // "930"...
	name   string // file #test_id
	raw    string
	attack bool // expects a paranoia-level-1 rule of its own family
}

// crsSuite reads the go-ftw tests of the request rule families (911..944): attacks are stages
// expecting a PL1 rule of the file's family; negatives are the CRS's false-positive guards (only
// no_expect_ids, described as a false positive / benign / legit request), as in TestCRSHeldOut.
func crsSuite(t *testing.T) []crsCase {
	dir := crsDir(t)
	pl1 := pl1Rules(t, dir)
	files, _ := filepath.Glob(filepath.Join(dir, "tests", "REQUEST-9*", "*.yaml"))
	var out []crsCase
	for _, f := range files {
		fam := strings.TrimPrefix(filepath.Base(filepath.Dir(f)), "REQUEST-")[:3]
		if fam == "949" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var ff ftwFile
		if err := yaml.Unmarshal(b, &ff); err != nil {
			continue
		}
		for _, tc := range ff.Tests {
			for _, st := range tc.Stages {
				in := st.Input
				if in.Encoded != "" || in.URI == "" {
					continue
				}
				attack := false
				for _, id := range st.Output.Log.Expect {
					if pl1[id] && strings.HasPrefix(strconv.Itoa(id), fam) {
						attack = true
					}
				}
				d := strings.ToLower(tc.Desc)
				negative := len(st.Output.Log.Expect) == 0 && len(st.Output.Log.NoExpect) > 0 &&
					(strings.Contains(d, "false positive") || strings.Contains(d, "fp") || strings.Contains(d, "benign") || strings.Contains(d, "legit"))
				if !attack && !negative {
					continue
				}
				out = append(out, crsCase{fam, fmt.Sprintf("%s #%v", filepath.Base(f), tc.TestID),
					ftwRaw(in.Method, in.URI, in.Version, in.Headers, in.Data), attack})
			}
		}
	}
	return out
}

// TestCRSSuiteWAF runs the CRS's own regression suite through the waf sensor: the tuning in New
// must keep the CRS detecting its PL1 attack tests (≥ 95 %), alone and with the built-in
// detectors a group with the sensor also runs.
func TestCRSSuiteWAF(t *testing.T) {
	if testing.Short() {
		t.Skip("reads the CRS module's test suite")
	}
	cases := crsSuite(t)
	w := mustWAF(t, Config{})
	builtin, err := threat.NewHTTP(threat.HTTPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	type tally struct{ attacks, waf, combined, negatives, fps int }
	per := map[string]*tally{}
	var total tally
	for _, c := range cases {
		r, err := threat.ParseHTTPRequest([]byte(c.raw))
		if err != nil {
			continue
		}
		tl := per[c.family]
		if tl == nil {
			tl = &tally{}
			per[c.family] = tl
		}
		hit := len(w.Inspect(&r, nil)) > 0
		if c.attack {
			tl.attacks++
			if hit {
				tl.waf++
			} else {
				t.Logf("waf missed %s: %.160q", c.name, c.raw)
			}
			if hit || len(builtin.Inspect(&r, nil)) > 0 {
				tl.combined++
			}
		} else {
			tl.negatives++
			if hit {
				tl.fps++
				_, rules := w.attackRules(t, []byte(c.raw))
				t.Logf("waf flagged FP guard %s: %v", c.name, rules)
			}
		}
	}
	fams := make([]string, 0, len(per))
	for k := range per {
		fams = append(fams, k)
	}
	sort.Strings(fams)
	for _, k := range fams {
		tl := per[k]
		fmt.Printf("CRS suite %s, waf sensor PL1: %d/%d PL1 attacks detected (with built-in %d), %d/%d FP-guard tests flagged\n",
			k, tl.waf, tl.attacks, tl.combined, tl.fps, tl.negatives)
		total.attacks += tl.attacks
		total.waf += tl.waf
		total.combined += tl.combined
		total.negatives += tl.negatives
		total.fps += tl.fps
	}
	pct := func(n, d int) float64 { return 100 * float64(n) / float64(max(d, 1)) }
	fmt.Printf("CRS suite total, waf sensor PL1: %d/%d PL1 attacks detected (%.1f%%), with built-in %d/%d (%.1f%%); %d/%d FP-guard tests flagged (%.1f%%)\n",
		total.waf, total.attacks, pct(total.waf, total.attacks), total.combined, total.attacks, pct(total.combined, total.attacks),
		total.fps, total.negatives, pct(total.fps, total.negatives))
	if p := pct(total.waf, total.attacks); p < 95 {
		t.Errorf("waf sensor detects %.1f%% of the CRS suite's PL1 attack tests, below the 95%% floor", p)
	}
}
