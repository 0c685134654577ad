package waf

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/threat/corpus"
)

// attackRules lists the CRS attack rules (not bookkeeping) that matched in the last evaluation
// of r, as "id VARIABLE:key" strings.
func (w *WAF) attackRules(t testing.TB, raw []byte) (flagged bool, rules []string) {
	r := parse(t, string(raw))
	tx := w.waf.NewTransaction()
	defer func() { _ = tx.Close() }()
	it := w.evaluate(tx, r)
	for _, m := range tx.MatchedRules() {
		id := m.Rule().ID()
		if m.Message() == "" || (id < 911000 && (id >= 900000 || !m.Disruptive())) || (id >= 949000 && id < 950000) || id >= 980000 {
			continue
		}
		loc := ""
		for _, md := range m.MatchedDatas() {
			loc = md.Variable().Name()
			if md.Key() != "" {
				loc += ":" + md.Key()
			}
			break
		}
		rules = append(rules, strconv.Itoa(id)+" "+loc)
	}
	return it != nil, rules
}

// TestFPBreakdown lists, per CRS rule, the benign requests it matched (flagged or not): the
// evidence behind every tuning decision in New. Run with -v.
func TestFPBreakdown(t *testing.T) {
	if testing.Short() {
		t.Skip("diagnostic")
	}
	w := mustWAF(t, Config{})
	for _, name := range []string{"benign.txt", "benign_dev.txt"} {
		reqs, err := corpus.Load(filepath.Join("..", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		perRule := map[string]int{}
		flagged := 0
		for _, b := range reqs {
			fl, rules := w.attackRules(t, b.Raw)
			if fl {
				flagged++
			}
			if len(rules) > 0 {
				t.Logf("%s:%d flagged=%v %s", name, b.Line, fl, strings.Join(rules, ", "))
			}
			seen := map[string]bool{}
			for _, r := range rules {
				id := strings.Fields(r)[0]
				if !seen[id] && fl {
					perRule[id]++
					seen[id] = true
				}
			}
		}
		ids := make([]string, 0, len(perRule))
		for id := range perRule {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return perRule[ids[i]] > perRule[ids[j]] })
		var sb strings.Builder
		for _, id := range ids {
			fmt.Fprintf(&sb, " %s:%d", id, perRule[id])
		}
		fmt.Printf("waf FP breakdown %s: %d/%d flagged; flagged requests per rule:%s\n", name, flagged, len(reqs), sb.String())
	}
}
