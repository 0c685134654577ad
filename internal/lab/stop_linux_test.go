package lab

import (
	"io"
	"log/slog"
	"os/exec"
	"testing"
	"time"
)

// A child whose start time was not recorded (Proc.Start == 0) used to be skipped by teardown,
// which then waited for it forever: `lab down` hung. The daemon stops its own children
// through their *os.Process.
func TestStopChildWithoutStartTime(t *testing.T) {
	d, err := NewDaemon(DaemonConfig{StateDir: t.TempDir(), Self: "/bin/false", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("sleep: %v", err)
	}
	reaped := d.track(cmd.Process)
	waited := make(chan struct{})
	go func() { _ = cmd.Wait(); reaped(); close(waited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-waited })

	killProc(Proc{PID: cmd.Process.Pid}) // the old path: refuses an unverifiable pid
	select {
	case <-waited:
		t.Fatal("killProc signalled a pid it could not verify")
	default:
	}
	start := time.Now()
	d.stop(Proc{PID: cmd.Process.Pid})
	select {
	case <-waited:
	case <-time.After(stopGrace + killWait):
		t.Fatal("child without a recorded start time survived stop")
	}
	if took := time.Since(start); took > stopGrace {
		t.Errorf("stop took %v: SIGTERM should end sleep at once", took)
	}
	if _, ok := d.children[cmd.Process.Pid]; ok {
		t.Error("reaped child still tracked")
	}
	d.stop(Proc{PID: cmd.Process.Pid}) // reaped: falls back to the pid check, returns at once
}
