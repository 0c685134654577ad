// Package intercept installs the nftables rules that make a pod's sidecar transparent: the app's
// outbound TCP and DNS and the network's inbound TCP are redirected to the sidecar's listeners
// inside the pod's network namespace, and it quarantines a pod by dropping all of its traffic.
// Rules are programmed over netlink (google/nftables); nothing shells out to nft or iptables.
package intercept

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family inet) that holds the redirect rules.
const TableName = "meshguard"

// Config says which ports the sidecar listens on and which traffic must not be redirected.
type Config struct {
	// NetNSPath is the pod's network namespace (e.g. /var/run/netns/x or /proc/PID/ns/net);
	// empty means the namespace of the calling process.
	NetNSPath string

	OutboundPort uint16 // the app's outbound TCP is redirected here (required)
	InboundPort  uint16 // inbound TCP to app ports is redirected here (required)
	TunnelPort   uint16 // the mTLS tunnel port: never redirected (required)
	// DNSPort receives the app's outbound DNS (udp and tcp 53); 0 leaves DNS alone. The DNS
	// proxy must listen on 127.0.0.1 (and ::1), not the wildcard: answers have to leave from
	// the address the redirect delivered to, or conntrack cannot map them back to the
	// resolver the app asked. It forwards to its own upstream (the pod's resolv.conf server);
	// SO_ORIGINAL_DST does not exist for UDP.
	DNSPort uint16

	// The sidecar's own traffic: sockets owned by one of these uids, or carrying this
	// SO_MARK, leave the pod untouched. At least one of them is required, or the sidecar
	// would redirect its own connections back to itself.
	ExcludeUIDs []uint32
	ExcludeMark uint32

	// InboundPorts limits inbound capture to these app ports; empty means all ports except
	// ExcludeInboundPorts and the sidecar's own ports.
	InboundPorts         []uint16
	ExcludeInboundPorts  []uint16
	ExcludeOutboundPorts []uint16
}

func (c Config) validate() error {
	if c.OutboundPort == 0 || c.InboundPort == 0 || c.TunnelPort == 0 {
		return errors.New("intercept: outbound, inbound and tunnel ports are required (set OutboundPort, InboundPort, TunnelPort)")
	}
	ports := []uint16{c.OutboundPort, c.InboundPort, c.TunnelPort}
	if c.DNSPort != 0 {
		ports = append(ports, c.DNSPort)
	}
	for i, p := range ports {
		if slices.Contains(ports[i+1:], p) {
			return fmt.Errorf("intercept: port %d is used for two sidecar listeners; give outbound, inbound, tunnel and dns ports distinct values", p)
		}
	}
	if len(c.ExcludeUIDs) == 0 && c.ExcludeMark == 0 {
		return errors.New("intercept: set ExcludeUIDs or ExcludeMark so the sidecar's own traffic is not redirected to itself")
	}
	for _, p := range c.InboundPorts {
		if p == 0 {
			return errors.New("intercept: InboundPorts contains port 0")
		}
	}
	return nil
}

// Rules installs and removes the redirect table of one pod.
type Rules struct {
	cfg Config
}

// New validates cfg; it touches nothing in the kernel.
func New(cfg Config) (*Rules, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Rules{cfg: cfg}, nil
}

// Run installs the rules, waits for ctx to end and removes them.
func (r *Rules) Run(ctx context.Context) error {
	if err := r.Install(); err != nil {
		return err
	}
	<-ctx.Done()
	return r.Remove()
}

// Install replaces the meshguard table in the namespace atomically (one netlink batch), so it
// is idempotent and never leaves a half-programmed pod.
func (r *Rules) Install() error {
	return withConn(r.cfg.NetNSPath, func(c *nftables.Conn) error {
		t := resetTable(c, TableName)
		out := c.AddChain(&nftables.Chain{
			Name: "output", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest,
		})
		in := c.AddChain(&nftables.Chain{
			Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest,
		})
		for _, exprs := range r.outboundRules() {
			c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: exprs})
		}
		for _, exprs := range r.inboundRules() {
			c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: exprs})
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("intercept: install table %s in netns %q: %w", TableName, r.cfg.NetNSPath, err)
		}
		return nil
	})
}

// Remove deletes the meshguard table; removing an absent table is not an error.
func (r *Rules) Remove() error {
	return removeTable(r.cfg.NetNSPath, TableName)
}

func (r *Rules) outboundRules() [][]expr.Any {
	var rules [][]expr.Any
	// The sidecar's own sockets first: nothing it sends may loop back into it.
	for _, uid := range r.cfg.ExcludeUIDs {
		rules = append(rules, cat(metaEq(expr.MetaKeySKUID, binaryutil.NativeEndian.PutUint32(uid)), verdict(expr.VerdictReturn)))
	}
	if r.cfg.ExcludeMark != 0 {
		rules = append(rules, cat(metaEq(expr.MetaKeyMARK, binaryutil.NativeEndian.PutUint32(r.cfg.ExcludeMark)), verdict(expr.VerdictReturn)))
	}
	// DNS before the loopback exclusion: a resolver on 127.0.0.53 is still inspected.
	if r.cfg.DNSPort != 0 {
		rules = append(rules,
			cat(l4proto(unix.IPPROTO_UDP), dport(53), redirect(r.cfg.DNSPort)),
			cat(l4proto(unix.IPPROTO_TCP), dport(53), redirect(r.cfg.DNSPort)),
		)
	}
	// Anything leaving through lo (127/8, ::1 and the pod's own addresses) stays local.
	rules = append(rules, cat(metaEq(expr.MetaKeyOIFNAME, ifname("lo")), verdict(expr.VerdictReturn)))
	for _, p := range r.cfg.ExcludeOutboundPorts {
		rules = append(rules, cat(l4proto(unix.IPPROTO_TCP), dport(p), verdict(expr.VerdictReturn)))
	}
	rules = append(rules, cat(l4proto(unix.IPPROTO_TCP), redirect(r.cfg.OutboundPort)))
	return rules
}

func (r *Rules) inboundRules() [][]expr.Any {
	rules := [][]expr.Any{cat(metaEq(expr.MetaKeyIIFNAME, ifname("lo")), verdict(expr.VerdictReturn))}
	own := []uint16{r.cfg.TunnelPort, r.cfg.InboundPort, r.cfg.OutboundPort}
	if r.cfg.DNSPort != 0 {
		own = append(own, r.cfg.DNSPort)
	}
	for _, p := range append(own, r.cfg.ExcludeInboundPorts...) {
		rules = append(rules, cat(l4proto(unix.IPPROTO_TCP), dport(p), verdict(expr.VerdictReturn)))
	}
	if len(r.cfg.InboundPorts) == 0 {
		return append(rules, cat(l4proto(unix.IPPROTO_TCP), redirect(r.cfg.InboundPort)))
	}
	for _, p := range r.cfg.InboundPorts {
		rules = append(rules, cat(l4proto(unix.IPPROTO_TCP), dport(p), redirect(r.cfg.InboundPort)))
	}
	return rules
}

// withConn runs fn with an nftables connection bound to the namespace at path ("" = current).
func withConn(path string, fn func(*nftables.Conn) error) error {
	var opts []nftables.ConnOption
	if path != "" {
		h, err := netns.GetFromPath(path)
		if err != nil {
			return fmt.Errorf("intercept: open netns %q: %w", path, err)
		}
		defer h.Close()
		opts = append(opts, nftables.WithNetNSFd(int(h)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("intercept: nftables connection in netns %q: %w", path, err)
	}
	defer c.CloseLasting()
	return fn(c)
}

// resetTable queues add+delete+add of the table: the batch succeeds whether or not it existed
// and leaves it empty.
func resetTable(c *nftables.Conn, name string) *nftables.Table {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: name}
	c.AddTable(t)
	c.DelTable(t)
	return c.AddTable(t)
}

func removeTable(path, name string) error {
	return withConn(path, func(c *nftables.Conn) error {
		t := &nftables.Table{Family: nftables.TableFamilyINet, Name: name}
		c.AddTable(t) // makes the delete succeed when the table is already gone
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("intercept: remove table %s in netns %q: %w", name, path, err)
		}
		return nil
	})
}

// TableExists reports whether the namespace at path has an inet table of that name.
func TableExists(path, name string) (bool, error) {
	var found bool
	err := withConn(path, func(c *nftables.Conn) error {
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			return fmt.Errorf("intercept: list tables in netns %q: %w", path, err)
		}
		for _, t := range tables {
			found = found || t.Name == name
		}
		return nil
	})
	return found, err
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func metaEq(key expr.MetaKey, val []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: val},
	}
}

func l4proto(proto byte) []expr.Any { return metaEq(expr.MetaKeyL4PROTO, []byte{proto}) }

// dport matches the destination port of TCP or UDP (same offset in both headers); it must
// follow an l4proto match.
func dport(p uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
	}
}

func redirect(p uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
		&expr.Redir{RegisterProtoMin: 1},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// ifname pads an interface name the way the kernel compares it (IFNAMSIZ bytes).
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}
