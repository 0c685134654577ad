package intercept

import (
	"errors"
	"fmt"

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
	var res QuarantineResult
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
		if err := netlink.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
			errs = append(errs, fmt.Errorf("flush conntrack: %w", err))
		}
		for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
			socks, err := netlink.SocketDiagTCP(family)
			if err != nil {
				errs = append(errs, fmt.Errorf("list tcp sockets (family %d): %w", family, err))
				continue
			}
			for _, s := range socks {
				if s.State != netlink.TCP_ESTABLISHED || s.ID.Destination.IsLoopback() || s.ID.Source.IsLoopback() {
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
