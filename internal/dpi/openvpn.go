package dpi

import "encoding/binary"

// OpenVPN recognises OpenVPN packets over UDP (one per datagram) and TCP (each prefixed by a
// 2-byte length): the opcode in the top 5 bits of the first byte and the key id in the low 3.
// A client opens with P_CONTROL_HARD_RESET_CLIENT_V2 (or V3 with tls-crypt-v2) carrying its
// 8-byte session id; data channel packets are reported by opcode only.
type OpenVPN struct{}

func (OpenVPN) Name() string          { return "openvpn" }
func (OpenVPN) Transports() Transport { return TCP | UDP }
func (OpenVPN) Ports() []uint16       { return []uint16{1194} }

func (OpenVPN) NewParser() Parser { return &ovpnParser{} }

var ovpnOps = [...]string{"", "P_CONTROL_HARD_RESET_CLIENT_V1", "P_CONTROL_HARD_RESET_SERVER_V1",
	"P_CONTROL_SOFT_RESET_V1", "P_CONTROL_V1", "P_ACK_V1", "P_DATA_V1",
	"P_CONTROL_HARD_RESET_CLIENT_V2", "P_CONTROL_HARD_RESET_SERVER_V2", "P_DATA_V2",
	"P_CONTROL_HARD_RESET_CLIENT_V3", "P_CONTROL_WKC_V1"}

const ovpnMaxPacket = 1 << 16

// ovpnResetOK: is b a plausible hard reset packet (opcode op, key id 0)? Without tls-auth it
// is 14 bytes (+ optional early-negotiation TLV); tls-auth/tls-crypt add an HMAC, packet id
// and time (up to ~100 bytes); tls-crypt-v2 appends the wrapped client key (up to 1 KiB).
func ovpnResetOK(b []byte, client bool) bool {
	if len(b) < 14 || len(b) > 1500 {
		return false
	}
	op := b[0] >> 3
	if b[0]&7 != 0 {
		return false
	}
	if client {
		if op != 7 && op != 10 && op != 1 {
			return false
		}
	} else if op != 8 && op != 2 {
		return false
	}
	// The opcode byte alone matches 1 random datagram in ~80: check the fields after the
	// 8-byte session id as they are laid out without a control-channel key, with tls-auth
	// (HMAC of 20, 32 or 64 bytes, then packet id and time) or with tls-crypt (packet id and
	// time first): a reset has a small packet id, a plausible time, few acks and message id 0.
	if ovpnPlainReset(b[9:]) {
		return true
	}
	for _, h := range [...]int{20, 32, 64} {
		if len(b) >= 9+h+8 && ovpnReplay(b[9+h:]) && ovpnPlainReset(b[9+h+8:]) {
			return true
		}
	}
	return ovpnReplay(b[9:])
}

// ovpnPlainReset: ack count (at most 8), the acked ids and remote session id, message id 0.
func ovpnPlainReset(b []byte) bool {
	if len(b) < 5 || b[0] > 8 {
		return false
	}
	n := 1
	if b[0] > 0 {
		n += int(b[0])*4 + 8
	}
	return len(b) >= n+4 && binary.BigEndian.Uint32(b[n:]) == 0
}

// ovpnReplay: the replay-protection packet id (small at the start of a session) and a Unix
// time after 2010.
func ovpnReplay(b []byte) bool {
	if len(b) < 8 {
		return false
	}
	id, t := binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
	return id > 0 && id < 1<<10 && t > 1262304000
}

func (OpenVPN) Detect(p *Probe) Verdict {
	c, s := p.Client, p.Server
	if p.Transport == TCP {
		c, s = ovpnTCPFirst(c), ovpnTCPFirst(s)
		if c == nil && len(p.Client) > 0 && len(p.Client) < 2 {
			return NeedMore
		}
	}
	if len(c) == 0 && len(s) == 0 {
		if p.Transport == TCP && len(p.Client) > 0 && len(p.Client) < 16 {
			return NeedMore
		}
		return No
	}
	if len(c) > 0 && ovpnResetOK(c, true) {
		if len(s) == 0 || ovpnResetOK(s, false) {
			return Yes
		}
		return Maybe
	}
	if len(c) == 0 && ovpnResetOK(s, false) {
		return Maybe
	}
	return No
}

// ovpnTCPFirst returns the first length-framed packet, or nil if incomplete or implausible.
func ovpnTCPFirst(b []byte) []byte {
	if len(b) < 2 {
		return nil
	}
	n := int(binary.BigEndian.Uint16(b))
	if n < 14 || len(b) < 2+n {
		return nil
	}
	return b[2 : 2+n]
}

type ovpnParser struct {
	r        [2]lenReasm
	tcp      [2]int8 // 0 unknown, 1 TCP framing, -1 datagrams
	msg      Message
	sc       scratch
	dataSeen [2]bool
}

func ovpnSize(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	n := int(binary.BigEndian.Uint16(b))
	if n == 0 {
		return -1
	}
	return 2 + n
}

func (p *ovpnParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	d := dir & 1
	if p.tcp[d] == 0 && len(data) > 0 {
		// Datagram or stream: opcode 0 does not exist, so a first byte below 8 is the high
		// byte of a TCP length prefix (packets under 2 KiB).
		p.tcp[d] = -1
		if data[0] < 8 {
			p.tcp[d] = 1
		}
	}
	if p.tcp[d] < 0 {
		p.packet(dir, data, emit)
		return nil
	}
	if !p.r[d].feed(data, ovpnSize, func(pk []byte, _ bool) { p.packet(dir, pk[2:], emit) }) {
		return errNotThisProtocol("openvpn")
	}
	return nil
}

func ovpnKnown(c byte) bool { op := c >> 3; return op >= 1 && op <= 11 }

func (p *ovpnParser) packet(dir Direction, b []byte, emit func(*Message)) {
	if len(b) < 1 || !ovpnKnown(b[0]) {
		return
	}
	op := b[0] >> 3
	if op == 6 || op == 9 { // data channel: report once per direction, it is the bulk
		if p.dataSeen[dir&1] {
			return
		}
		p.dataSeen[dir&1] = true
	}
	m := &p.msg
	p.sc.reset()
	m.Reset(dir, "packet")
	m.AddString(AttrCommand, ovpnOps[op])
	m.Add("key_id", p.sc.uint(uint64(b[0]&7)))
	if op != 6 && op != 9 && len(b) >= 9 {
		m.Add("session", p.sc.hex(b[1:9], 0))
	}
	emit(m)
}
