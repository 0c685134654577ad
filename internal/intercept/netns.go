package intercept

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on an OS thread switched into the network namespace at path ("" runs fn in the
// current namespace). Sockets fn creates stay in that namespace after Do returns, which is how
// a process in the host namespace opens listeners inside a pod. If the thread cannot be
// switched back it is left locked, so the Go runtime discards it instead of reusing it.
func Do(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("intercept: open netns %q: %w", path, err)
	}
	defer target.Close()

	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("intercept: current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("intercept: enter netns %q: %w", path, err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("intercept: return from netns %q: %w (after fn: %v)", path, err, fnErr)
	}
	runtime.UnlockOSThread()
	return fnErr
}
