package dpi

import (
	"errors"
	"strconv"
)

// MQTT parses MQTT 3.1, 3.1.1 and 5: CONNECT (protocol level, client id, user; never the
// password or will payload), CONNACK (return code), PUBLISH (topic, QoS; never the payload),
// SUBSCRIBE/UNSUBSCRIBE (topic filters) and DISCONNECT.
type MQTT struct{}

func (MQTT) Name() string          { return "mqtt" }
func (MQTT) Transports() Transport { return TCP }
func (MQTT) Ports() []uint16       { return []uint16{1883, 8883} }

func (MQTT) Detect(p *Probe) Verdict {
	c := p.Client
	if len(c) == 0 {
		if p.Midstream && mqttPackets(p.Server, true) {
			return Maybe
		}
		return No
	}
	if c[0] != 0x10 {
		if p.Midstream && mqttPackets(c, false) {
			return Maybe
		}
		return No
	}
	// Remaining length (1-4 bytes), then the protocol name.
	i := 1
	for i < len(c) && i < 5 && c[i]&0x80 != 0 {
		i++
	}
	i++
	if i > 5 {
		return No
	}
	rest := c[min(i, len(c)):]
	for _, name := range [...]string{"\x00\x04MQTT", "\x00\x06MQIsdp"} {
		n := min(len(rest), len(name))
		if string(rest[:n]) == name[:n] {
			if n == len(name) {
				return Yes
			}
			return NeedMore
		}
	}
	return No
}

// mqttPackets recognises bytes seen from the middle: whole packets of the side's types with
// their mandated flags, PUBLISH topics printable, at least one PUBLISH, SUBSCRIBE or SUBACK.
func mqttPackets(b []byte, server bool) bool {
	seen, whole := false, 0
	for len(b) > 0 {
		n := mqttSize(b)
		if n <= 0 || n > len(b) {
			// A truncated last packet is fine after two whole ones (one whole packet and any
			// tail is too easy for random bytes to match); garbage is not.
			return seen && n >= 0 && whole >= 2
		}
		whole++
		pkt := b[:n]
		b = b[n:]
		i := 1
		for pkt[i]&0x80 != 0 { // mqttSize checked the length is at most 4 bytes
			i++
		}
		body := pkt[i+1:]
		switch t := pkt[0]; {
		case t>>4 == 3:
			if len(body) < 2 {
				return false
			}
			tl := int(body[0])<<8 | int(body[1])
			if tl == 0 || 2+tl > len(body) {
				return false
			}
			for _, c := range body[2 : 2+tl] {
				if c < 0x20 || c == 0x7f {
					return false
				}
			}
			seen = true
		case !server && (t == 0x82 || t == 0xa2) || server && (t == 0x90 || t == 0xb0):
			seen = true
		case t == 0x40 || t == 0x50 || t == 0x62 || t == 0x70 || !server && (t == 0xc0 || t == 0xe0) ||
			server && (t == 0x20 || t == 0xd0):
		default:
			return false
		}
	}
	return seen
}

// NewParser returns a parser for one connection.
func (MQTT) NewParser() Parser { return &mqttParser{level: 4} }

var errMQTTGarbage = errors.New("mqtt: malformed packet")

type mqttParser struct {
	r     [2]lenReasm
	level byte // protocol level from CONNECT: 3, 4 or 5
	msg   Message
	num   [2][8]byte
}

func mqttSize(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	if b[0]>>4 == 0 {
		return -1
	}
	n, mul := 0, 1
	for i := 1; i < 5; i++ {
		if i >= len(b) {
			return 0
		}
		n += int(b[i]&0x7f) * mul
		if b[i]&0x80 == 0 {
			return i + 1 + n
		}
		mul *= 128
	}
	return -1
}

func (p *mqttParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	dir &= 1
	ok := p.r[dir].feed(data, mqttSize, func(b []byte, whole bool) { p.packet(dir, b, emit) })
	if !ok {
		return errMQTTGarbage
	}
	return nil
}

func (p *mqttParser) packet(dir Direction, b []byte, emit func(*Message)) {
	i := 1
	for i < len(b) && i < 4 && b[i]&0x80 != 0 {
		i++
	}
	r := mqttReader{b: b[i+1:]}
	m := &p.msg
	typ, flags := b[0]>>4, b[0]&15
	switch typ {
	case 1: // CONNECT
		r.str() // protocol name
		lv := r.byte()
		cf := r.byte()
		r.skip(2) // keep alive
		if lv == 3 || lv == 4 || lv == 5 {
			p.level = lv
		}
		if p.level == 5 {
			r.props()
		}
		m.Reset(dir, "connect")
		m.Add(AttrVersion, strconv.AppendUint(p.num[0][:0], uint64(lv), 10))
		m.Add(AttrClientID, capBytes(r.str(), 128))
		if cf&0x04 != 0 { // will
			if p.level == 5 {
				r.props()
			}
			m.Add("will_topic", capBytes(r.str(), 128))
			r.str() // will payload
		}
		if cf&0x80 != 0 && r.b != nil {
			m.Add(AttrUser, capBytes(r.str(), 128))
		}
		emit(m)
	case 2: // CONNACK
		r.skip(1)
		m.Reset(dir, "connack")
		m.Add(AttrStatus, strconv.AppendUint(p.num[0][:0], uint64(r.byte()), 10))
		emit(m)
	case 3: // PUBLISH
		m.Reset(dir, "publish")
		m.Add(AttrTopic, capBytes(r.str(), 256))
		m.Add("qos", strconv.AppendUint(p.num[0][:0], uint64(flags>>1&3), 10))
		if flags&1 != 0 {
			m.AddString("retain", "true")
		}
		emit(m)
	case 8, 10: // SUBSCRIBE, UNSUBSCRIBE
		r.skip(2)
		if p.level == 5 {
			r.props()
		}
		m.Reset(dir, "subscribe")
		if typ == 10 {
			m.Reset(dir, "unsubscribe")
		}
		for r.b != nil && len(r.b) > 0 {
			t := r.str()
			if t == nil {
				break
			}
			m.Add(AttrTopic, capBytes(t, 256))
			if typ == 8 {
				r.skip(1)
			}
		}
		emit(m)
	case 14: // DISCONNECT
		m.Reset(dir, "disconnect")
		emit(m)
	}
}

// mqttReader reads MQTT fields; an overrun leaves b nil and yields nil values.
type mqttReader struct{ b []byte }

func (r *mqttReader) skip(n int) {
	if n > len(r.b) {
		r.b = nil
		return
	}
	r.b = r.b[n:]
}

func (r *mqttReader) byte() byte {
	if len(r.b) == 0 {
		r.b = nil
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *mqttReader) str() []byte {
	if len(r.b) < 2 {
		r.b = nil
		return nil
	}
	n := int(r.b[0])<<8 | int(r.b[1])
	if 2+n > len(r.b) {
		r.b = nil
		return nil
	}
	v := r.b[2 : 2+n : 2+n]
	r.b = r.b[2+n:]
	return v
}

// props skips an MQTT 5 property block (a variable-length size, then the properties).
func (r *mqttReader) props() {
	n, mul := 0, 1
	for i := 0; i < 4; i++ {
		c := r.byte()
		if r.b == nil {
			return
		}
		n += int(c&0x7f) * mul
		if c&0x80 == 0 {
			r.skip(n)
			return
		}
		mul *= 128
	}
	r.b = nil
}
