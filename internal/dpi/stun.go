package dpi

import "encoding/binary"

// STUN is RFC 5389/8489 STUN (and TURN, which uses its framing) over UDP and TCP: 20-byte
// header with the magic cookie, method and class, then TLV attributes. Reports the method,
// class, SOFTWARE, error code and XOR-MAPPED-ADDRESS. USERNAME, MESSAGE-INTEGRITY and other
// credentials are never read. TURN ChannelData frames are skipped.
type STUN struct{}

func (STUN) Name() string          { return "stun" }
func (STUN) Transports() Transport { return TCP | UDP }
func (STUN) Ports() []uint16       { return []uint16{3478, 3479, 5349, 19302} }
func (STUN) NewParser() Parser     { return &stunParser{} }

const stunCookie = 0x2112A442

// stunSize returns the message size if b starts a STUN message, 0 if too short, -1 if not.
func stunSize(b []byte) int {
	if len(b) < 8 {
		if len(b) > 0 && b[0]&0xc0 != 0 {
			return -1
		}
		return 0
	}
	if b[0]&0xc0 != 0 || binary.BigEndian.Uint32(b[4:]) != stunCookie {
		return -1
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if n%4 != 0 {
		return -1
	}
	return 20 + n
}

func stunMethod(t uint16) (method uint16, class uint8) {
	method = t&0x000f | (t&0x00e0)>>1 | (t&0x3e00)>>2
	class = uint8(t>>4&1 | t>>7&2)
	return
}

var stunClasses = [...]string{"request", "indication", "success", "error"}

func stunMethodName(m uint16) string {
	switch m {
	case 0x001:
		return "Binding"
	case 0x003:
		return "Allocate"
	case 0x004:
		return "Refresh"
	case 0x006:
		return "Send"
	case 0x007:
		return "Data"
	case 0x008:
		return "CreatePermission"
	case 0x009:
		return "ChannelBind"
	case 0x00a:
		return "Connect"
	case 0x00b:
		return "ConnectionBind"
	case 0x00c:
		return "ConnectionAttempt"
	}
	return ""
}

func (STUN) Detect(p *Probe) Verdict {
	v := No
	for _, b := range [][]byte{p.Client, p.Server} {
		if len(b) == 0 {
			continue
		}
		n := stunSize(b)
		if n < 0 {
			return No
		}
		if n == 0 {
			v = max(v, NeedMore)
			continue
		}
		m, _ := stunMethod(binary.BigEndian.Uint16(b))
		if stunMethodName(m) == "" {
			return No
		}
		if p.Transport == UDP && n != len(b) {
			return No
		}
		return Yes
	}
	return v
}

type stunParser struct {
	r   [2]lenReasm
	msg Message
	sc  scratch
}

// stunFrameSize sizes STUN messages and TURN ChannelData (channel 0x4000-0x7fff, padded to 4
// bytes over TCP) in a stream.
func stunFrameSize(b []byte) int {
	if len(b) >= 1 && b[0]&0xc0 == 0x40 {
		if len(b) < 4 {
			return 0
		}
		n := 4 + int(binary.BigEndian.Uint16(b[2:]))
		return (n + 3) &^ 3
	}
	return stunSize(b)
}

func (p *stunParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	r := &p.r[dir&1]
	if n := stunSize(data); n > 0 && n == len(data) && len(r.buf) == 0 && r.skip == 0 {
		p.message(dir, data, emit) // a datagram (or a segment holding exactly one message)
		return nil
	}
	if len(data) > 0 && data[0]&0xc0 == 0x40 && len(r.buf) == 0 && r.skip == 0 {
		if n := stunFrameSize(data); n == len(data) || n-len(data) < 4 && n > len(data) {
			return nil // a ChannelData datagram
		}
	}
	if !r.feed(data, stunFrameSize, func(b []byte, _ bool) {
		if b[0]&0xc0 == 0 {
			p.message(dir, b, emit)
		}
	}) {
		return errNotThisProtocol("stun")
	}
	return nil
}

func (p *stunParser) message(dir Direction, b []byte, emit func(*Message)) {
	if len(b) < 20 {
		return
	}
	method, class := stunMethod(binary.BigEndian.Uint16(b))
	name := stunMethodName(method)
	m := &p.msg
	p.sc.reset()
	m.Reset(dir, stunClasses[class])
	if name != "" {
		m.AddString(AttrMethod, name)
	} else {
		m.Add(AttrMethod, p.sc.uint(uint64(method)))
	}
	attrs := b[20:]
	for i := 0; i < 64 && len(attrs) >= 4; i++ {
		t := binary.BigEndian.Uint16(attrs)
		n := int(binary.BigEndian.Uint16(attrs[2:]))
		v := attrs[4:]
		if n > len(v) {
			n = len(v)
		}
		v = v[:n]
		switch t {
		case 0x8022: // SOFTWARE
			m.Add(AttrSoftware, capBytes(v, 128))
		case 0x0009: // ERROR-CODE: class*100 + number
			if len(v) >= 4 {
				m.Add(AttrStatus, p.sc.uint(uint64(v[2]&7)*100+uint64(v[3])))
			}
		case 0x0020: // XOR-MAPPED-ADDRESS (IPv4 only here)
			if len(v) >= 8 && v[1] == 1 {
				var ip [4]byte
				binary.BigEndian.PutUint32(ip[:], binary.BigEndian.Uint32(v[4:])^stunCookie)
				m.Add("mapped", p.sc.ipv4(ip[:]))
			}
		case 0x0014: // REALM: not a secret, tells which service
			m.Add("realm", capBytes(v, 128))
		}
		adv := 4 + (n+3)&^3
		if adv > len(attrs) {
			break
		}
		attrs = attrs[adv:]
	}
	emit(m)
}
