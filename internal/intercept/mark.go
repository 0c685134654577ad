package intercept

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// MarkControl is a net.Dialer / net.ListenConfig Control that sets SO_MARK on the socket, so
// the redirect rules (Config.ExcludeMark) leave the sidecar's own connections alone: the
// tunnel to peers, passthrough egress and the DNS proxy's upstream queries. Setting a mark
// needs CAP_NET_ADMIN. mark 0 returns nil (no Control).
func MarkControl(mark int) func(network, address string, c syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("intercept: set SO_MARK %#x (needs CAP_NET_ADMIN): %w", mark, serr)
		}
		return nil
	}
}
