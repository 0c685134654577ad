package lab

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testDaemon is a daemon whose "meshguard" is /bin/sh, to exercise the system-process seam
// (controller, sidecars) without the real binary.
func testDaemon(t *testing.T) *Daemon {
	t.Helper()
	d, err := NewDaemon(DaemonConfig{StateDir: t.TempDir(), Self: "/bin/sh", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	d.st = &State{Version: stateVersion}
	return d
}

func TestStartSystemInNetnsWaitsForReadyLine(t *testing.T) {
	path, ns := testNetns(t, "mgtest-sys-")
	d := testDaemon(t)
	spec := SystemSpec{
		Name:      "sidecar:shop/web",
		Args:      []string{"-c", "readlink /proc/self/ns/net; echo sidecar ready; exec sleep 30"},
		Netns:     path,
		ReadyLine: "sidecar ready",
		Timeout:   10 * time.Second,
	}
	proc, err := d.startSystem(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if !proc.Alive() {
		t.Fatal("system process not running after ready")
	}
	killProc(proc)
	d.wg.Wait()
	if proc.Alive() {
		t.Fatal("system process survived killProc")
	}
	logb, err := os.ReadFile(filepath.Join(d.cfg.StateDir, "sidecar_shop_web.log"))
	if err != nil {
		t.Fatal(err)
	}
	id := ns.UniqueId()
	ino := id[strings.LastIndexByte(id, ':')+1 : len(id)-1]
	if !strings.Contains(string(logb), "net:["+ino+"]") || !strings.Contains(string(logb), "sidecar ready") {
		t.Fatalf("log does not show the pod netns %s and the ready line:\n%s", ino, logb)
	}
}

func TestStartSystemFailures(t *testing.T) {
	d := testDaemon(t)
	_, err := d.startSystem(context.Background(), SystemSpec{Name: "early", Args: []string{"-c", "echo boom; exit 3"}, ReadyLine: "ready", Timeout: 10 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("early exit: %v", err)
	}
	_, err = d.startSystem(context.Background(), SystemSpec{Name: "slow", Args: []string{"-c", "exec sleep 30"}, ReadyLine: "ready", Timeout: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "not ready within") {
		t.Fatalf("timeout: %v", err)
	}
	d.wg.Wait() // the slow process was killed, so its goroutines end
}
