package waf

import (
	"strconv"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/threat"
)

// TestTruncatedBodyNotAnAttack: a JSON body cut at the inspection bound does not parse, and
// that alone is no finding (every large JSON upload was refused); a whole body that does not
// parse still is one, and an attack elsewhere in a cut request is still caught.
func TestTruncatedBodyNotAnAttack(t *testing.T) {
	w := mustWAF(t, Config{})
	req := func(query, body string, truncated bool) *threat.HTTPRequest {
		r := parse(t, "POST /api/orders"+query+" HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\nAccept: */*\r\n"+
			"Content-Type: application/json\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
		r.BodyTruncated = truncated
		return r
	}
	items := strings.Repeat(`{"sku":"A-1","qty":2,"note":"gift wrap"},`, 2000)
	cut := `{"items":[` + items[:64<<10]
	if f := w.Inspect(req("", cut, true), nil); len(f) != 0 {
		t.Fatalf("a JSON body cut at the bound is flagged: %v", f)
	}
	if f := w.Inspect(req("", `{"items":[{"sku":"A-1",}`, false), nil); len(f) != 1 || f[0].RuleID != 200002 {
		t.Fatalf("a whole body that does not parse: %v, want one 200002 finding", f)
	}
	if f := w.Inspect(req("?id=1%27%20UNION%20SELECT%20password%20FROM%20users--", cut, true), nil); len(f) != 1 {
		t.Fatalf("an attack in the query of a request with a cut body is missed: %v", f)
	}
	if f := w.Inspect(req("", `{"items":[{"sku":"A-1","qty":2}]}`, false), nil); len(f) != 0 {
		t.Fatalf("a whole, valid JSON body is flagged: %v", f)
	}
}
