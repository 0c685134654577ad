package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// PodPath is the PATH pods get.
const PodPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// PodInitConfig is what `meshguard lab pod-init` needs to turn itself into a pod's command.
type PodInitConfig struct {
	Netns    string // netns path to join
	Hostname string
	Dir      string // per-pod dir holding resolv.conf and hosts; the command's working dir
	UID, GID uint32
	Command  []string
	ReadyFD  int // if > 0: "ok" is written here right before exec, when the pod is in place
}

// PodInit runs as PID 1 of a fresh PID, mount and UTS namespace (the daemon starts it with those
// clone flags): it makes mounts private, mounts /proc for the new PID namespace, bind-mounts the
// pod's resolv.conf and hosts, sets the hostname, joins the pod's network namespace, drops to the
// pod's uid and execs the command. It returns only on error.
func PodInit(cfg PodInitConfig) error {
	if len(cfg.Command) == 0 {
		return fmt.Errorf("pod-init: no command (give it after --)")
	}
	// setns(CLONE_NEWNET) affects only this thread; exec keeps this thread's namespaces.
	runtime.LockOSThread()
	if cfg.ReadyFD > 0 {
		unix.CloseOnExec(cfg.ReadyFD) // the pod's command must not inherit it
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("pod-init: make mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("pod-init: mount /proc: %w", err)
	}
	for _, f := range []string{"resolv.conf", "hosts"} {
		src := filepath.Join(cfg.Dir, f)
		if err := unix.Mount(src, "/etc/"+f, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pod-init: bind %s on /etc/%s: %w", src, f, err)
		}
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return fmt.Errorf("pod-init: hostname: %w", err)
	}
	fd, err := unix.Open(cfg.Netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("pod-init: open netns %s: %w", cfg.Netns, err)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("pod-init: join netns %s: %w", cfg.Netns, err)
	}
	unix.Close(fd)
	if err := os.Chdir(cfg.Dir); err != nil {
		return fmt.Errorf("pod-init: chdir %s: %w", cfg.Dir, err)
	}
	prog := cfg.Command[0]
	if !strings.Contains(prog, "/") {
		os.Setenv("PATH", PodPath)
		p, err := exec.LookPath(prog)
		if err != nil {
			return fmt.Errorf("pod-init: command %q not found in %s: %w", prog, PodPath, err)
		}
		prog = p
	}
	// Go's syscall.Set* apply to every thread of the process.
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("pod-init: setgroups: %w", err)
	}
	if err := syscall.Setgid(int(cfg.GID)); err != nil {
		return fmt.Errorf("pod-init: setgid %d: %w", cfg.GID, err)
	}
	if err := syscall.Setuid(int(cfg.UID)); err != nil {
		return fmt.Errorf("pod-init: setuid %d: %w", cfg.UID, err)
	}
	if cfg.ReadyFD > 0 {
		if _, err := unix.Write(cfg.ReadyFD, []byte("ok\n")); err != nil {
			return fmt.Errorf("pod-init: report ready: %w", err)
		}
	}
	return syscall.Exec(prog, cfg.Command, os.Environ())
}
