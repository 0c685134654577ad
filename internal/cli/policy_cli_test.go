package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/api"
)

func TestReadPolicyFiles(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"b.yaml": "b", "a.yml": "a", "sub/c.json": "c", "notes.txt": "x"} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	files, err := readPolicyFiles(strings.NewReader("from-stdin"), []string{dir, "-"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, filepath.Base(f.Name)+"="+f.Content)
	}
	if strings.Join(got, " ") != "a.yml=a b.yaml=b c.json=c -=from-stdin" {
		t.Fatalf("files: %v", got)
	}
	if _, err := readPolicyFiles(nil, nil); err == nil {
		t.Fatal("no -f accepted")
	}
	if _, err := readPolicyFiles(nil, []string{filepath.Join(dir, "missing.yaml")}); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestGraphDotQuotesNames(t *testing.T) {
	var b bytes.Buffer
	writeDot(&b, api.Graph{Nodes: []api.GraphNode{{ID: `shop/we"b`}, {ID: "shop/cache"}},
		Edges: []api.GraphEdge{{From: `shop/we"b`, To: "shop/cache", Apps: []string{"redis"}, Ports: []string{"tcp/6379"}, Verdict: "deny"}}})
	out := b.String()
	if !strings.Contains(out, `"shop/we\"b" -> "shop/cache" [label="redis tcp/6379", color=red];`) {
		t.Fatalf("dot:\n%s", out)
	}
}
