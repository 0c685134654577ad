package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// procStart returns the start time (clock ticks since boot) of pid, field 22 of /proc/PID/stat.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// comm (field 2) may contain spaces and parentheses: parse after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	fields := bytes.Fields(b[i+1:])
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 {
		return 0, errors.New("short /proc stat")
	}
	return strconv.ParseUint(string(fields[19]), 10, 64)
}

// ProcOf records a running process for the state file.
func ProcOf(pid int) Proc {
	st, _ := procStart(pid)
	return Proc{PID: pid, Start: st}
}

// Alive reports whether p is still the same running (non-zombie) process.
func (p Proc) Alive() bool {
	if p.PID <= 0 {
		return false
	}
	st, err := procStart(p.PID)
	if err != nil || st != p.Start {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// open returns a pidfd for p only if p is still the process recorded (pid reuse check after
// the open, so the fd cannot refer to a newer process).
func (p Proc) open() (int, error) {
	if p.PID <= 0 {
		return -1, os.ErrNotExist
	}
	fd, err := unix.PidfdOpen(p.PID, 0)
	if err != nil {
		return -1, err
	}
	st, err := procStart(p.PID)
	if err != nil || st != p.Start {
		unix.Close(fd)
		return -1, os.ErrNotExist
	}
	return fd, nil
}

// Signal sends sig to p if it is still the recorded process.
func (p Proc) Signal(sig unix.Signal) error {
	fd, err := p.open()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.PidfdSendSignal(fd, sig, nil, 0)
}

// WaitExit waits up to timeout for p to exit; true if it did (or was already gone).
func (p Proc) WaitExit(timeout time.Duration) bool {
	fd, err := p.open()
	if err != nil {
		return true
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left/time.Millisecond)+1)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}

// killProc stops p: SIGTERM, a bounded wait, then SIGKILL. A pod's process is PID 1 of its PID
// namespace, so killing it takes every process of the pod with it.
func killProc(p Proc) {
	if p.Signal(unix.SIGTERM) != nil {
		return
	}
	if p.WaitExit(3 * time.Second) {
		return
	}
	_ = p.Signal(unix.SIGKILL)
	p.WaitExit(5 * time.Second)
}

// DaemonAlive reports whether the state's daemon is running and really is a lab daemon.
func DaemonAlive(s *State) bool {
	if !s.Daemon.Alive() {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", s.Daemon.PID))
	return err == nil && bytes.Contains(b, []byte("lab\x00daemon"))
}
