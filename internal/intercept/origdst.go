package intercept

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OriginalDst returns the destination a redirected connection was addressed to before nftables
// rewrote it (SO_ORIGINAL_DST for IPv4, IP6T_SO_ORIGINAL_DST for IPv6).
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("intercept: original destination: %w", err)
	}
	local, _ := c.LocalAddr().(*net.TCPAddr)
	v6 := local != nil && local.IP.To4() == nil
	var (
		dst    netip.AddrPort
		sysErr error
	)
	err = raw.Control(func(fd uintptr) { dst, sysErr = originalDst(int(fd), v6) })
	if err == nil {
		err = sysErr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("intercept: original destination of %v (was it redirected by nftables?): %w", c.LocalAddr(), err)
	}
	return dst, nil
}

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h (absent
// from x/sys/unix); it shares SO_ORIGINAL_DST's value at level SOL_IPV6.
const ip6tSOOriginalDst = 80

func originalDst(fd int, v6 bool) (netip.AddrPort, error) {
	if v6 {
		var sa unix.RawSockaddrInet6
		if err := getsockopt(fd, unix.SOL_IPV6, ip6tSOOriginalDst, unsafe.Pointer(&sa), unix.SizeofSockaddrInet6); err != nil {
			return netip.AddrPort{}, err
		}
		if sa.Family != unix.AF_INET6 {
			return netip.AddrPort{}, errors.New("not an IPv6 address")
		}
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), ntohs(sa.Port)), nil
	}
	var sa unix.RawSockaddrInet4
	if err := getsockopt(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), unix.SizeofSockaddrInet4); err != nil {
		return netip.AddrPort{}, err
	}
	if sa.Family != unix.AF_INET {
		return netip.AddrPort{}, errors.New("not an IPv4 address")
	}
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port)), nil
}

func getsockopt(fd, level, opt int, p unsafe.Pointer, size uint32) error {
	l := size
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return syscall.Errno(e)
	}
	return nil
}

// ntohs converts the network-order port stored in a raw sockaddr.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}
