package dpi

import "encoding/binary"

// NTP is the Network Time Protocol over UDP (v1-v4): mode, version and stratum of each packet,
// the reference id of stratum-1 servers and kiss codes, and the control (mode 6, ntpq) and
// private (mode 7, ntpdc: monlist amplification) request codes.
type NTP struct{}

func (NTP) Name() string          { return "ntp" }
func (NTP) Transports() Transport { return UDP }
func (NTP) Ports() []uint16       { return []uint16{123} }
func (NTP) NewParser() Parser     { return &ntpParser{} }

var ntpModes = [...]string{"reserved", "symmetric_active", "symmetric_passive", "client",
	"server", "broadcast", "control", "private"}

// ntpValid checks the structure of one packet; strong is true for a textbook client/server
// exchange packet.
func ntpValid(b []byte) (ok, strong bool) {
	if len(b) < 4 {
		return false, false
	}
	ver := b[0] >> 3 & 7
	mode := b[0] & 7
	if ver < 1 || ver > 4 {
		return false, false
	}
	switch mode {
	case 6: // control: header is 12 bytes, count at 10..11
		if len(b) < 12 || len(b) > 12+468+64 {
			return false, false
		}
		// The data (count bytes) is padded to 4 and may carry a MAC (key id + digest ≤ 20),
		// so little may follow it; opcode 0 is unused.
		data := len(b) - 12
		count := int(binary.BigEndian.Uint16(b[10:]))
		return b[1]&0x1f != 0 && count <= data && data-count < 4+24, false
	case 7: // private: implementation 0, 2 (XNTPD_OLD) or 3 (XNTPD)
		if len(b) < 8 {
			return false, false
		}
		// Request codes go up to ~45; the item size (12 bits) fits the datagram.
		items, size := int(binary.BigEndian.Uint16(b[4:])&0xfff), int(binary.BigEndian.Uint16(b[6:])&0xfff)
		return (b[2] == 0 || b[2] == 2 || b[2] == 3) && b[3] < 64 && items*size <= len(b)-8, false
	case 0:
		return false, false
	}
	if len(b) < 48 {
		return false, false
	}
	// Extension fields and MACs come in 4-byte multiples (NTS uses large extensions).
	if len(b) > 48 && ((len(b)-48)%4 != 0 || len(b) > 48+4096) {
		return false, false
	}
	stratum := b[1]
	poll := int8(b[2])
	if stratum > 16 || poll < -7 || poll > 17 {
		return false, false
	}
	return true, mode == 3 || mode == 4
}

func (NTP) Detect(p *Probe) Verdict {
	c, s := p.Client, p.Server
	if len(c) == 0 && len(s) == 0 {
		return No
	}
	okc, strongc := ntpValid(c)
	oks, strongs := ntpValid(s)
	if len(c) > 0 && !okc || len(s) > 0 && !oks {
		return No
	}
	if strongc && strongs && c[0]&7 == 3 && s[0]&7 == 4 {
		return Yes
	}
	if strongc && c[0]&7 == 3 && len(s) == 0 {
		// A lone client request: 48 bytes with a transmit timestamp is as good as it gets.
		if len(c) == 48 && binary.BigEndian.Uint64(c[40:]) != 0 {
			return Yes
		}
		return Maybe
	}
	return Maybe // control/private modes, symmetric and broadcast: a few header bits only
}

type ntpParser struct {
	msg Message
	sc  scratch
}

func (p *ntpParser) Feed(dir Direction, b []byte, emit func(*Message)) error {
	if ok, _ := ntpValid(b); !ok {
		return nil
	}
	m := &p.msg
	p.sc.reset()
	mode := b[0] & 7
	m.Reset(dir, ntpModes[mode])
	m.AddString("mode", ntpModes[mode])
	m.Add(AttrVersion, p.sc.uint(uint64(b[0]>>3&7)))
	switch mode {
	case 6:
		m.Add(AttrCommand, p.sc.uint(uint64(b[1]&0x1f))) // opcode: 1 status, 2 read vars...
	case 7:
		m.Add(AttrCommand, p.sc.uint(uint64(b[3]))) // request code: 42 is MON_GETLIST_1
	default:
		m.Add("stratum", p.sc.uint(uint64(b[1])))
		refid := b[12:16]
		if b[1] <= 1 && dir == ServerToClient || b[1] == 0 && mode != 3 {
			// Stratum 1: reference source ("GPS", "PPS"); stratum 0: kiss code ("RATE").
			end := 0
			for end < 4 && refid[end] >= 'A' && refid[end] <= 'Z' {
				end++
			}
			if end > 0 {
				m.Add("refid", refid[:end])
			}
		}
	}
	emit(m)
	return nil
}
