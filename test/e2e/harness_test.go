// Package e2e drives the real meshguard binary the way a user does. The harness (this file)
// builds or finds the binary, starts controllers and runs CLI verbs; other e2e tests reuse it.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/api"
)

// bin is the meshguard binary under test: $MESHGUARD_BIN, else built once in TestMain.
var bin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	bin = os.Getenv("MESHGUARD_BIN")
	if bin == "" {
		dir, err := os.MkdirTemp("", "meshguard-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "meshguard")
		build := exec.Command("go", "build", "-o", bin, "github.com/meshguard/meshguard/cmd/meshguard")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: go build:", err)
			return 1
		}
	}
	return m.Run()
}

// Controller is a running `meshguard controller`.
type Controller struct {
	DataDir string
	Admin   api.AdminConfig
	cmd     *exec.Cmd
	logs    *syncBuffer
	exited  chan struct{} // closed when the process has exited
	exitErr error         // valid after exited is closed
	stop    sync.Once
}

// ConfigPath is the admin.conf other verbs take with --config.
func (c *Controller) ConfigPath() string { return filepath.Join(c.DataDir, "admin.conf") }

// Logs returns everything the controller logged so far.
func (c *Controller) Logs() string { return c.logs.String() }

// StartController runs a controller on free loopback ports with dataDir (a new temp dir if
// empty), waits (bounded) for its "ready" line, and stops it when the test ends.
func StartController(t *testing.T, dataDir string, extraArgs ...string) *Controller {
	t.Helper()
	if dataDir == "" {
		dataDir = filepath.Join(t.TempDir(), "data")
	}
	args := append([]string{"controller", "--data-dir", dataDir, "--listen-api", "127.0.0.1:0", "--listen-identity", "127.0.0.1:0"}, extraArgs...)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &Controller{DataDir: dataDir, cmd: cmd, logs: &syncBuffer{}, exited: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			c.logs.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "ready") {
				once.Do(func() { close(ready) })
			}
		}
		c.exitErr = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() { c.Stop(t) })
	select {
	case <-ready:
	case <-c.exited:
		t.Fatalf("controller exited before ready: %v\n%s", c.exitErr, c.Logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("controller not ready after 30s:\n%s", c.Logs())
	}
	if c.Admin, err = api.LoadAdminConfig(c.ConfigPath()); err != nil {
		t.Fatal(err)
	}
	return c
}

// Stop sends SIGTERM and waits (bounded) for a clean exit (status 0); safe to call twice.
func (c *Controller) Stop(t *testing.T) {
	t.Helper()
	c.stop.Do(func() {
		select {
		case <-c.exited:
			t.Errorf("controller had already exited: %v\n%s", c.exitErr, c.Logs())
			return
		default:
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
			if c.exitErr != nil {
				t.Errorf("controller exit after SIGTERM: %v\n%s", c.exitErr, c.Logs())
			}
		case <-time.After(15 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
			t.Errorf("controller ignored SIGTERM for 15s:\n%s", c.Logs())
		}
	})
}

// Result is a finished CLI invocation.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Run runs `meshguard args...` with a bounded timeout.
func Run(t *testing.T, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.Code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("meshguard %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// MustRun runs and fails the test on a non-zero exit.
func MustRun(t *testing.T, args ...string) Result {
	t.Helper()
	r := Run(t, args...)
	if r.Code != 0 {
		t.Fatalf("meshguard %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// CLI runs a verb against this controller with --config.
func (c *Controller) CLI(t *testing.T, args ...string) Result {
	t.Helper()
	return Run(t, append([]string{"--config", c.ConfigPath()}, args...)...)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) WriteString(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(v)
}

// Write makes it an io.Writer for a command's output read while the command runs.
func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
