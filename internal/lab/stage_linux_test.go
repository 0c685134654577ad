package lab

import (
	"os"
	"path/filepath"
	"testing"
)

// A pod whose program lives in a directory its user cannot enter (a checkout under a 0700
// dir, as a fresh CI clone in a private temp dir is) runs a staged copy it can reach.
func TestStagedCommandCopiesUnreachableProgram(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the pod dir is chowned to the pod's uid")
	}
	const nobody = 65534
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	priv := filepath.Join(base, "checkout")
	if err := os.Mkdir(priv, 0o700); err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(priv, "pod.sh")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	podDir := filepath.Join(base, "pod")
	if err := os.Mkdir(podDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(podDir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if reachable(prog, nobody, nobody) {
		t.Fatal("a file under a root-owned 0700 dir reported reachable for nobody")
	}
	p := &PodState{Pod: Pod{Name: "web", Namespace: "shop", Command: []string{prog, "8080"}, UID: nobody, GID: nobody}, Dir: podDir}
	cmd, err := stagedCommand(p)
	if err != nil {
		t.Fatal(err)
	}
	if cmd[0] == prog || cmd[1] != "8080" || !reachable(cmd[0], nobody, nobody) {
		t.Fatalf("staged command %q: want a copy nobody can reach, arguments kept", cmd)
	}
	if b, err := os.ReadFile(cmd[0]); err != nil || string(b) != "#!/bin/sh\necho hi\n" {
		t.Fatalf("staged copy: %q %v", b, err)
	}
	// Reachable programs (and PATH lookups) run as given.
	p.Command = []string{"redis-server", "--port", "6379"}
	if cmd, _ := stagedCommand(p); cmd[0] != "redis-server" {
		t.Fatalf("PATH command rewritten to %q", cmd)
	}
}
