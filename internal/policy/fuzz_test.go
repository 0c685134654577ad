package policy

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the loader. It must never panic; whatever parses and
// validates must export, re-parse to a valid set and export to the same bytes, and compile.
func FuzzParse(f *testing.F) {
	shop, err := os.ReadFile("testdata/shop.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(shop)
	for _, d := range strings.Split(string(shop), "\n---\n") {
		f.Add([]byte(d))
	}
	f.Add([]byte(orderPolicy))
	f.Add([]byte(baseGroups))
	f.Add([]byte("a: &a [*a, *a]\nb: *a\n"))
	f.Add([]byte(hdr + "kind: Group\nmetadata: {name: a}\nspec: {<<: {mode: protect}}\n"))
	f.Add([]byte("{\"apiVersion\": \"meshguard.io/v1alpha1\", \"kind\": \"Group\", \"metadata\": {\"name\": \"x\", \"namespace\": \"y\"}, \"spec\": {\"mode\": \"monitor\"}}"))
	f.Add([]byte("---\n---\n"))
	f.Add([]byte("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		s, err := Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		if s.Validate() != nil {
			return
		}
		out, err := s.Export()
		if err != nil {
			t.Fatalf("export of a valid set: %v", err)
		}
		s2, err := Parse("export.yaml", out)
		if err != nil {
			t.Fatalf("re-parse of export: %v\n%s", err, out)
		}
		if err := s2.Validate(); err != nil {
			t.Fatalf("re-validate of export: %v\n%s", err, out)
		}
		out2, err := s2.Export()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("export not stable: %v\n%s\n----\n%s", err, out, out2)
		}
		if _, err := Compile(s, CompileOptions{}); err != nil {
			t.Fatalf("compile of a valid set: %v", err)
		}
	})
}
