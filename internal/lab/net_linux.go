package lab

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	ipForwardPath = "/proc/sys/net/ipv4/ip_forward"
	ipsDstNAT     = 1 << 5 // IPS_DST_NAT: conntrack status bit of a DNATed connection
)

// setupBridge creates the lab bridge with the gateway address and turns on IPv4 forwarding
// (pod → service VIP → pod is routed through the host). It returns the previous forwarding value.
func setupBridge(s *State) (string, error) {
	gw, pfx, err := gatewayPrefix(s)
	if err != nil {
		return "", err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: s.Bridge}}
	if err := netlink.LinkAdd(br); err != nil {
		return "", fmt.Errorf("create bridge %s: %w (is a stale lab running? try 'meshguard lab down')", s.Bridge, err)
	}
	link, err := netlink.LinkByName(s.Bridge)
	if err != nil {
		return "", fmt.Errorf("find bridge %s: %w", s.Bridge, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(pfx.Bits(), 32)}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return "", fmt.Errorf("address bridge %s: %w", s.Bridge, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return "", fmt.Errorf("bring up bridge %s: %w", s.Bridge, err)
	}
	// With br_netfilter loaded (Docker hosts), bridged pod-to-pod frames would traverse the
	// host's iptables FORWARD chain, whose policy may drop them: opt this bridge out. The file
	// exists only when br_netfilter is loaded.
	nfCall := filepath.Join("/sys/class/net", s.Bridge, "bridge", "nf_call_iptables")
	if _, err := os.Stat(nfCall); err == nil {
		if err := os.WriteFile(nfCall, []byte("0\n"), 0o644); err != nil {
			return "", fmt.Errorf("bridge %s: disable nf_call_iptables: %w", s.Bridge, err)
		}
	}
	was, err := os.ReadFile(ipForwardPath)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", ipForwardPath, err)
	}
	if err := os.WriteFile(ipForwardPath, []byte("1\n"), 0o644); err != nil {
		return "", fmt.Errorf("enable ip forwarding: %w", err)
	}
	return strings.TrimSpace(string(was)), nil
}

func gatewayPrefix(s *State) (netip.Addr, netip.Prefix, error) {
	gw, err := netip.ParseAddr(s.Gateway)
	if err != nil {
		return gw, netip.Prefix{}, fmt.Errorf("state gateway %q: %w", s.Gateway, err)
	}
	pfx, err := netip.ParsePrefix(s.PodCIDR)
	if err != nil {
		return gw, pfx, fmt.Errorf("state podCIDR %q: %w", s.PodCIDR, err)
	}
	return gw, pfx, nil
}

// newNamedNetns creates a network namespace bind-mounted at path without moving the calling
// goroutine's thread: the thread is locked, unshared, bind-mounted, and switched back. The lab
// keeps its netns files in its own dir rather than /run/netns: `ip netns` bind-mounts /run/netns
// over itself the first time it runs, which would hide mounts made there before.
func newNamedNetns(path string) (netns.NsHandle, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return netns.None(), err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return netns.None(), fmt.Errorf("create netns file %s: %w", path, err)
	}
	f.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return netns.None(), fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return netns.None(), fmt.Errorf("create netns: %w", err)
	}
	src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
	mountErr := unix.Mount(src, path, "none", unix.MS_BIND, "")
	if err := netns.Set(orig); err != nil {
		runtime.LockOSThread() // this thread is in the wrong netns: keep it locked so the runtime retires it
		return netns.None(), fmt.Errorf("return to host netns: %w", err)
	}
	if mountErr != nil {
		return netns.None(), fmt.Errorf("bind netns to %s: %w", path, mountErr)
	}
	return netns.GetFromPath(path)
}

// deleteNetns unmounts and removes a netns file; a file that is no longer a mount point (already
// unmounted, or hidden by a later mount) is just removed.
func deleteNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// setupPodNetwork gives a pod its netns, a veth pair onto the bridge, its address, loopback and a
// default route via the gateway.
func setupPodNetwork(s *State, p *PodState) error {
	gw, pfx, err := gatewayPrefix(s)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(p.IP)
	if err != nil {
		return fmt.Errorf("pod %s ip %q: %w", p.Key(), p.IP, err)
	}
	ns, err := newNamedNetns(p.Netns)
	if err != nil {
		return err
	}
	defer ns.Close()
	br, err := netlink.LinkByName(s.Bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", s.Bridge, err)
	}
	peer := "mgp" + strings.TrimPrefix(p.HostVeth, VethPrefix)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: p.HostVeth, MasterIndex: br.Attrs().Index},
		PeerName:      peer,
		PeerNamespace: netlink.NsFd(int(ns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s for pod %s: %w", p.HostVeth, p.Key(), err)
	}
	host, err := netlink.LinkByName(p.HostVeth)
	if err != nil {
		return fmt.Errorf("find veth %s: %w", p.HostVeth, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("bring up veth %s: %w", p.HostVeth, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in pod %s netns: %w", p.Key(), err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("pod %s loopback: %w", p.Key(), err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("pod %s loopback up: %w", p.Key(), err)
	}
	eth, err := h.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("pod %s veth: %w", p.Key(), err)
	}
	if err := h.LinkSetName(eth, "eth0"); err != nil {
		return fmt.Errorf("pod %s rename veth: %w", p.Key(), err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(pfx.Bits(), 32)}}
	if err := h.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("pod %s address: %w", p.Key(), err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("pod %s eth0 up: %w", p.Key(), err)
	}
	route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice()}
	if err := h.RouteAdd(route); err != nil {
		return fmt.Errorf("pod %s default route: %w", p.Key(), err)
	}
	return nil
}

// installServices writes the lab's nftables table: DNAT from each service VIP:port to its
// endpoints (random choice, kube-proxy style), and masquerade of DNATed traffic that leaves on
// the bridge, so replies from a pod to a pod come back through the host and are un-NATed.
func installServices(s *State) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	podCIDR, err := netip.ParsePrefix(s.PodCIDR)
	if err != nil {
		return err
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: s.NFTTable})
	svc := c.AddChain(&nftables.Chain{Name: "services", Table: t})
	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	for _, ch := range []*nftables.Chain{pre, out} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Verdict{Kind: expr.VerdictJump, Chain: svc.Name},
		}})
	}
	if err := addServiceDNAT(c, t, svc, s.Services); err != nil {
		return err
	}
	// ct status dnat, oifname bridge, ip saddr podCIDR -> masquerade (hairpin).
	mask := net.CIDRMask(podCIDR.Bits(), 32)
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: nativeU32(ipsDstNAT), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(s.Bridge)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: podCIDR.Masked().Addr().AsSlice()},
		&expr.Masq{},
	}})
	// Accept forwarding on the bridge, in case another table's policy would drop it.
	for _, key := range []expr.MetaKey{expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME} {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
			&expr.Meta{Key: key, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(s.Bridge)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table %s: %w", s.NFTTable, err)
	}
	return nil
}

// addServiceDNAT adds to chain one DNAT rule per service port and endpoint.
func addServiceDNAT(c *nftables.Conn, t *nftables.Table, chain *nftables.Chain, services []ServiceState) error {
	for _, sv := range services {
		vip, err := netip.ParseAddr(sv.VIP)
		if err != nil {
			return fmt.Errorf("service %s vip %q: %w", sv.Key(), sv.VIP, err)
		}
		n := len(sv.Endpoints)
		for _, sp := range sv.Ports {
			for i, ep := range sv.Endpoints {
				epIP, err := netip.ParseAddr(ep)
				if err != nil {
					return fmt.Errorf("service %s endpoint %q: %w", sv.Key(), ep, err)
				}
				ex := matchVIPPort(vip, sp.Port)
				if remaining := n - i; remaining > 1 {
					// Endpoint i wins with probability 1/remaining: uniform over endpoints.
					ex = append(ex,
						&expr.Numgen{Register: 1, Modulus: uint32(remaining), Type: unix.NFT_NG_RANDOM},
						&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil32(0)},
					)
				}
				ex = append(ex,
					&expr.Immediate{Register: 1, Data: epIP.AsSlice()},
					&expr.Immediate{Register: 2, Data: binaryutil16(sp.TargetPort)},
					&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
				)
				c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: ex})
			}
		}
	}
	return nil
}

// installPodServices gives a pod without a sidecar the service DNAT in its own netns (output
// hook): its connections to a VIP then go straight to the endpoint with the pod's own source
// address, instead of through the host, whose hairpin masquerade would hide the source from
// the destination's sidecar (a PERMISSIVE pod could not say who sent the plaintext). The
// table goes with the netns.
func installPodServices(s *State, p *PodState) error {
	ns, err := netns.GetFromPath(p.Netns)
	if err != nil {
		return fmt.Errorf("pod %s netns: %w", p.Key(), err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return fmt.Errorf("pod %s nftables: %w", p.Key(), err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: s.NFTTable})
	out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	if err := addServiceDNAT(c, t, out, s.Services); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("pod %s: install nftables table %s: %w", p.Key(), s.NFTTable, err)
	}
	return nil
}

func matchVIPPort(vip netip.Addr, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: vip.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil16(port)},
	}
}

func binaryutil16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func binaryutil32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
func nativeU32(v uint32) []byte    { return binary.NativeEndian.AppendUint32(nil, v) }

func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

// Cleanup removes everything a lab made, from the state (when there is one) and by name:
// processes (verified by start time), the nftables table, veths, netns mounts, the bridge, and
// the state dir. Safe to run twice and after a crash; it returns the problems it could not fix.
func Cleanup(dir string, s *State) error {
	var errs []error
	// Without (or beyond) the state: the lab's daemon and processes, found by their marks.
	var wg sync.WaitGroup
	for _, p := range labMarkedProcs(dir) {
		wg.Add(1)
		go func() { defer wg.Done(); killProc(p) }()
	}
	wg.Wait()
	if s != nil {
		for _, sp := range s.System {
			killProc(sp.Proc)
		}
		for _, p := range s.Pods {
			if p.SidecarProc != nil {
				killProc(*p.SidecarProc)
			}
			killProc(p.Proc)
		}
	}
	if c, err := nftables.New(); err == nil {
		if tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4); err == nil {
			for _, t := range tables {
				if t.Name == NFTTable {
					c.DelTable(t)
					if err := c.Flush(); err != nil {
						errs = append(errs, fmt.Errorf("delete nftables table %s: %w", NFTTable, err))
					}
				}
			}
		}
	}
	links, err := netlink.LinkList()
	if err == nil {
		for _, l := range links {
			name := l.Attrs().Name
			if strings.HasPrefix(name, VethPrefix) && l.Type() == "veth" {
				if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
					errs = append(errs, fmt.Errorf("delete veth %s: %w", name, err))
				}
			}
		}
	}
	for _, d := range []string{NetnsDir, "/run/netns"} { // /run/netns: labs of earlier versions
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		// Processes still inside a lab netns are the lab's, even when the state lost them.
		var inodes []uint64
		for _, e := range ents {
			var st unix.Stat_t
			if strings.HasPrefix(e.Name(), NetnsPrefix) && unix.Stat(filepath.Join(d, e.Name()), &st) == nil {
				inodes = append(inodes, st.Ino)
			}
		}
		var wg sync.WaitGroup
		for _, p := range procsInNetns(inodes) {
			wg.Add(1)
			go func() { // stragglers: the graceful stop (if any) already happened
				defer wg.Done()
				if p.Signal(unix.SIGKILL) == nil {
					p.WaitExit(5 * time.Second)
				}
			}()
		}
		wg.Wait()
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), NetnsPrefix) {
				if err := deleteNetns(filepath.Join(d, e.Name())); err != nil {
					errs = append(errs, fmt.Errorf("delete netns %s: %w", e.Name(), err))
				}
			}
		}
	}
	if l, err := netlink.LinkByName(BridgeName); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", BridgeName, err))
		}
	}
	if s != nil && s.IPForwardWas != "" && s.IPForwardWas != "1" {
		if err := os.WriteFile(ipForwardPath, []byte(s.IPForwardWas+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore ip forwarding: %w", err))
		}
	}
	for _, d := range []string{dir, PodsDir(dir)} {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove lab dir %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// procsInNetns lists the processes whose network namespace is one of inodes.
func procsInNetns(inodes []uint64) []Proc {
	if len(inodes) == 0 {
		return nil
	}
	want := make(map[string]bool, len(inodes))
	for _, ino := range inodes {
		want["net:["+strconv.FormatUint(ino, 10)+"]"] = true
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if link, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && want[link] {
			out = append(out, ProcOf(pid))
		}
	}
	return out
}

// LabMarkEnv marks the environment of every process a lab daemon starts (pods, system
// processes), with the lab's state dir as value, so cleanup finds them even when the state
// file is gone.
const LabMarkEnv = "MESHGUARD_LAB_MARK"

// labMarkedProcs finds the lab daemon of dir (by its command line) and the processes it
// started (by LabMarkEnv).
func labMarkedProcs(dir string) []Proc {
	daemonArgs := []byte("\x00lab\x00daemon\x00--state-dir\x00" + dir + "\x00")
	mark := []byte(LabMarkEnv + "=" + dir + "\x00")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		environ, _ := os.ReadFile("/proc/" + e.Name() + "/environ")
		if bytes.Contains(cmdline, daemonArgs) || bytes.HasPrefix(environ, mark) || bytes.Contains(environ, append([]byte{0}, mark...)) {
			out = append(out, ProcOf(pid))
		}
	}
	return out
}
