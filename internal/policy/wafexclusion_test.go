package policy

import (
	"strings"
	"testing"
)

// TestWAFExclusionValidation: exclusions are written into Coraza directives, so only their
// documented shape loads, and errors name the field.
func TestWAFExclusionValidation(t *testing.T) {
	doc := func(x string) string {
		return "apiVersion: meshguard.io/v1alpha1\nkind: Group\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  mode: protect\n  sensors:\n    waf:\n      exclusions:\n" + x
	}
	good := doc("      - {rules: [932235, 942100], targets: [ARGS:comment, 'ARGS:json.post.body'], pathPrefix: /forum/}\n      - {rules: [920350]}\n")
	set, err := Parse("ok.yaml", []byte(good))
	if err == nil {
		err = set.Validate()
	}
	if err != nil {
		t.Fatalf("valid exclusions refused: %v", err)
	}
	if x := set.Groups[0].Spec.Sensors.WAF.Exclusions; len(x) != 2 || x[0].PathPrefix != "/forum/" || len(x[0].Targets) != 2 {
		t.Fatalf("parsed %+v", x)
	}
	for bad, want := range map[string]string{
		"      - {rules: [42]}\n":                                    "spec.sensors.waf.exclusions[0].rules",
		"      - {rules: []}\n":                                      "spec.sensors.waf.exclusions[0].rules",
		"      - {rules: [942100], targets: ['ARGS:x\" \"id:1']}\n":  "spec.sensors.waf.exclusions[0].targets",
		"      - {rules: [942100], targets: [TX:anomaly_score]}\n":   "spec.sensors.waf.exclusions[0].targets",
		"      - {rules: [942100], pathPrefix: 'x\" \"id:1,deny'}\n": "spec.sensors.waf.exclusions[0].pathPrefix",
	} {
		set, err := Parse("bad.yaml", []byte(doc(bad)))
		if err == nil {
			err = set.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err %v, want one naming %s", bad, err, want)
		}
	}
}
