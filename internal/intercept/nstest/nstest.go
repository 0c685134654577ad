// Package nstest builds throwaway network namespaces for tests that need real kernel
// networking: two namespaces joined by a veth pair, removed when the test ends.
package nstest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Pair is two network namespaces, A and B, linked by a veth (A: 10.x.y.1/24, B: 10.x.y.2/24),
// each with lo up.
type Pair struct {
	A, B     string     // netns paths (/proc/PID/fd/FD), usable with intercept.Do, intercept.Config, nsenter
	AIP, BIP netip.Addr // IPv4 addresses of the veth ends
	AIP6     netip.Addr // IPv6 (ULA, no duplicate address detection, usable at once)
	BIP6     netip.Addr
	VethA    string // the veth end inside A (capture on it to see what leaves the pod)
	VethB    string
}

var seq atomic.Uint32

// NewPair creates the namespaces or skips the test when not root; cleanup is registered on t.
func NewPair(t testing.TB) *Pair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veth links and nftables rules")
	}
	n := seq.Add(1)
	pid := os.Getpid()
	tag := fmt.Sprintf("%d%d", pid%100000, n)
	hA, pathA := newNS(t)
	hB, pathB := newNS(t)

	// 10.200-253.x.0/24 from the pid and sequence, so parallel test binaries rarely collide;
	// the namespaces are private anyway, so a collision would be harmless.
	third := byte(n)
	second := byte(200 + pid%50)
	p := &Pair{
		A:    pathA,
		B:    pathB,
		AIP:  netip.AddrFrom4([4]byte{10, second, third, 1}),
		BIP:  netip.AddrFrom4([4]byte{10, second, third, 2}),
		AIP6: netip.AddrFrom16([16]byte{0xfd, 0x6d, 0x67, second, third, 15: 1}),
		BIP6: netip.AddrFrom16([16]byte{0xfd, 0x6d, 0x67, second, third, 15: 2}),
	}
	vethA, vethB := "v"+tag+"a", "v"+tag+"b"
	p.VethA, p.VethB = vethA, vethB
	la := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: vethA, Namespace: netlink.NsFd(hA)}, PeerName: vethB, PeerNamespace: netlink.NsFd(hB)}
	if err := netlink.LinkAdd(la); err != nil {
		t.Fatalf("nstest: add veth: %v", err)
	}
	macA := setup(t, hA, vethA, p.AIP, p.AIP6)
	macB := setup(t, hB, vethB, p.BIP, p.BIP6)
	// Static neighbours: IPv6 neighbour discovery on a fresh link takes about a second, which
	// tests would otherwise see as a flaky first connection.
	neighbours(t, hA, vethA, macB, p.BIP, p.BIP6)
	neighbours(t, hB, vethB, macA, p.AIP, p.AIP6)
	return p
}

// newNS makes an anonymous namespace held by an fd; its path is /proc/PID/fd/FD, which
// intercept.Do, nftables and nsenter all accept. Nothing is mounted, so nothing can leak: a
// bind mount under /run/netns copied into another mount namespace (another process's pod) could
// not be removed while that process lives.
func newNS(t testing.TB) (netns.NsHandle, string) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("nstest: current netns: %v", err)
	}
	defer orig.Close()
	h, err := netns.New() // also switches this thread into it
	if err != nil {
		t.Fatalf("nstest: new netns: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatalf("nstest: back to original netns: %v", err)
	}
	t.Cleanup(func() { h.Close() }) // the last reference: the namespace and its veth end go away
	return h, fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(h))
}

func setup(t testing.TB, h netns.NsHandle, link string, ip, ip6 netip.Addr) net.HardwareAddr {
	t.Helper()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("nstest: netlink handle: %v", err)
	}
	defer nh.Close()
	lo, err := nh.LinkByName("lo")
	if err != nil {
		t.Fatalf("nstest: lo: %v", err)
	}
	if err := nh.LinkSetUp(lo); err != nil {
		t.Fatalf("nstest: lo up: %v", err)
	}
	l, err := nh.LinkByName(link)
	if err != nil {
		t.Fatalf("nstest: %s: %v", link, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(24, 32)}}
	if err := nh.AddrAdd(l, addr); err != nil {
		t.Fatalf("nstest: address %v on %s: %v", ip, link, err)
	}
	addr6 := &netlink.Addr{IPNet: &net.IPNet{IP: ip6.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
	if err := nh.AddrAdd(l, addr6); err != nil {
		t.Fatalf("nstest: address %v on %s: %v", ip6, link, err)
	}
	if err := nh.LinkSetUp(l); err != nil {
		t.Fatalf("nstest: %s up: %v", link, err)
	}
	return l.Attrs().HardwareAddr
}

func neighbours(t testing.TB, h netns.NsHandle, link string, mac net.HardwareAddr, ips ...netip.Addr) {
	t.Helper()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("nstest: netlink handle: %v", err)
	}
	defer nh.Close()
	l, err := nh.LinkByName(link)
	if err != nil {
		t.Fatalf("nstest: %s: %v", link, err)
	}
	for _, ip := range ips {
		n := &netlink.Neigh{LinkIndex: l.Attrs().Index, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: mac}
		if err := nh.NeighSet(n); err != nil {
			t.Fatalf("nstest: neighbour %v on %s: %v", ip, link, err)
		}
	}
}
