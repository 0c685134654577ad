package cli

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestReadSecretFileRefusesReadableByOthers(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "join-token")
	if err := os.WriteFile(p, []byte("tok-123\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readSecretFile(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("0644 token file: err %v, want a refusal naming the fix", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := readSecretFile(p)
	if err != nil || tok != "tok-123" {
		t.Fatalf("0600 token file: %q, %v", tok, err)
	}
	if err := os.WriteFile(p, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readSecretFile(p); err == nil {
		t.Fatal("empty token file accepted")
	}
}

func TestTuneRuntimeLeavesEnvironmentSettingsAlone(t *testing.T) {
	procs, gc, limit := runtime.GOMAXPROCS(0), debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		runtime.GOMAXPROCS(procs)
		debug.SetGCPercent(gc)
		debug.SetMemoryLimit(limit)
		runtime.MemProfileRate = 512 * 1024
	})
	none := func(string) string { return "" }
	tuneRuntime(none, 1, 37, 64<<20)
	if got, gcNow, limNow := runtime.GOMAXPROCS(0), debug.SetGCPercent(37), debug.SetMemoryLimit(-1); got != 1 || gcNow != 37 || limNow != 64<<20 {
		t.Fatalf("flags not applied: GOMAXPROCS %d, GOGC %d, limit %d", got, gcNow, limNow)
	}
	runtime.GOMAXPROCS(2)
	debug.SetGCPercent(100)
	debug.SetMemoryLimit(1 << 40)
	env := func(k string) string {
		return map[string]string{"GOMAXPROCS": "2", "GOGC": "100", "GOMEMLIMIT": "1TiB"}[k]
	}
	tuneRuntime(env, 1, 37, 64<<20)
	if got, gcNow, limNow := runtime.GOMAXPROCS(0), debug.SetGCPercent(100), debug.SetMemoryLimit(-1); got != 2 || gcNow != 100 || limNow != 1<<40 {
		t.Fatalf("environment overridden: GOMAXPROCS %d, GOGC %d, limit %d", got, gcNow, limNow)
	}
}
