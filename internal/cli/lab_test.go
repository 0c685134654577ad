package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func labExecute(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Execute(context.Background(), args, &out, &errb)
	return code, out.String() + errb.String()
}

// A bad topology is refused with file:line: field before anything else (even without root).
func TestLabUpRefusesBadTopology(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	src := "pods:\n  - name: web\n    command: [x]\n  - name: web\n    command: [y]\n"
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := labExecute(t, "lab", "up", "-f", file, "--state-dir", filepath.Join(t.TempDir(), "lab"))
	if code == 0 || !strings.Contains(out, file+":4: pods[1].name: duplicate pod \"default/web\"") {
		t.Fatalf("exit %d: %s", code, out)
	}
}

func TestLabUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"lab", "up"}, "-f TOPOLOGY.yaml is required"},
		{[]string{"lab", "exec", "client", "curl"}, "usage: meshguard lab exec POD -- CMD"},
		{[]string{"lab", "up", "-f", "/nonexistent/topology.yaml"}, "read topology"},
	} {
		code, out := labExecute(t, tc.args...)
		if code == 0 || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d: %s", tc.args, code, out)
		}
	}
}
