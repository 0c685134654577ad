package intercept

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// QuarantineTable is the nftables table (family inet) that isolates a quarantined pod.
const QuarantineTable = "meshguard_quarantine"

// QuarantineResult says what Quarantine cut.
type QuarantineResult struct {
	SocketsKilled int // established TCP sockets (IPv4 and IPv6) destroyed in the namespace
}

// Quarantine cuts every packet in and out of the namespace at nsPath except loopback, while
// the workload keeps running for forensics. Established flows are cut too: the chains drop
// `ct state established,related` explicitly (a policy alone would, but the counter in the
// rule makes it visible), the conntrack table is flushed, and established non-loopback TCP
// sockets are destroyed (SOCK_DESTROY) so the app sees its connections fail at once instead of
// hanging. Socket destruction is best effort: a kernel without CONFIG_INET_DIAG_DESTROY still
// gets the drop rules, and the error says so.
func Quarantine(nsPath string) (QuarantineResult, error) {
	return QuarantineWith(nsPath, QuarantineOptions{})
}

// QuarantineOptions leaves a quarantined pod one way out: its sidecar's management channel to
// the controller (config stream, threat reports, capture uploads, SVID renewal), so the
// controller can still see and release it. Everything else stays cut.
type QuarantineOptions struct {
	// AllowMark is the SO_MARK of the sidecar's own sockets; only packets carrying it may use
	// the allowance, so the app cannot reach the controller by itself. 0 allows nothing.
	AllowMark uint32
	// AllowTo are the controller endpoints (TCP) the marked sockets may reach: outbound to
	// addr:port, and the established replies from addr:port back in.
	AllowTo []netip.AddrPort
}

func (o QuarantineOptions) validate() error {
	if len(o.AllowTo) > 0 && o.AllowMark == 0 {
		return errors.New("intercept: quarantine AllowTo needs AllowMark (the sidecar's socket mark); an unmarked allowance would let the app out")
	}
	for _, ap := range o.AllowTo {
		if !ap.IsValid() || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			return fmt.Errorf("intercept: quarantine AllowTo %v: want a concrete address and port", ap)
		}
	}
	return nil
}

// allows reports whether a TCP socket to dst:port uses the allowance.
func (o QuarantineOptions) allows(dst net.IP, port uint16) bool {
	a, ok := netip.AddrFromSlice(dst)
	if !ok || o.AllowMark == 0 {
		return false
	}
	return slices.Contains(o.AllowTo, netip.AddrPortFrom(a.Unmap(), port))
}

// QuarantineWith is Quarantine with an allowance for the sidecar's channel to the controller
// (see QuarantineOptions): marked TCP to AllowTo and its established replies pass, the
// conntrack entries and sockets of those flows survive.
func QuarantineWith(nsPath string, opts QuarantineOptions) (QuarantineResult, error) {
	var res QuarantineResult
	if err := opts.validate(); err != nil {
		return res, err
	}
	allow := make([]netip.AddrPort, len(opts.AllowTo))
	for i, ap := range opts.AllowTo {
		allow[i] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	opts.AllowTo = allow
	err := withConn(nsPath, func(c *nftables.Conn) error {
		t := resetTable(c, QuarantineTable)
		drop := nftables.ChainPolicyDrop
		for _, h := range []struct {
			name string
			hook *nftables.ChainHook
			lo   expr.MetaKey
		}{
			{"input", nftables.ChainHookInput, expr.MetaKeyIIFNAME},
			{"output", nftables.ChainHookOutput, expr.MetaKeyOIFNAME},
			{"forward", nftables.ChainHookForward, 0},
		} {
			ch := c.AddChain(&nftables.Chain{
				Name: h.name, Table: t, Type: nftables.ChainTypeFilter, Hooknum: h.hook,
				Priority: nftables.ChainPriorityRaw, Policy: &drop,
			})
			if h.lo != 0 {
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: cat(metaEq(h.lo, ifname("lo")), verdict(expr.VerdictAccept))})
			}
			for _, ap := range opts.AllowTo {
				switch h.hook {
				case nftables.ChainHookOutput:
					c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: cat(
						metaEq(expr.MetaKeyMARK, binaryutil.NativeEndian.PutUint32(opts.AllowMark)),
						addrPortEq(ap, false), verdict(expr.VerdictAccept))})
				case nftables.ChainHookInput:
					c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: cat(
						addrPortEq(ap, true), ctStateIn(expr.CtStateBitESTABLISHED), verdict(expr.VerdictAccept))})
				}
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
				&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
				&expr.Bitwise{
					SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
					Xor:  binaryutil.NativeEndian.PutUint32(0),
				},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
				&expr.Counter{},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}})
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}})
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("intercept: install quarantine table in netns %q: %w", nsPath, err)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	err = Do(nsPath, func() error {
		var errs []error
		// Conntrack flush: NAT/redirect state of the cut flows must not outlive them.
		if len(opts.AllowTo) == 0 {
			if err := netlink.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
				errs = append(errs, fmt.Errorf("flush conntrack: %w", err))
			}
		} else {
			// Keep the allowed flows' entries: a flushed entry would be picked up again from
			// the controller's next packet as NEW, which the input allowance refuses.
			for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
				if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, notAllowed{opts}); err != nil {
					errs = append(errs, fmt.Errorf("flush conntrack (family %d): %w", fam, err))
				}
			}
		}
		for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
			socks, err := netlink.SocketDiagTCP(family)
			if err != nil {
				errs = append(errs, fmt.Errorf("list tcp sockets (family %d): %w", family, err))
				continue
			}
			for _, s := range socks {
				if s.State != netlink.TCP_ESTABLISHED || s.ID.Destination.IsLoopback() || s.ID.Source.IsLoopback() ||
					opts.allows(s.ID.Destination, s.ID.DestinationPort) {
					continue
				}
				if err := destroySocket(family, s.ID); err != nil {
					errs = append(errs, fmt.Errorf("destroy socket %v:%d->%v:%d (kernel needs CONFIG_INET_DIAG_DESTROY): %w",
						s.ID.Source, s.ID.SourcePort, s.ID.Destination, s.ID.DestinationPort, err))
					continue
				}
				res.SocketsKilled++
			}
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return res, fmt.Errorf("intercept: quarantine of netns %q: drop rules installed, cutting established flows partly failed: %w", nsPath, err)
	}
	return res, nil
}

// Release lifts a quarantine; releasing a pod that is not quarantined is not an error.
func Release(nsPath string) error {
	return removeTable(nsPath, QuarantineTable)
}

// notAllowed matches the conntrack entries quarantine deletes: all but the allowance's.
type notAllowed struct{ o QuarantineOptions }

func (n notAllowed) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	return f.Forward.Protocol != unix.IPPROTO_TCP || !n.o.allows(f.Forward.DstIP, f.Forward.DstPort)
}

// addrPortEq matches TCP packets to ap (or, reply, from ap) in an inet table.
func addrPortEq(ap netip.AddrPort, reply bool) []expr.Any {
	family, addrOff, addrLen := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4) // IPv4 daddr
	if ap.Addr().Is6() {
		family, addrOff, addrLen = unix.NFPROTO_IPV6, 24, 16 // IPv6 daddr
	}
	portOff := uint32(2) // dport
	if reply {
		addrOff -= addrLen // saddr precedes daddr in both headers
		portOff = 0        // sport
	}
	return cat(metaEq(expr.MetaKeyNFPROTO, []byte{family}), l4proto(unix.IPPROTO_TCP), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: addrLen},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ap.Addr().AsSlice()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(ap.Port())},
	})
}

// ctStateIn matches packets whose conntrack state has one of the bits.
func ctStateIn(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}
