package policy

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/dpi"
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

// FuzzDecideL7 feeds arbitrary request attributes (they come from hostile traffic) to the L7
// matchers through Decide: no panics, and a verdict for every input.
func FuzzDecideL7(f *testing.F) {
	s, err := Parse("shop.yaml", must(os.ReadFile("testdata/shop.yaml")))
	if err != nil {
		f.Fatal(err)
	}
	p, err := Compile(s, CompileOptions{})
	if err != nil {
		f.Fatal(err)
	}
	client, _ := p.GroupID("shop/client")
	web, _ := p.GroupID("shop/web")
	cache, _ := p.GroupID("shop/cache")
	f.Add("http", "GET", "/api/x", "a.shop.example:80", uint16(8080))
	f.Add("grpc", "POST", "/pkg.Svc/Method", "[::1]:", uint16(8000))
	f.Add("redis", "FLUSHALL", "", "", uint16(6379))
	f.Add("http", "", "/%2", ":", uint16(8001))
	f.Add("http2", "G", "//", "]:1", uint16(0))
	f.Fuzz(func(t *testing.T, app, a, b, c string, port uint16) {
		m := &dpi.Message{}
		m.Reset(dpi.ClientToServer, "request")
		m.AddString(dpi.AttrMethod, a)
		m.AddString(dpi.AttrCommand, a)
		m.AddString(dpi.AttrVerb, a)
		m.AddString(dpi.AttrPath, b)
		m.AddString(dpi.AttrHost, c)
		m.AddString(dpi.AttrName, c)
		for _, src := range []GroupID{client, web} {
			for _, dst := range []GroupID{web, cache} {
				in := Input{SrcGroups: []GroupID{src}, DstGroups: []GroupID{dst}, Port: port, Transport: dpi.TCP, App: app, L7: m}
				d := p.Decide(&in)
				if d.Verdict != Allow && d.Verdict != Deny {
					t.Fatalf("verdict %d", d.Verdict)
				}
				_, _ = p.Explain(&in)
			}
		}
	})
}
