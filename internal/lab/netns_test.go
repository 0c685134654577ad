package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// testNetns creates a network namespace for the test, bind-mounted at NetnsDir/PREFIX<pid> and
// removed at cleanup; it skips the test unless root.
func testNetns(t *testing.T, prefix string) (string, netns.NsHandle) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	path := filepath.Join(NetnsDir, prefix+strconv.Itoa(os.Getpid()))
	ns, err := newNamedNetns(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ns.Close()
		_ = deleteNetns(path)
	})
	return path, ns
}

// TestStartInNetns checks the seam sidecars use: a process started with startIn lives in the
// given network namespace, and the caller's thread stays in the host's.
func TestStartInNetns(t *testing.T) {
	path, ns := testNetns(t, "mgtest-")
	want, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("readlink", "/proc/self/ns/net")
	var out strings.Builder
	cmd.Stdout = &out
	if err := startIn(path, cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	var st = ns.UniqueId() // "NS(dev:ino)"
	got := strings.TrimSpace(out.String())
	if got == want {
		t.Fatalf("child ran in the host netns %s", got)
	}
	if ino := st[strings.LastIndexByte(st, ':')+1 : len(st)-1]; !strings.Contains(got, "["+ino+"]") {
		t.Fatalf("child netns %s, want inode %s", got, ino)
	}
	if now, _ := os.Readlink("/proc/self/ns/net"); now != want {
		t.Fatalf("host netns changed: %s → %s", want, now)
	}
}
