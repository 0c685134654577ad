package threat

import (
	"os"
	"strings"
	"testing"
)

// TestRegistryDocumented: every registered detector has a unique name, a severity, a category
// and a section in docs/threats.md.
func TestRegistryDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/threats.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range DefaultDetectors() {
		if seen[d.Name] {
			t.Errorf("detector %q registered twice", d.Name)
		}
		seen[d.Name] = true
		if d.Severity < Low || d.Severity > Critical || d.Category == "" || d.Description == "" {
			t.Errorf("detector %q incomplete: %+v", d.Name, d)
		}
		if !strings.Contains(string(doc), "### "+d.Name+" ") {
			t.Errorf("detector %q has no section in docs/threats.md", d.Name)
		}
		if f := NewFinding(d.Name, "x", []byte("e"), ""); f.Severity != d.Severity || f.Category != d.Category {
			t.Errorf("NewFinding(%q) = %+v", d.Name, f)
		}
	}
	for _, s := range []string{"low", "Medium", "HIGH", "critical"} {
		if _, err := ParseSeverity(s); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseSeverity("severe"); err == nil {
		t.Error("ParseSeverity accepted an unknown severity")
	}
	if _, err := NewHTTP(HTTPConfig{Disabled: []string{"nope"}}); err == nil {
		t.Error("unknown disabled detector accepted")
	}
	h, err := NewHTTP(HTTPConfig{Disabled: []string{SQLi}})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := ParseHTTPRequest([]byte("GET /?id=1%27%20OR%201=1-- HTTP/1.1\r\nHost: a\r\n\r\n"))
	for _, f := range h.Inspect(&r, nil) {
		if f.Detector == SQLi {
			t.Errorf("disabled detector ran: %v", f)
		}
	}
}
