package policy

import (
	"path/filepath"
	"testing"
)

// TestShippedExamples: the policy files in examples/ load and validate, so a user who applies
// one meets no error the docs did not promise.
func TestShippedExamples(t *testing.T) {
	files, err := filepath.Glob("../../examples/*-policy.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example policies found (%v)", err)
	}
	for _, f := range files {
		set, err := LoadPaths(nil, f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := set.Validate(); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if set.Len() == 0 {
			t.Fatalf("%s: no objects", f)
		}
	}
}
