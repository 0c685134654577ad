package waf

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/threat"
	"github.com/meshguard/meshguard/internal/threat/corpus"
)

func mustWAF(t testing.TB, cfg Config) *WAF {
	t.Helper()
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func parse(t testing.TB, raw string) *threat.HTTPRequest {
	t.Helper()
	r, err := threat.ParseHTTPRequest([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return &r
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{{ParanoiaLevel: 5}, {AnomalyThreshold: -1}, {BodyLimit: -1}, {Action: "drop"}} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted an invalid config", c)
		}
	}
	c := FromPolicy(&policy.WAFSensor{ParanoiaLevel: 2, Action: policy.SensorBlock}, nil)
	if c.ParanoiaLevel != 2 || c.Action != policy.SensorBlock || c.Key() != "pl2/t5/b131072/a256" {
		t.Fatalf("FromPolicy = %+v key %s", c, c.Key())
	}
}

func TestSQLiBlockedWithRuleID(t *testing.T) {
	w := mustWAF(t, Config{})
	f := w.Inspect(parse(t, "GET /search?q=1%27%20UNION%20SELECT%20password%20FROM%20users-- HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n"), nil)
	if len(f) != 1 || f[0].Detector != threat.WAFAnomaly || f[0].RuleID < 942000 || f[0].RuleID >= 943000 {
		t.Fatalf("want one waf finding from a 942xxx SQLi rule, got %v", f)
	}
	if len(f[0].Evidence) == 0 || f[0].Location == "" {
		t.Fatalf("finding lacks evidence/location: %v", f[0])
	}
	// JSON body attacks are seen through the JSON body processor.
	f = w.Inspect(parse(t, "POST /api HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: 44\r\n\r\n{\"name\":\"<script>alert(document.cookie)</script>\"}"), nil)
	if len(f) != 1 {
		t.Fatalf("JSON XSS not detected: %v", f)
	}
	// A REST DELETE with a JSON API shape is not an anomaly.
	f = w.Inspect(parse(t, "DELETE /api/v1/orders/42 HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n"), nil)
	if len(f) != 0 {
		t.Fatalf("DELETE flagged: %v", f)
	}
}

// TestCorpusRatesPL1 measures the CRS at paranoia level 1 on the shared corpora.
func TestCorpusRatesPL1(t *testing.T) {
	w := mustWAF(t, Config{ParanoiaLevel: 1})
	builtin, err := threat.NewHTTP(threat.HTTPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	load := func(name string) []corpus.Request {
		reqs, err := corpus.Load(filepath.Join("..", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return reqs
	}
	attacks, benign := load("attacks.txt"), load("benign.txt")
	// A group with the sensor gets the CRS on top of the always-on built-in detectors.
	detected, combined := 0, 0
	for _, a := range attacks {
		r := parse(t, string(a.Raw))
		crs := len(w.Inspect(r, nil)) > 0
		if crs {
			detected++
		} else {
			t.Logf("CRS missed attacks.txt:%d (%s)", a.Line, a.Label)
		}
		if crs || len(builtin.Inspect(r, nil)) > 0 {
			combined++
		}
	}
	fps, fpsCombined := 0, 0
	for _, b := range benign {
		r := parse(t, string(b.Raw))
		f := w.Inspect(r, nil)
		if len(f) > 0 {
			fps++
			t.Logf("false positive benign.txt:%d: %s", b.Line, f[0].Message)
		}
		if len(f) > 0 || len(builtin.Inspect(r, nil)) > 0 {
			fpsCombined++
		}
	}
	dev := load("benign_dev.txt")
	fpsDev := 0
	for _, b := range dev {
		if len(w.Inspect(parse(t, string(b.Raw)), nil)) > 0 {
			fpsDev++
		}
	}
	pct := func(n, d int) float64 { return 100 * float64(n) / float64(d) }
	fmt.Printf("waf sensor PL1 (CRS alone): false positives on benign_dev.txt %d/%d (%.2f%%)\n", fpsDev, len(dev), pct(fpsDev, len(dev)))
	fmt.Printf("waf sensor PL1 (CRS alone): detected %d/%d attacks (%.1f%%), false positives %d/%d (%.2f%%)\n",
		detected, len(attacks), pct(detected, len(attacks)), fps, len(benign), pct(fps, len(benign)))
	fmt.Printf("waf sensor PL1 + built-in detectors: detected %d/%d attacks (%.1f%%), false positives %d/%d (%.2f%%)\n",
		combined, len(attacks), pct(combined, len(attacks)), fpsCombined, len(benign), pct(fpsCombined, len(benign)))
	if dr := pct(combined, len(attacks)); dr < 95 {
		t.Errorf("WAF PL1 + built-in detection %.1f%% below the 95%% floor", dr)
	}
	if dr := pct(detected, len(attacks)); dr < 85 {
		t.Errorf("CRS PL1 alone detection %.1f%% fell (was 91%%)", dr)
	}
	// The CRS at PL1 flags code and shell snippets in free text (posts with Markdown); record
	// the rate and keep it from growing (TestFPBreakdown lists the rules).
	if fpr := pct(fps, len(benign)); fpr > 10 {
		t.Errorf("WAF PL1 false positives %.2f%% above the 10%% ceiling (was 9.6%%)", fpr)
	}
	if fpr := pct(fpsDev, len(dev)); fpr > 33 {
		t.Errorf("WAF PL1 false positives on benign_dev %.2f%% above the 33%% ceiling (was 32.7%%)", fpr)
	}
}

func TestPoolSharesRuleSets(t *testing.T) {
	p := NewPool()
	a, err := p.Get(Config{ParanoiaLevel: 1, Action: policy.SensorBlock})
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Get(Config{Action: policy.SensorAlert}) // same rule set (defaults), other action
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 1 || a.waf != b.waf || b.Config().Action != policy.SensorAlert || a.Config().Action != policy.SensorBlock {
		t.Fatalf("pool: %d rule sets, shared=%v, actions %q/%q", p.Len(), a.waf == b.waf, a.Config().Action, b.Config().Action)
	}
	if _, err := p.Get(Config{ParanoiaLevel: 2}); err != nil || p.Len() != 2 {
		t.Fatalf("second paranoia level: %v, %d rule sets", err, p.Len())
	}
	if _, err := p.Get(Config{ParanoiaLevel: 9}); err == nil {
		t.Fatal("invalid config accepted")
	}
}
