package intercept

import (
	"encoding/binary"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// sockDestroy is SOCK_DESTROY from linux/sock_diag.h.
const sockDestroy = 21

// destroySocket kills one TCP socket of the current thread's network namespace, identified as
// sock_diag listed it (cookie included), for either address family. vishvananda/netlink's
// SocketDestroy only speaks IPv4, which would miss IPv6 and dual-stack (v4-mapped) sockets.
func destroySocket(family uint8, id netlink.SocketID) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(2e9)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	// nlmsghdr (16) + inet_diag_req_v2 (56)
	msg := make([]byte, 16+56)
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], sockDestroy)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(msg[8:], 1)
	req := msg[16:]
	req[0], req[1] = family, unix.IPPROTO_TCP
	ne.PutUint32(req[4:], 0xffffffff) // all states
	sid := req[8:]
	binary.BigEndian.PutUint16(sid[0:], id.SourcePort)
	binary.BigEndian.PutUint16(sid[2:], id.DestinationPort)
	putIP(sid[4:20], id.Source, family)
	putIP(sid[20:36], id.Destination, family)
	ne.PutUint32(sid[36:], id.Interface)
	ne.PutUint32(sid[40:], id.Cookie[0])
	ne.PutUint32(sid[44:], id.Cookie[1])
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	// The answer to a request with NLM_F_ACK is one NLMSG_ERROR message: error code 0 is success.
	if n >= 20 && ne.Uint16(buf[4:]) == unix.NLMSG_ERROR {
		if code := int32(ne.Uint32(buf[16:])); code != 0 {
			return fmt.Errorf("sock_destroy: %w", unix.Errno(-code))
		}
		return nil
	}
	return fmt.Errorf("sock_destroy: no acknowledgement")
}

func putIP(dst []byte, ip net.IP, family uint8) {
	if family == unix.AF_INET {
		copy(dst, ip.To4())
		return
	}
	copy(dst, ip.To16())
}
