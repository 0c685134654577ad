package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/lab"
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

// The topology's mesh: settings reach the controller the lab starts, as flags it accepts.
func TestLabControllerGetsMeshSettings(t *testing.T) {
	st := &lab.State{StateDir: "/run/x", Gateway: "10.244.0.1",
		Mesh: lab.Mesh{PermissiveNamespaces: []string{"legacy", "old"}, Egress: "allow-any"}}
	args := labControllerSpec(&globals{logLevel: "info"}, 0)(st)[0].Args
	joined := strings.Join(args, " ")
	if !strings.Contains(joined, "--mtls-permissive legacy,old") || !strings.Contains(joined, "--egress allow-any") {
		t.Fatalf("controller args %q lack the mesh settings", joined)
	}
	plain := strings.Join(labControllerSpec(&globals{logLevel: "info"}, 0)(&lab.State{})[0].Args, " ")
	if strings.Contains(plain, "--egress") || strings.Contains(plain, "--mtls-permissive") {
		t.Fatalf("defaults must not be passed: %q", plain)
	}
	// The controller refuses a bad mode with an error naming the flag, before touching anything.
	code, out := labExecute(t, "controller", "--data-dir", t.TempDir(), "--egress", "ALLOW_ANY")
	if code == 0 || !strings.Contains(out, `--egress "ALLOW_ANY": want allow-any or registry-only`) {
		t.Fatalf("exit %d: %s", code, out)
	}
	code, out = labExecute(t, "controller", "--data-dir", t.TempDir(), "--mtls-permissive", "legacy,Bad")
	if code == 0 || !strings.Contains(out, `--mtls-permissive "Bad"`) {
		t.Fatalf("exit %d: %s", code, out)
	}
}
