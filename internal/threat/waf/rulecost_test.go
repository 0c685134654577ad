package waf

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/threat"
	"github.com/meshguard/meshguard/internal/threat/corpus"
)

// TestRuleRemovalCost measures what removing single CRS rules would buy and cost: benign
// requests flagged vs attacks and CRS-suite tests still detected (alone and with the built-in
// detectors). Opt-in: WAF_RULE_COST="932235 942100" go test -run TestRuleRemovalCost -v
func TestRuleRemovalCost(t *testing.T) {
	ids := strings.Fields(os.Getenv("WAF_RULE_COST"))
	if len(ids) == 0 {
		t.Skip("set WAF_RULE_COST to the rule ids to measure")
	}
	builtin, _ := threat.NewHTTP(threat.HTTPConfig{})
	type req struct {
		r    threat.HTTPRequest
		kind int // 0 attack.txt 1 benign 2 dev 3 crs attack 4 crs neg
		bi   bool
	}
	var reqs []req
	for k, f := range []string{"attacks.txt", "benign.txt", "benign_dev.txt"} {
		rs, _ := corpus.Load(filepath.Join("..", "testdata", f))
		for _, b := range rs {
			r := parse(t, string(b.Raw))
			reqs = append(reqs, req{*r, k, len(builtin.Inspect(r, nil)) > 0})
		}
	}
	for _, c := range crsSuite(t) {
		r, err := threat.ParseHTTPRequest([]byte(c.raw))
		if err != nil {
			continue
		}
		k := 4
		if c.attack {
			k = 3
		}
		reqs = append(reqs, req{r, k, len(builtin.Inspect(&r, nil)) > 0})
	}
	for _, id := range append([]string{""}, ids...) {
		extra := ""
		if id != "" {
			extra = "SecRuleRemoveById " + id
		}
		w, err := newWAF(Config{}, extra)
		if err != nil {
			t.Fatal(err)
		}
		var n, comb [5]int
		for i := range reqs {
			h := len(w.Inspect(&reqs[i].r, nil)) > 0
			if h {
				n[reqs[i].kind]++
			}
			if h || reqs[i].bi {
				comb[reqs[i].kind]++
			}
		}
		fmt.Printf("without %-7s attacks.txt %d (with built-in %d), benign.txt %d, benign_dev.txt %d flagged; CRS suite %d (with built-in %d) detected, %d FP guards flagged\n",
			id, n[0], comb[0], n[1], n[2], n[3], comb[3], n[4])
	}
}
