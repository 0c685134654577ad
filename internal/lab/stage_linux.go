package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/meshguard/meshguard/internal/fileutil"
)

// stagedCommand returns the command a pod runs. A program given by path that the pod's user
// cannot reach (a checkout under a private 0700 directory, say) is first copied into the pod's
// own directory, read-only for the pod: the command runs unchanged instead of failing with
// "permission denied" inside the pod.
func stagedCommand(p *PodState) ([]string, error) {
	prog := p.Command[0]
	if !strings.Contains(prog, "/") || reachable(prog, p.UID, p.GID) {
		return p.Command, nil
	}
	dir := filepath.Join(p.Dir, ".cmd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("pod %s: stage %s: %w", p.Key(), prog, err)
	}
	dst := filepath.Join(dir, filepath.Base(prog))
	data, err := os.ReadFile(prog)
	if err == nil {
		err = fileutil.WriteAtomic(dst, data, 0o755)
	}
	if err != nil {
		return nil, fmt.Errorf("pod %s: stage %s: %w", p.Key(), prog, err)
	}
	return append([]string{dst}, p.Command[1:]...), nil
}

// reachable says whether uid may read and execute path: search permission on every directory
// on the way and read+execute on the file (groups approximated by the primary gid, which can
// only make it stage a file that did not need it).
func reachable(path string, uid, gid uint32) bool {
	if uid == 0 {
		return true
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	fi, err := os.Stat(abs)
	if err != nil || !allows(fi, uid, gid, 5) {
		return false
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || !allows(fi, uid, gid, 1) {
			return false
		}
		if d == "/" {
			return true
		}
	}
}

// allows checks the permission bits (r=4, w=2, x=1) that apply to uid/gid on fi.
func allows(fi os.FileInfo, uid, gid uint32, bits os.FileMode) bool {
	mode := fi.Mode().Perm()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		switch {
		case st.Uid == uid:
			mode >>= 6
		case st.Gid == gid:
			mode >>= 3
		}
	}
	return mode&bits == bits
}
