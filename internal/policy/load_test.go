package policy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func loadShop(t testing.TB) *Set {
	t.Helper()
	s, err := LoadPaths(nil, "testdata/shop.yaml")
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	return s
}

func TestLoadShop(t *testing.T) {
	s := loadShop(t)
	if len(s.Groups) != 5 || len(s.NetworkRules) != 5 || len(s.ResponseRules) != 1 || len(s.ProcessProfiles) != 1 || len(s.FileRules) != 1 {
		t.Fatalf("counts: %d groups %d rules %d resp %d proc %d file", len(s.Groups), len(s.NetworkRules), len(s.ResponseRules), len(s.ProcessProfiles), len(s.FileRules))
	}
	g, ok := s.Group("shop/web")
	if !ok || g.Spec.Sensors.WAF.ParanoiaLevel != 1 || g.Spec.Sensors.DLP.Action != SensorAlert {
		t.Fatalf("web group sensors not loaded: %+v", g)
	}
	r := s.NetworkRules[0]
	if r.Source.File != "testdata/shop.yaml" || r.Source.Line != 45 {
		t.Errorf("source = %s:%d, want testdata/shop.yaml:45", r.Source.File, r.Source.Line)
	}
	if got := r.Spec.L7.Redis.DenyCommands; !reflect.DeepEqual(got, []string{"FLUSHALL", "CONFIG"}) {
		t.Errorf("denyCommands = %v", got)
	}
}

func TestLoadDirAndStdin(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile("testdata/shop.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(data), "\n---\n")
	for i, d := range docs {
		name := filepath.Join(dir, "sub", string(rune('a'+i))+".yaml")
		if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(d), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "README.md"), []byte("not policy"), 0o600)
	s, err := LoadPaths(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != len(docs) {
		t.Fatalf("dir: %d documents, want %d", s.Len(), len(docs))
	}
	s2, err := LoadPaths(bytes.NewReader(data), "-")
	if err != nil {
		t.Fatal(err)
	}
	if s2.Len() != len(docs) || s2.Groups[0].Source.File != "<stdin>" {
		t.Fatalf("stdin: %d docs, file %q", s2.Len(), s2.Groups[0].Source.File)
	}
	if _, err := LoadPaths(nil, filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file: no error")
	}
}

const hdr = "apiVersion: meshguard.io/v1alpha1\n"

// groups used by rule tests (lines 1-10).
const baseGroups = hdr + `kind: Group
metadata: {name: web, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, mode: protect}
---
` + hdr + `kind: Group
metadata: {name: cache, namespace: shop}
spec: {mode: discover}
---
`

func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // substrings of the error
	}{
		{"unknown field", hdr + "kind: Group\nmetadata: {name: a, namespace: x}\nspec:\n  mode: protect\n  selectr: {}\n",
			[]string{"f.yaml:6: Group x/a: spec.selectr: unknown field (allowed: external, mode, namespace, selector, sensors, serviceAccount)"}},
		{"unknown kind", hdr + "kind: Firewall\nmetadata: {name: a}\n",
			[]string{"f.yaml:2: kind: unknown kind \"Firewall\" (allowed: Group, NetworkRule, ProcessProfile, FileRule, ResponseRule)"}},
		{"bad apiVersion", "apiVersion: v1\nkind: Group\nmetadata: {name: a}\n",
			[]string{"f.yaml:1:", "apiVersion", "meshguard.io/v1alpha1"}},
		{"bad mode", hdr + "kind: Group\nmetadata: {name: a, namespace: x}\nspec:\n  mode: block\n",
			[]string{"f.yaml:5: Group x/a: spec.mode: \"block\" is not a mode (allowed: discover, monitor, protect)"}},
		{"missing mode", hdr + "kind: Group\nmetadata: {name: a, namespace: x}\nspec: {}\n",
			[]string{"f.yaml:4:", "spec.mode: required (allowed: discover, monitor, protect)"}},
		{"wrong type", hdr + "kind: NetworkRule\nmetadata: {name: a}\nspec:\n  priority: high\n",
			[]string{"f.yaml", "line 5", "cannot unmarshal"}},
		{"unknown group", baseGroups + hdr + "kind: NetworkRule\nmetadata: {name: r, namespace: shop}\nspec:\n  from: {group: web}\n  to: {group: cach}\n  ports: [tcp/6379]\n  applications: [redis]\n  action: allow\n",
			[]string{"f.yaml:16: NetworkRule shop/r: spec.to.group: unknown group \"cach\"", "known: shop/cache, shop/web"}},
		{"bad port", baseGroups + hdr + "kind: NetworkRule\nmetadata: {name: r, namespace: shop}\nspec:\n  from: {group: web}\n  to: {group: cache}\n  ports: [tcp/6379, sctp/9]\n  applications: [redis]\n  action: allow\n",
			[]string{"f.yaml:17: NetworkRule shop/r: spec.ports[1]: \"sctp/9\" is not a port (allowed: any, tcp/any"}},
		{"bad range", baseGroups + hdr + "kind: NetworkRule\nmetadata: {name: r, namespace: shop}\nspec:\n  from: {group: web}\n  to: {group: cache}\n  ports:\n  - tcp/9000-8000\n  action: allow\n",
			[]string{"f.yaml:18:", "spec.ports[0]"}},
		{"bad action", baseGroups + hdr + "kind: NetworkRule\nmetadata: {name: r, namespace: shop}\nspec:\n  from: {group: web}\n  to: {group: cache}\n  action: permit\n",
			[]string{"f.yaml:17: NetworkRule shop/r: spec.action: \"permit\" is not an action (allowed: allow, deny)"}},
		{"l7 wrong app", baseGroups + hdr + "kind: NetworkRule\nmetadata: {name: r, namespace: shop}\nspec:\n  from: {group: web}\n  to: {group: cache}\n  applications: [redis]\n  l7:\n    http: {methods: [GET]}\n  action: allow\n",
			[]string{"f.yaml:19:", "spec.l7.http: does not apply to applications [redis]"}},
		{"bad method", baseGroups + hdr + "kind: NetworkRule\nmetadata: {name: r, namespace: shop}\nspec:\n  from: {group: web}\n  to: {group: cache}\n  applications: [http]\n  l7:\n    http:\n      methods: [GET, \"DE LETE\"]\n  action: allow\n",
			[]string{"f.yaml:20:", "spec.l7.http.methods[1]"}},
		{"other namespace protected", baseGroups + hdr + "kind: NetworkRule\nmetadata: {name: r, namespace: other}\nspec:\n  from: {group: web, namespace: shop}\n  to: {group: cache, namespace: shop}\n  action: allow\n",
			[]string{"f.yaml:16:", "spec.to.group: group \"shop/cache\" is outside namespace \"other\""}},
		{"duplicate", baseGroups + hdr + "kind: Group\nmetadata: {name: web, namespace: shop}\nspec: {mode: monitor}\n",
			[]string{"f.yaml:13:", "duplicate Group \"shop/web\" (first defined at f.yaml:1)"}},
		{"conflict", baseGroups + hdr + "kind: NetworkRule\nmetadata: {name: a, namespace: shop}\nspec:\n  from: {group: web}\n  to: {group: cache}\n  ports: [tcp/6379]\n  applications: [redis]\n  action: allow\n---\n" +
			hdr + "kind: NetworkRule\nmetadata: {name: d, namespace: shop}\nspec:\n  from: {group: web}\n  to: {group: cache}\n  ports: [tcp/6379, tcp/1]\n  applications: [redis]\n  action: deny\n",
			[]string{"f.yaml:19: NetworkRule shop/a: spec.action: conflicts with deny rule \"shop/d\" (f.yaml:21)"}},
		{"unknown application", baseGroups + hdr + "kind: NetworkRule\nmetadata: {name: r, namespace: shop}\nspec:\n  from: {group: web}\n  to: {group: cache}\n  applications: [reddis]\n  action: allow\n",
			[]string{"f.yaml:17: NetworkRule shop/r: spec.applications[0]: unknown application \"reddis\" (allowed: any, ", "redis", "grpc", "postgres"}},
		{"cluster group no criteria", hdr + "kind: Group\nmetadata: {name: all}\nspec: {mode: protect}\n",
			[]string{"f.yaml:4:", "needs a criterion"}},
		{"cluster group empty selector", hdr + "kind: Group\nmetadata: {name: all}\nspec: {selector: {}, mode: protect}\n",
			[]string{"f.yaml:4:", "needs a criterion"}},
		{"bad cidr", hdr + "kind: Group\nmetadata: {name: ext}\nspec:\n  external:\n    cidrs: [10.0.0.0/33]\n  mode: protect\n",
			[]string{"f.yaml:6:", "spec.external.cidrs[0]"}},
		{"bad dlp", hdr + "kind: Group\nmetadata: {name: a, namespace: x}\nspec:\n  mode: protect\n  sensors:\n    dlp: {patterns: [credit-cards]}\n",
			[]string{"f.yaml:7:", "spec.sensors.dlp.patterns[0]: unknown pattern \"credit-cards\" (allowed: credit-card"}},
		{"bad waf", hdr + "kind: Group\nmetadata: {name: a, namespace: x}\nspec:\n  mode: protect\n  sensors:\n    waf:\n      paranoiaLevel: 5\n      action: drop\n",
			[]string{"f.yaml:8:", "paranoiaLevel: 5 is out of range", "f.yaml:9:", "spec.sensors.waf.action: \"drop\""}},
		{"response rule", hdr + "kind: ResponseRule\nmetadata: {name: a}\nspec:\n  match: {kind: threat, severity: huge}\n  actions: [quarantine, nuke]\n",
			[]string{"f.yaml:5:", "spec.match.severity", "f.yaml:6:", "spec.actions[1]: \"nuke\""}},
		{"alias", hdr + "kind: Group\nmetadata: {name: a, namespace: x}\nspec: &s {mode: protect}\nother: *s\n",
			[]string{"f.yaml:5:", "aliases"}},
		{"bad name", hdr + "kind: Group\nmetadata: {name: Web_1, namespace: x}\nspec: {mode: protect}\n",
			[]string{"f.yaml:3:", "metadata.name: \"Web_1\" is not a valid name"}},
		{"syntax", hdr + "kind: Group\nmetadata: {name: a\n",
			[]string{"f.yaml:", "line"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse("f.yaml", []byte(tt.doc))
			if err == nil {
				err = s.Validate()
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n  %v\nlacks %q", err, w)
				}
			}
		})
	}
}

func TestValidateReportsEverything(t *testing.T) {
	doc := baseGroups + hdr + "kind: NetworkRule\nmetadata: {name: r, namespace: shop}\nspec:\n  from: {group: nope}\n  to: {group: cache}\n  ports: [tcp/0]\n  action: maybe\n"
	s, err := Parse("f.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Validate()
	for _, w := range []string{"spec.from.group", "spec.ports[0]", "spec.action"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("missing %s in %v", w, err)
		}
	}
}

func TestExportRoundTrip(t *testing.T) {
	s := loadShop(t)
	out, err := s.Export()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Parse("export.yaml", out)
	if err != nil {
		t.Fatalf("re-parse: %v\n%s", err, out)
	}
	if err := s2.Validate(); err != nil {
		t.Fatalf("re-validate: %v", err)
	}
	out2, err := s2.Export()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, out2) {
		t.Fatalf("export not stable:\n%s\n---- vs ----\n%s", out, out2)
	}
	// The documents are the same (sources aside), whatever the input order was.
	if !reflect.DeepEqual(stripSources(sorted(s)), stripSources(s2)) {
		t.Fatalf("round trip changed the policy:\n%+v\n%+v", stripSources(sorted(s)), stripSources(s2))
	}
	// And the same decisions.
	p1, _ := Compile(s, CompileOptions{})
	p2, _ := Compile(s2, CompileOptions{})
	for _, c := range decideCases(t, p1) {
		in2 := p2.Input(&c.flow)
		in1 := p1.Input(&c.flow)
		if d1, d2 := p1.Decide(&in1), p2.Decide(&in2); d1 != d2 {
			t.Errorf("%s: %+v vs %+v", c.name, d1, d2)
		}
	}
}

func sorted(s *Set) *Set {
	out, _ := Parse("x", must(s.Export()))
	return out
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func stripSources(s *Set) *Set {
	s = s.Clone()
	for i := range s.Groups {
		s.Groups[i].Source = Source{}
	}
	for i := range s.NetworkRules {
		s.NetworkRules[i].Source = Source{}
	}
	for i := range s.ProcessProfiles {
		s.ProcessProfiles[i].Source = Source{}
	}
	for i := range s.FileRules {
		s.FileRules[i].Source = Source{}
	}
	for i := range s.ResponseRules {
		s.ResponseRules[i].Source = Source{}
	}
	return s
}

func TestMergeDeleteSetMode(t *testing.T) {
	s := loadShop(t)
	upd, err := Parse("u.yaml", []byte(hdr+"kind: Group\nmetadata: {name: cache, namespace: shop}\nspec: {mode: monitor}\n---\n"+
		hdr+"kind: Group\nmetadata: {name: extra, namespace: shop}\nspec: {mode: monitor}\n"))
	if err != nil {
		t.Fatal(err)
	}
	m := s.Merge(upd)
	if len(m.Groups) != 6 || len(s.Groups) != 5 {
		t.Fatalf("merge: %d groups (original %d)", len(m.Groups), len(s.Groups))
	}
	if g, _ := m.Group("shop/cache"); g.Spec.Mode != ModeMonitor {
		t.Fatal("merge did not replace shop/cache")
	}
	if g, _ := s.Group("shop/cache"); g.Spec.Mode != ModeProtect {
		t.Fatal("merge changed the original")
	}
	d, ok := m.Delete(KindGroup, "shop/cache")
	if !ok || len(d.Groups) != 5 {
		t.Fatal("delete")
	}
	// Deleting a referenced group makes the set invalid: apply would refuse it.
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), `unknown group "cache"`) {
		t.Fatalf("validate after delete: %v", err)
	}
	sm, err := s.SetMode("shop/db", ModeProtect)
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := sm.Group("shop/db"); g.Spec.Mode != ModeProtect {
		t.Fatal("set mode")
	}
	if _, err := s.SetMode("shop/nope", ModeProtect); err == nil || !strings.Contains(err.Error(), "shop/cache") {
		t.Fatalf("set mode unknown: %v", err)
	}
	if _, err := s.SetMode("shop/db", "block"); err == nil {
		t.Fatal("set bad mode")
	}
}

// TestJSON: the REST API speaks JSON; the documents marshal to the same shape and JSON input
// parses (JSON is YAML) with the same strictness.
func TestJSON(t *testing.T) {
	s := loadShop(t)
	b, err := json.Marshal(s.NetworkRules[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), `{"apiVersion":"meshguard.io/v1alpha1","kind":"NetworkRule","metadata":{"name":"web-to-cache","namespace":"shop"},"spec":{"from":{"group":"web"}`) {
		t.Fatalf("json shape: %s", b)
	}
	s2, err := Parse("api.json", b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(stripSources(s2).NetworkRules[0], stripSources(s).NetworkRules[0]) {
		t.Fatalf("json round trip: %+v", s2.NetworkRules[0])
	}
	if _, err := Parse("api.json", []byte(`{"apiVersion":"meshguard.io/v1alpha1","kind":"Group","metadata":{"name":"a"},"spec":{"mod":"x"}}`)); err == nil ||
		!strings.Contains(err.Error(), "api.json:1: Group a: spec.mod: unknown field") {
		t.Fatalf("json strictness: %v", err)
	}
	if refs := s.Objects(); len(refs) != s.Len() || refs[0] != (ObjectRef{KindGroup, "shop", "web"}) {
		t.Fatalf("objects: %v", refs)
	}
}

func TestKindFromName(t *testing.T) {
	for in, want := range map[string]string{"groups": KindGroup, "Group": KindGroup, "rules": KindNetworkRule,
		"networkrules": KindNetworkRule, "ProcessProfiles": KindProcessProfile, "filerule": KindFileRule, "responserules": KindResponseRule} {
		if got, ok := KindFromName(in); !ok || got != want {
			t.Errorf("%s: %s %v", in, got, ok)
		}
	}
	if _, ok := KindFromName("pods"); ok {
		t.Error("pods is not a kind")
	}
}

func TestSetSensors(t *testing.T) {
	s := loadShop(t)
	s2, err := s.SetSensors("shop/cache", func(x *Sensors) { x.WAF = &WAFSensor{ParanoiaLevel: 2, Action: SensorBlock} })
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Validate(); err != nil {
		t.Fatal(err)
	}
	if g, _ := s2.Group("shop/cache"); g.Spec.Sensors.WAF.ParanoiaLevel != 2 {
		t.Fatal("waf not enabled")
	}
	if g, _ := s.Group("shop/cache"); g.Spec.Sensors != nil {
		t.Fatal("original changed")
	}
	s3, _ := s2.SetSensors("shop/web", func(x *Sensors) { x.WAF, x.DLP = nil, nil })
	if g, _ := s3.Group("shop/web"); g.Spec.Sensors != nil {
		t.Fatal("sensors not removed")
	}
	if g, _ := s2.Group("shop/web"); g.Spec.Sensors.WAF == nil {
		t.Fatal("disable changed the previous set")
	}
	bad, _ := s.SetSensors("shop/db", func(x *Sensors) { x.WAF = &WAFSensor{ParanoiaLevel: 9} })
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "paranoiaLevel: 9 is out of range") {
		t.Fatalf("bad paranoia: %v", err)
	}
	if _, err := s.SetSensors("shop/nope", func(*Sensors) {}); err == nil {
		t.Fatal("unknown group")
	}
}

func TestApply(t *testing.T) {
	cur := loadShop(t)
	in, err := Parse("new.yaml", []byte(hdr+"kind: Group\nmetadata: {name: cache, namespace: shop}\nspec: {mode: monitor}\n---\n"+
		hdr+"kind: Group\nmetadata: {name: cache, namespace: shop}\nspec: {mode: protect}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(cur, in); err == nil || !strings.Contains(err.Error(), "new.yaml:8: Group shop/cache: metadata.name: duplicate Group \"shop/cache\" in this apply (first at new.yaml:1)") {
		t.Fatalf("duplicate in apply: %v", err)
	}
	// A rule referencing a group that does not exist: nothing applied.
	in2, _ := Parse("r.yaml", []byte(hdr+"kind: NetworkRule\nmetadata: {name: x, namespace: shop}\nspec: {from: {group: web}, to: {group: nope}, action: allow}\n"))
	if _, err := Apply(cur, in2); err == nil || !strings.Contains(err.Error(), "r.yaml:4: NetworkRule shop/x: spec.to.group: unknown group \"nope\"") {
		t.Fatalf("bad apply: %v", err)
	}
	if len(cur.NetworkRules) != 5 {
		t.Fatal("current modified")
	}
	in3, _ := Parse("ok.yaml", []byte(hdr+"kind: Group\nmetadata: {name: cache, namespace: shop}\nspec: {mode: monitor}\n"))
	out, err := Apply(cur, in3)
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := out.Group("shop/cache"); g.Spec.Mode != ModeMonitor {
		t.Fatal("not applied")
	}
}

var update = flag.Bool("update", false, "rewrite golden files")

// TestExportGolden pins the export format: review changes as diffs (go test -update).
func TestExportGolden(t *testing.T) {
	out, err := loadShop(t).Export()
	if err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/shop.export.golden.yaml"
	if *update {
		if err := os.WriteFile(golden, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if !bytes.Equal(out, want) {
		t.Fatalf("export differs from %s (go test -update to accept):\n%s", golden, out)
	}
}
