package capture

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Proto is the transport a conversation is re-framed as.
type Proto uint8

const (
	TCP Proto = iota
	UDP
)

func (p Proto) String() string {
	if p == UDP {
		return "udp"
	}
	return "tcp"
}

// Conversation is one connection's recorded plaintext, ready to be re-framed as packets.
type Conversation struct {
	Proto    Proto
	Client   netip.AddrPort
	Server   netip.AddrPort
	Segments []Segment // in arrival order
	Closed   bool      // the connection ended while recorded: TCP gets a FIN exchange
}

// mss bounds each synthesized TCP segment's payload (Ethernet MTU minus IPv4+TCP headers);
// IPv6 headers are 20 bytes longer.
const (
	mss  = 1460
	mss6 = 1440
)

// maxUDPPayload is the largest payload a synthesized IPv4/UDP datagram carries.
const maxUDPPayload = 65507

type packet struct {
	at   time.Time
	data []byte
}

// WritePCAP writes the conversations as one Ethernet pcap: each TCP conversation gets a
// synthetic three-way handshake, per-direction sequence numbers that follow the recorded
// bytes, segments of at most MSS bytes, and a FIN exchange if it closed; UDP segments become
// one datagram each. Checksums are computed, so Wireshark and tshark validate them cleanly.
// Packets of all conversations are merged in time order.
func WritePCAP(w io.Writer, convs []Conversation) error {
	pw := pcapgo.NewWriterNanos(w)
	if err := pw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return fmt.Errorf("capture: write pcap header: %w", err)
	}
	var pkts []packet
	for i, c := range convs {
		ps, err := frame(c, uint32(i))
		if err != nil {
			return err
		}
		pkts = append(pkts, ps...)
	}
	sort.SliceStable(pkts, func(i, j int) bool { return pkts[i].at.Before(pkts[j].at) })
	for _, p := range pkts {
		ci := gopacket.CaptureInfo{Timestamp: p.at, CaptureLength: len(p.data), Length: len(p.data)}
		if err := pw.WritePacket(ci, p.data); err != nil {
			return fmt.Errorf("capture: write pcap packet: %w", err)
		}
	}
	return nil
}

// framer builds the packets of one conversation.
type framer struct {
	c        Conversation
	out      []packet
	cliMAC   net.HardwareAddr
	srvMAC   net.HardwareAddr
	seq, ack [2]uint32 // [0] client's next seq, [1] server's next seq
	err      error
}

func frame(c Conversation, n uint32) ([]packet, error) {
	if !c.Client.IsValid() || !c.Server.IsValid() {
		return nil, fmt.Errorf("capture: conversation needs valid client and server addresses, got %v -> %v", c.Client, c.Server)
	}
	if c.Client.Addr().Is4() != c.Server.Addr().Is4() {
		return nil, fmt.Errorf("capture: conversation mixes IPv4 and IPv6 (%v -> %v)", c.Client, c.Server)
	}
	f := &framer{
		c: c,
		// Locally administered MACs, distinct per conversation, so Wireshark's endpoint views work.
		cliMAC: net.HardwareAddr{0x02, 0x6d, 0x67, byte(n >> 8), byte(n), 0x01},
		srvMAC: net.HardwareAddr{0x02, 0x6d, 0x67, byte(n >> 8), byte(n), 0x02},
	}
	if c.Proto == UDP {
		for _, s := range c.Segments {
			d := s.Data
			if len(d) > maxUDPPayload {
				d = d[:maxUDPPayload]
			}
			f.udp(s.At(), s.FromClient, d)
		}
		return f.out, f.err
	}
	start := time.Unix(0, 0)
	if len(c.Segments) > 0 {
		start = c.Segments[0].Time
	}
	// Fixed ISNs keep output deterministic (golden files, diffs); they need not be secret.
	f.seq = [2]uint32{1000, 5000}
	t := start.Add(-3 * time.Microsecond)
	f.tcp(t, true, layers.TCP{SYN: true}, nil)
	f.seq[0]++
	t = t.Add(time.Microsecond)
	f.tcp(t, false, layers.TCP{SYN: true, ACK: true}, nil)
	f.seq[1]++
	t = t.Add(time.Microsecond)
	f.tcp(t, true, layers.TCP{ACK: true}, nil)
	segMax := mss
	if c.Client.Addr().Is6() {
		segMax = mss6
	}
	last := t
	for _, s := range c.Segments {
		at := s.At()
		if at.Before(last) {
			at = last
		}
		for d := s.Data; len(d) > 0; {
			n := min(len(d), segMax)
			f.tcp(at, s.FromClient, layers.TCP{ACK: true, PSH: n == len(d)}, d[:n])
			d = d[n:]
		}
		last = at
	}
	if c.Closed {
		t := last.Add(time.Microsecond)
		f.tcp(t, true, layers.TCP{FIN: true, ACK: true}, nil)
		f.seq[0]++
		f.tcp(t.Add(time.Microsecond), false, layers.TCP{FIN: true, ACK: true}, nil)
		f.seq[1]++
		f.tcp(t.Add(2*time.Microsecond), true, layers.TCP{ACK: true}, nil)
	}
	return f.out, f.err
}

// At is the segment's time.
func (s Segment) At() time.Time { return s.Time }

func (f *framer) endpoints(fromClient bool) (src, dst netip.AddrPort, smac, dmac net.HardwareAddr) {
	if fromClient {
		return f.c.Client, f.c.Server, f.cliMAC, f.srvMAC
	}
	return f.c.Server, f.c.Client, f.srvMAC, f.cliMAC
}

func (f *framer) tcp(at time.Time, fromClient bool, tcp layers.TCP, payload []byte) {
	src, dst, _, _ := f.endpoints(fromClient)
	me, peer := 1, 0
	if fromClient {
		me, peer = 0, 1
	}
	tcp.SrcPort, tcp.DstPort = layers.TCPPort(src.Port()), layers.TCPPort(dst.Port())
	tcp.Seq = f.seq[me]
	if tcp.ACK {
		tcp.Ack = f.seq[peer]
	}
	tcp.Window = 65535
	tcp.Options = nil
	if tcp.SYN {
		m := mss
		if src.Addr().Is6() {
			m = mss6
		}
		tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{byte(m >> 8), byte(m)}}}
	}
	f.emit(at, fromClient, layers.IPProtocolTCP, &tcp, payload)
	f.seq[me] += uint32(len(payload))
}

func (f *framer) udp(at time.Time, fromClient bool, payload []byte) {
	src, dst, _, _ := f.endpoints(fromClient)
	u := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	f.emit(at, fromClient, layers.IPProtocolUDP, u, payload)
}

type transport interface {
	gopacket.SerializableLayer
	SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
}

func (f *framer) emit(at time.Time, fromClient bool, proto layers.IPProtocol, tl transport, payload []byte) {
	if f.err != nil {
		return
	}
	src, dst, smac, dmac := f.endpoints(fromClient)
	eth := &layers.Ethernet{SrcMAC: smac, DstMAC: dmac}
	var ip interface {
		gopacket.SerializableLayer
		gopacket.NetworkLayer
	}
	if src.Addr().Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		s4, d4 := src.Addr().As4(), dst.Addr().As4()
		ip = &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, Flags: layers.IPv4DontFragment,
			SrcIP: net.IP(s4[:]), DstIP: net.IP(d4[:])}
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		s6, d6 := src.Addr().As16(), dst.Addr().As16()
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: net.IP(s6[:]), DstIP: net.IP(d6[:])}
	}
	if err := tl.SetNetworkLayerForChecksum(ip); err != nil {
		f.err = fmt.Errorf("capture: checksum layer: %w", err)
		return
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, tl, gopacket.Payload(payload)); err != nil {
		f.err = fmt.Errorf("capture: serialize packet: %w", err)
		return
	}
	f.out = append(f.out, packet{at: at, data: append([]byte(nil), buf.Bytes()...)})
}
