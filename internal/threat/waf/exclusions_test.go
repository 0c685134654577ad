package waf

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/policy"
)

// TestExclusions: a group's exclusion keeps the named rules off the named field (under the
// path, when one is given) and nothing else: the same field elsewhere, and an attack in
// another field, are still caught.
func TestExclusions(t *testing.T) {
	post := func(path, field, value string) string {
		body := field + "=" + strings.ReplaceAll(value, " ", "+")
		return "POST " + path + " HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\nAccept: */*\r\n" +
			"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	// A developer forum post: shell in prose, which CRS 932xxx reads as command injection.
	benign := post("/forum/posts", "comment", "to see hidden files run ; ls -la /etc/ and then cat /etc/passwd to compare")
	plain := mustWAF(t, Config{})
	f := plain.Inspect(parse(t, benign), nil)
	if len(f) != 1 {
		t.Fatalf("the forum post is not flagged without exclusions (%v): pick another example", f)
	}
	rules := []int{f[0].RuleID}
	_, matched := plain.attackRules(t, []byte(benign))
	for _, m := range matched {
		if id, err := strconv.Atoi(strings.Fields(m)[0]); err == nil && !slices.Contains(rules, id) {
			rules = append(rules, id)
		}
	}

	scoped := mustWAF(t, Config{Exclusions: []policy.WAFExclusion{{Rules: rules, Targets: []string{"ARGS:comment"}, PathPrefix: "/forum/"}}})
	if f := scoped.Inspect(parse(t, benign), nil); len(f) != 0 {
		t.Fatalf("excluded field still flagged: %v", f)
	}
	if f := scoped.Inspect(parse(t, post("/admin/run", "comment", "; ls -la /etc/ and then cat /etc/passwd")), nil); len(f) != 1 {
		t.Fatalf("the exclusion leaked outside its path: %v", f)
	}
	if f := scoped.Inspect(parse(t, post("/forum/posts", "title", "1' UNION SELECT password FROM users--")), nil); len(f) != 1 {
		t.Fatalf("an attack in another field of the excluded path was missed: %v", f)
	}
	everywhere := mustWAF(t, Config{Exclusions: []policy.WAFExclusion{{Rules: rules, Targets: []string{"ARGS:comment"}}}})
	if f := everywhere.Inspect(parse(t, post("/anything", "comment", "; ls -la /etc/ and then cat /etc/passwd")), nil); len(f) != 0 {
		t.Fatalf("path-less exclusion did not apply: %v", f)
	}
	if scoped.Config().Key() == plain.Config().Key() || scoped.Config().Key() == everywhere.Config().Key() {
		t.Fatal("configs with different exclusions share a pool key")
	}
	for _, bad := range []policy.WAFExclusion{
		{Rules: []int{12}},
		{Rules: []int{942100}, Targets: []string{`ARGS:x" "id:1,deny`}},
		{Rules: []int{942100}, PathPrefix: `/a" "id:1`},
		{},
	} {
		if _, err := New(Config{Exclusions: []policy.WAFExclusion{bad}}); err == nil {
			t.Errorf("exclusion %+v accepted", bad)
		}
	}
}
