package inspect

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/meshguard/meshguard/internal/dpi"
)

// Link, network and transport headers are walked by hand rather than with gopacket's layer
// decoders: we need a handful of fields per packet and this path runs for every frame of
// captures of hundreds of megabytes.

type packetInfo struct {
	src, dst   netip.AddrPort
	transport  dpi.Transport
	seq        uint32
	ack        uint32
	flags      uint8 // TCP flags
	payload    []byte
	cut        int // TCP payload bytes the IP header promises but the capture's snaplen cut off
	ipProtocol uint8
	inner      layers.LinkType // link type of p.payload for ipTunnel
	// Set when the packet was reassembled from IP fragments: the frames and wire bytes it
	// spanned (the flow counts them all); zero otherwise.
	frames, wireLen uint64
}

// ipResult says what decodeIP made of a packet.
type ipResult uint8

const (
	ipBad      ipResult = iota // malformed: truncated or inconsistent headers
	ipOther                    // a valid IP packet of a protocol we do not follow
	ipOK                       // p is filled
	ipFragment                 // a fragment was held for reassembly; nothing to do yet
	ipTunnel                   // GRE: p.payload is a frame of link type p.inner
)

// decodeGRE returns the frame a GRE packet carries (RFC 2784/2890; ERSPAN II and III).
func decodeGRE(b []byte) ([]byte, layers.LinkType, bool) {
	if len(b) < 4 {
		return nil, 0, false
	}
	flags, proto := binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
	if flags&0x4007 != 0 { // routing present, or not version 0 (PPTP's enhanced GRE)
		return nil, 0, false
	}
	n := 4
	for _, bit := range []uint16{0x8000, 0x2000, 0x1000} { // checksum, key, sequence
		if flags&bit != 0 {
			n += 4
		}
	}
	if len(b) < n {
		return nil, 0, false
	}
	b = b[n:]
	switch proto {
	case 0x0800, 0x86dd:
		return b, layers.LinkTypeRaw, true
	case 0x6558: // transparent Ethernet bridging (NVGRE, Linux gretap)
		return b, layers.LinkTypeEthernet, true
	case 0x88be: // ERSPAN type II: 8-byte header
		if len(b) < 8 {
			return nil, 0, false
		}
		return b[8:], layers.LinkTypeEthernet, true
	case 0x22eb: // ERSPAN type III: 12 bytes, 8 more with the platform-specific subheader
		if len(b) < 12 {
			return nil, 0, false
		}
		h := 12
		if b[11]&1 != 0 {
			h += 8
		}
		if len(b) < h {
			return nil, 0, false
		}
		return b[h:], layers.LinkTypeEthernet, true
	}
	return nil, 0, false
}

// vxlanInner returns the Ethernet frame of a VXLAN packet (UDP 4789, or Linux's old 8472).
func vxlanInner(p *packetInfo) ([]byte, bool) {
	if dp := p.dst.Port(); dp != 4789 && dp != 8472 {
		return nil, false
	}
	b := p.payload
	if len(b) < 8+14 || b[0]&0x08 == 0 || b[0]&^0x0c != 0 || b[7] != 0 {
		return nil, false
	}
	return b[8:], true
}

// maxEncap bounds tunnels inside tunnels.
const maxEncap = 3

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// Link types not named in every gopacket version.
const (
	linkTypeLinuxSLL2 layers.LinkType = 276
)

// decodeLink finds the IP packet in a frame.
func decodeLink(lt layers.LinkType, b []byte) (ip []byte, ok bool) {
	var etype uint16
	switch lt {
	case layers.LinkTypeEthernet:
		if len(b) < 14 {
			return nil, false
		}
		etype, b = binary.BigEndian.Uint16(b[12:]), b[14:]
	case layers.LinkTypeLinuxSLL:
		if len(b) < 16 {
			return nil, false
		}
		etype, b = binary.BigEndian.Uint16(b[14:]), b[16:]
	case linkTypeLinuxSLL2:
		if len(b) < 20 {
			return nil, false
		}
		etype, b = binary.BigEndian.Uint16(b[0:]), b[20:]
	case layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6, 12, 14:
		return b, len(b) > 0
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		if len(b) < 4 {
			return nil, false
		}
		return b[4:], true // the family field's byte order varies; the IP version nibble tells
	default:
		return nil, false
	}
	for etype == 0x8100 || etype == 0x88a8 || etype == 0x9100 { // VLAN tags, QinQ
		if len(b) < 4 {
			return nil, false
		}
		etype, b = binary.BigEndian.Uint16(b[2:]), b[4:]
	}
	if etype == 0x8847 || etype == 0x8848 { // MPLS: labels until bottom of stack, then IP
		for i := 0; ; i++ {
			if len(b) < 4 || i == 16 {
				return nil, false
			}
			bottom := b[2]&1 != 0
			b = b[4:]
			if bottom {
				break
			}
		}
		if len(b) == 0 || b[0]>>4 != 4 && b[0]>>4 != 6 {
			return nil, false // a pseudowire carrying Ethernet: not followed
		}
		return b, true
	}
	if etype != 0x0800 && etype != 0x86dd {
		return nil, false
	}
	return b, true
}

// decodeIP fills p from an IPv4 or IPv6 packet. Fragments go to d (when not nil) and come
// out as one packet once the datagram is complete; without d, fragments are not decoded.
func decodeIP(b []byte, p *packetInfo, d *defragger, ts time.Time, wireLen int) ipResult {
	if len(b) < 1 {
		return ipBad
	}
	var proto uint8
	var srcA, dstA netip.Addr
	ipCut := 0 // bytes of the IP packet beyond the captured frame
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return ipBad
		}
		ihl := int(b[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(b[2:]))
		if ihl < 20 || len(b) < ihl {
			return ipBad
		}
		if total >= ihl && total < len(b) {
			b = b[:total] // drop Ethernet padding
		}
		if total > len(b) {
			ipCut = total - len(b)
		}
		proto = b[9]
		srcA, dstA = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		if ff := binary.BigEndian.Uint16(b[6:]); ff&0x3fff != 0 { // MF or an offset: a fragment
			if d == nil || ipCut > 0 {
				return ipOther // a fragment cut by the snaplen can never be completed
			}
			k := fragKey{src: srcA, dst: dstA, id: uint32(binary.BigEndian.Uint16(b[4:])), proto: proto}
			full, n, wl, done := d.add(k, int(ff&0x1fff)*8, ff&0x2000 != 0, b[ihl:], ts, wireLen)
			if !done {
				return ipFragment
			}
			b, p.frames, p.wireLen = full, n, wl
		} else {
			b = b[ihl:]
		}
	case 6:
		if len(b) < 40 {
			return ipBad
		}
		plen := int(binary.BigEndian.Uint16(b[4:]))
		proto = b[6]
		srcA, dstA = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		b = b[40:]
		if plen > 0 && plen < len(b) {
			b = b[:plen]
		}
		if plen > len(b) {
			ipCut = plen - len(b)
		}
	ext:
		for i := 0; i < 8; i++ { // extension headers
			switch proto {
			case 0, 43, 60:
				if len(b) < 8 {
					return ipBad
				}
				l := (int(b[1]) + 1) * 8
				if len(b) < l {
					return ipBad
				}
				proto, b = b[0], b[l:]
				continue
			case 44:
				if len(b) < 8 {
					return ipBad
				}
				fo := binary.BigEndian.Uint16(b[2:])
				if fo&0xfff9 == 0 { // an atomic fragment (offset 0, no more): just a header
					proto, b = b[0], b[8:]
					continue
				}
				if d == nil || ipCut > 0 {
					return ipBad
				}
				k := fragKey{src: srcA, dst: dstA, id: binary.BigEndian.Uint32(b[4:]), proto: b[0]}
				full, n, wl, done := d.add(k, int(fo&0xfff8), fo&1 != 0, b[8:], ts, wireLen)
				if !done {
					return ipFragment
				}
				proto, b, p.frames, p.wireLen = b[0], full, n, wl
				continue
			}
			break ext
		}
	default:
		return ipBad
	}
	p.ipProtocol = proto
	ipPayload := len(b) + ipCut
	switch proto {
	case 6:
		if len(b) < 20 {
			return ipBad
		}
		off := int(b[12]>>4) * 4
		if off < 20 || len(b) < off {
			return ipBad
		}
		p.transport = dpi.TCP
		p.src = netip.AddrPortFrom(srcA, binary.BigEndian.Uint16(b[0:]))
		p.dst = netip.AddrPortFrom(dstA, binary.BigEndian.Uint16(b[2:]))
		p.seq, p.ack = binary.BigEndian.Uint32(b[4:]), binary.BigEndian.Uint32(b[8:])
		p.flags = b[13]
		p.payload = b[off:]
		p.cut = ipPayload - off - len(p.payload)
	case 17:
		if len(b) < 8 {
			return ipBad
		}
		p.transport = dpi.UDP
		p.src = netip.AddrPortFrom(srcA, binary.BigEndian.Uint16(b[0:]))
		p.dst = netip.AddrPortFrom(dstA, binary.BigEndian.Uint16(b[2:]))
		l := int(binary.BigEndian.Uint16(b[4:]))
		if l >= 8 && l < len(b) {
			b = b[:l]
		}
		p.payload = b[8:]
	case 47:
		if inner, lt, ok := decodeGRE(b); ok {
			p.payload, p.inner = inner, lt
			return ipTunnel
		}
		return ipOther
	case 1, 58:
		p.transport = dpi.ICMP
		p.src, p.dst = netip.AddrPortFrom(srcA, 0), netip.AddrPortFrom(dstA, 0)
		p.payload = b
	default:
		return ipOther
	}
	return ipOK
}

type flowKey struct {
	t      dpi.Transport
	lo, hi netip.AddrPort
}

func keyOf(p *packetInfo) flowKey {
	a, b := p.src, p.dst
	if b.Compare(a) < 0 {
		a, b = b, a
	}
	return flowKey{p.transport, a, b}
}

type flow struct {
	client, server netip.AddrPort
	transport      dpi.Transport
	df             *dpi.Flow
	packets, bytes uint64
	half           [2]tcpHalf
	closed         bool // both FINs or a RST: the next SYN starts a new flow
}

type table struct {
	cfg     Config
	flows   map[flowKey]*flow
	order   []*flow
	dropped uint64
	p       packetInfo
	defrag  *defragger
	// malformed counts frames whose IP or transport header is truncated or inconsistent:
	// skipped, the capture goes on.
	malformed uint64
}

func newTable(cfg Config) *table {
	return &table{cfg: cfg, flows: make(map[flowKey]*flow), defrag: newDefragger()}
}

// packet processes one frame captured at ts; it reports whether the frame was decoded (a
// fragment held for reassembly counts as decoded).
func (t *table) packet(lt layers.LinkType, data []byte, wireLen int, ts time.Time) bool {
	return t.frame(lt, data, wireLen, ts, 0)
}

// frame is packet at a depth of tunnels: GRE and VXLAN are decapsulated and the inner flow
// is inspected (cloud captures are full of them); the tunnel itself is not reported.
func (t *table) frame(lt layers.LinkType, data []byte, wireLen int, ts time.Time, depth int) bool {
	ip, ok := decodeLink(lt, data)
	if !ok {
		return false
	}
	if wireLen < len(data) {
		wireLen = len(data)
	}
	p := &t.p
	*p = packetInfo{}
	switch decodeIP(ip, p, t.defrag, ts, wireLen) {
	case ipBad:
		t.malformed++
		return false
	case ipOther:
		return false
	case ipFragment:
		return true
	case ipTunnel:
		if depth >= maxEncap {
			return false
		}
		return t.frame(p.inner, p.payload, wireLen, ts, depth+1)
	}
	if p.transport == dpi.UDP && depth < maxEncap {
		if inner, ok := vxlanInner(p); ok {
			outer := *p
			if t.frame(layers.LinkTypeEthernet, inner, wireLen, ts, depth+1) {
				return true
			}
			*p = outer // not VXLAN after all: inspect it as the UDP flow it is
		}
	}
	if p.frames > 0 { // reassembled from fragments: count every frame it took
		wireLen = int(p.wireLen)
	}
	k := keyOf(p)
	f := t.flows[k]
	if f != nil && f.closed && p.transport == dpi.TCP && p.flags&(tcpSYN|tcpACK) == tcpSYN {
		f.df.Close()
		f = nil // port reuse: a new connection
	}
	if f == nil {
		if len(t.flows) >= t.cfg.MaxFlows {
			if t.dropped == 0 {
				t.cfg.Log.Warn("flow table full: new flows are counted but not inspected",
					"max_flows", t.cfg.MaxFlows)
			}
			t.dropped++
			return true
		}
		f = t.newFlow(p)
		t.flows[k] = f
		t.order = append(t.order, f)
	}
	f.packets += max(p.frames, 1)
	f.bytes += uint64(wireLen)
	dir := dpi.ClientToServer
	if p.src != f.client {
		dir = dpi.ServerToClient
	}
	if p.transport == dpi.TCP {
		f.tcp(dir, p)
	} else {
		f.df.Feed(dir, p.payload)
	}
	return true
}

func (t *table) newFlow(p *packetInfo) *flow {
	f := &flow{client: p.src, server: p.dst, transport: p.transport}
	midstream := false
	switch p.transport {
	case dpi.TCP:
		switch {
		case p.flags&(tcpSYN|tcpACK) == tcpSYN:
		case p.flags&(tcpSYN|tcpACK) == tcpSYN|tcpACK:
			f.client, f.server = p.dst, p.src
		default:
			midstream = true
			if t.serverSide(dpi.TCP, p.src.Port(), p.dst.Port()) {
				f.client, f.server = p.dst, p.src
			}
		}
	case dpi.UDP:
		// The first datagram usually comes from the client; a reply seen first (the query
		// was missed) comes from a well-known or privileged port.
		sp, dp := p.src.Port(), p.dst.Port()
		if t.cfg.Engine.WellKnown(dpi.UDP, sp) && !t.cfg.Engine.WellKnown(dpi.UDP, dp) ||
			sp < 1024 && dp >= 1024 {
			f.client, f.server = p.dst, p.src
		}
	}
	f.df = t.cfg.Engine.NewFlow(dpi.FlowInfo{
		Transport: p.transport, ServerPort: f.server.Port(), Midstream: midstream,
	}, nil)
	return f
}

// serverSide guesses, for a flow whose start was missed, whether port a (rather than b) is the
// server's: one a protocol claims, else a privileged one, else one outside the ephemeral
// ranges (Linux 32768-60999, IANA/Windows 49152-65535), else the lower.
func (t *table) serverSide(tr dpi.Transport, a, b uint16) bool {
	if ka, kb := t.cfg.Engine.WellKnown(tr, a), t.cfg.Engine.WellKnown(tr, b); ka != kb {
		return ka
	}
	if (a < 1024) != (b < 1024) {
		return a < 1024
	}
	if ea, eb := a >= 32768, b >= 32768; ea != eb {
		return eb
	}
	return a < b
}

func (t *table) finish() []Report {
	out := make([]Report, 0, len(t.order))
	for _, f := range t.order {
		for d := range f.half {
			f.half[d].flush(f, dpi.Direction(d))
		}
		f.df.Close()
		proto := f.df.Protocol()
		out = append(out, Report{
			Src:       endpointString(f.client, f.transport),
			Dst:       endpointString(f.server, f.transport),
			Transport: transportName(f.transport, f.client.Addr()),
			Protocol:  proto,
			L7:        f.df.Summary(),
			Packets:   f.packets,
			Bytes:     f.bytes,
			Mismatch:  f.df.Mismatch(),
		})
	}
	return out
}

func transportName(t dpi.Transport, a netip.Addr) string {
	if t == dpi.ICMP && a.Is6() && !a.Is4In6() {
		return "icmpv6"
	}
	return t.String()
}
