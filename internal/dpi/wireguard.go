package dpi

import "encoding/binary"

// WireGuard recognises the four WireGuard message types by their type byte, zero reserved
// bytes and exact sizes: handshake initiation (148), response (92), cookie reply (64) and
// transport data (16-byte header + padded ciphertext). Reports the type and sender/receiver
// indexes; everything else is encrypted.
type WireGuard struct{}

func (WireGuard) Name() string          { return "wireguard" }
func (WireGuard) Transports() Transport { return UDP }
func (WireGuard) Ports() []uint16       { return []uint16{51820} }
func (WireGuard) NewParser() Parser     { return &wgParser{} }

// wgType returns the message type name, or "" if b is not a WireGuard message.
func wgType(b []byte) string {
	if len(b) < 16 || b[1] != 0 || b[2] != 0 || b[3] != 0 {
		return ""
	}
	switch {
	case b[0] == 1 && len(b) == 148:
		return "handshake_initiation"
	case b[0] == 2 && len(b) == 92:
		return "handshake_response"
	case b[0] == 3 && len(b) == 64:
		return "cookie_reply"
	case b[0] == 4 && len(b) >= 32 && len(b)%16 == 0:
		return "transport_data"
	}
	return ""
}

func (WireGuard) Detect(p *Probe) Verdict {
	c, s := wgType(p.Client), wgType(p.Server)
	if len(p.Client) > 0 && c == "" || len(p.Server) > 0 && s == "" {
		return No
	}
	if c == "handshake_initiation" || s == "handshake_response" {
		return Yes
	}
	if c != "" || s != "" {
		return Maybe // transport data alone: 4 bytes of structure only
	}
	return No
}

type wgParser struct {
	msg Message
	sc  scratch
}

func (p *wgParser) Feed(dir Direction, b []byte, emit func(*Message)) error {
	t := wgType(b)
	if t == "" {
		return nil
	}
	m := &p.msg
	p.sc.reset()
	m.Reset(dir, t)
	m.AddString(AttrCommand, t)
	switch b[0] {
	case 1:
		m.Add("sender", p.sc.uint(uint64(binary.LittleEndian.Uint32(b[4:]))))
	case 2:
		m.Add("sender", p.sc.uint(uint64(binary.LittleEndian.Uint32(b[4:]))))
		m.Add("receiver", p.sc.uint(uint64(binary.LittleEndian.Uint32(b[8:]))))
	case 3, 4:
		m.Add("receiver", p.sc.uint(uint64(binary.LittleEndian.Uint32(b[4:]))))
	}
	emit(m)
	return nil
}
