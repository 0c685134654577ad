package api_test

import (
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestOpenAPICoversEveryRoute keeps api/openapi.yaml honest: every route the server
// registers (with every optional part configured) is documented with its method.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	raw, err := os.ReadFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := yaml.Unmarshal(raw, &spec); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	f := newFixture(t)
	routes := f.srv.Routes()
	if len(routes) < 21 {
		t.Fatalf("only %d routes registered: %v", len(routes), routes)
	}
	for _, r := range routes {
		method, path, _ := strings.Cut(r, " ")
		if _, ok := spec.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("route %q is not in api/openapi.yaml", r)
		}
	}
}
