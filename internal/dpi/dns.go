package dpi

import (
	"encoding/binary"
	"net/netip"
	"strconv"

	"github.com/miekg/dns"
)

// DNS is DNS over UDP (one message per datagram) and TCP (two-byte length prefix): query
// name and type, response code and answers. Messages are walked in place into a per-parser
// scratch buffer rather than unpacked with dns.Msg, which allocates per record; miekg/dns
// supplies the type and rcode names.
type DNS struct{}

// Message types of DNS.
const (
	TypeQuery = "query"
	TypeReply = "response"
)

func (DNS) Name() string          { return "dns" }
func (DNS) Transports() Transport { return TCP | UDP }
func (DNS) Ports() []uint16       { return []uint16{53, 5353, 5355} }
func (DNS) NewParser() Parser     { return &dnsParser{tcp: true} }

// NewFlowParser picks the framing: datagrams over UDP, length-prefixed messages over TCP.
func (DNS) NewFlowParser(info FlowInfo) Parser { return &dnsParser{tcp: info.Transport == TCP} }

// Detect validates a whole message: header counts, question names and types, and that the
// records account for every byte. TCP needs the length prefix to frame it.
func (DNS) Detect(p *Probe) Verdict {
	if len(p.Client) > 0 {
		v := dnsVerdict(p.Client, p.Transport, false)
		if v == No && p.Transport == UDP && dnsVerdict(p.Client, UDP, true) == Yes {
			return Yes // a response first: mDNS/LLMNR announcements, or the query was missed
		}
		return v
	}
	return dnsVerdict(p.Server, p.Transport, true)
}

func dnsVerdict(b []byte, t Transport, response bool) Verdict {
	if t == TCP {
		if len(b) < 2 {
			return NeedMore
		}
		n := int(binary.BigEndian.Uint16(b))
		if n < 12 {
			return No
		}
		b = b[2:]
		if len(b) < n && !dnsPrefixOK(b, n, response) {
			return No
		}
		if len(b) < n {
			if len(b) >= MaxProbe-2 { // cannot see all of it: judge the header and question
				if dnsPlausible(b, response, false) {
					return Maybe
				}
				return No
			}
			if len(b) >= 12 && !dnsHeaderOK(b, response) {
				return No
			}
			return NeedMore
		}
		b = b[:n]
	}
	if dnsPlausible(b, response, true) && !netbiosName(b) {
		return Yes
	}
	return No
}

// netbiosName recognises NetBIOS Name Service (UDP 137), which borrows DNS's wire format: its
// question is one 32-character label of 'A'..'P' (the first-level encoding of a NetBIOS name).
func netbiosName(b []byte) bool {
	if len(b) < 12+1+32 || b[12] != 32 {
		return false
	}
	for _, c := range b[13 : 13+32] {
		if c < 'A' || c > 'P' {
			return false
		}
	}
	return true
}

// dnsPrefixOK judges a TCP message of length n from its first bytes, so a few bytes of another
// protocol ("PING\r\n" reads as a 20553-byte message) get a quick No instead of NeedMore.
func dnsPrefixOK(b []byte, n int, response bool) bool {
	if !response && n > 4096 { // queries are small; answers (zone transfers) may be large
		return false
	}
	if len(b) >= 3 && (b[2]&0x80 != 0) != response {
		return false
	}
	if len(b) >= 3 {
		switch (b[2] >> 3) & 0xf {
		case 0, 1, 2, 4, 5:
		default:
			return false
		}
	}
	if len(b) >= 6 && (binary.BigEndian.Uint16(b[4:]) > 8) {
		return false
	}
	return true
}

func dnsHeaderOK(b []byte, response bool) bool {
	flags := binary.BigEndian.Uint16(b[2:])
	if (flags&0x8000 != 0) != response {
		return false
	}
	switch (flags >> 11) & 0xf { // opcode: query, iquery, status, notify, update
	case 0, 1, 2, 4, 5:
	default:
		return false
	}
	qd := binary.BigEndian.Uint16(b[4:])
	an, ns, ar := binary.BigEndian.Uint16(b[6:]), binary.BigEndian.Uint16(b[8:]), binary.BigEndian.Uint16(b[10:])
	if qd == 0 && (flags>>11)&0xf != 5 || qd > 8 || an > 512 || ns > 512 || ar > 512 {
		return false
	}
	if !response && an > 8 { // queries carry no answers (NOTIFY/UPDATE a few)
		return false
	}
	return true
}

// dnsPlausible checks the header and question (and, when whole, that records fill the message).
func dnsPlausible(b []byte, response, whole bool) bool {
	if len(b) < 12 || !dnsHeaderOK(b, response) {
		return false
	}
	qd := int(binary.BigEndian.Uint16(b[4:]))
	off := 12
	var ok bool
	for i := 0; i < qd; i++ {
		if off, ok = dnsSkipName(b, off); !ok || off+4 > len(b) {
			return false
		}
		qtype, qclass := binary.BigEndian.Uint16(b[off:]), binary.BigEndian.Uint16(b[off+2:])
		if qtype == 0 || !dnsClassOK(qclass) {
			return false
		}
		off += 4
	}
	if !whole {
		return true
	}
	rr := int(binary.BigEndian.Uint16(b[6:])) + int(binary.BigEndian.Uint16(b[8:])) + int(binary.BigEndian.Uint16(b[10:]))
	for i := 0; i < rr; i++ {
		if off, ok = dnsSkipName(b, off); !ok || off+10 > len(b) {
			return false
		}
		rdlen := int(binary.BigEndian.Uint16(b[off+8:]))
		off += 10 + rdlen
		if off > len(b) {
			return false
		}
	}
	return off == len(b)
}

func dnsClassOK(c uint16) bool {
	switch c &^ 0x8000 { // mDNS uses the top bit for unicast-response / cache-flush
	case dns.ClassINET, dns.ClassCHAOS, dns.ClassHESIOD, dns.ClassNONE, dns.ClassANY:
		return true
	}
	return false
}

// dnsSkipName walks a possibly compressed name and returns the offset after it.
func dnsSkipName(b []byte, off int) (int, bool) {
	total := 0
	for {
		if off >= len(b) {
			return 0, false
		}
		l := int(b[off])
		switch l & 0xc0 {
		case 0xc0:
			if off+2 > len(b) {
				return 0, false
			}
			return off + 2, true
		case 0:
			if l == 0 {
				return off + 1, true
			}
			total += l + 1
			if total > 255 {
				return 0, false
			}
			off += l + 1
		default:
			return 0, false
		}
	}
}

// dnsAppendName decodes the name at off into dst, following compression pointers (bounded).
func dnsAppendName(dst, b []byte, off int) ([]byte, bool) {
	start := len(dst)
	for hops := 0; hops < 32; {
		if off >= len(b) {
			return dst, false
		}
		l := int(b[off])
		switch l & 0xc0 {
		case 0xc0:
			if off+2 > len(b) {
				return dst, false
			}
			off = int(binary.BigEndian.Uint16(b[off:]) & 0x3fff)
			hops++
		case 0:
			if l == 0 {
				if len(dst) == start {
					dst = append(dst, '.')
				}
				return dst, true
			}
			if off+1+l > len(b) || len(dst)-start+l > 255 {
				return dst, false
			}
			if len(dst) > start {
				dst = append(dst, '.')
			}
			dst = append(dst, b[off+1:off+1+l]...)
			off += l + 1
		default:
			return dst, false
		}
	}
	return dst, false
}

type dnsParser struct {
	tcp     bool
	buf     [2][]byte // a TCP message split across segments: at most 2 + 65535 bytes
	msg     Message
	scratch []byte // names and answers rendered for the current message; reused
}

func (p *dnsParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	if !p.tcp {
		p.message(dir, data, emit)
		return nil
	}
	buf := &p.buf[dir&1]
	for len(data) > 0 {
		if len(*buf) == 0 && len(data) >= 2 { // whole messages straight from the segment
			if n := int(binary.BigEndian.Uint16(data)); len(data) >= 2+n {
				p.message(dir, data[2:2+n], emit)
				data = data[2+n:]
				continue
			}
		}
		need := 2
		if len(*buf) >= 2 {
			need = 2 + int(binary.BigEndian.Uint16(*buf))
		}
		take := min(need-len(*buf), len(data))
		*buf = append(*buf, data[:take]...)
		data = data[take:]
		if len(*buf) >= 2 && len(*buf) == 2+int(binary.BigEndian.Uint16(*buf)) {
			p.message(dir, (*buf)[2:], emit)
			*buf = (*buf)[:0]
		}
	}
	return nil
}

// Gap loses the TCP framing of dir; what follows is read as if a message started there.
func (p *dnsParser) Gap(dir Direction) { p.buf[dir&1] = p.buf[dir&1][:0] }

// message parses one DNS message and emits it.
func (p *dnsParser) message(dir Direction, b []byte, emit func(*Message)) {
	if len(b) < 12 {
		return
	}
	flags := binary.BigEndian.Uint16(b[2:])
	qd := int(binary.BigEndian.Uint16(b[4:]))
	an := int(binary.BigEndian.Uint16(b[6:]))
	m := &p.msg
	s := p.scratch[:0]
	defer func() { p.scratch = s[:0] }() // keep the grown buffer for the next message
	if flags&0x8000 != 0 {
		m.Reset(dir, TypeReply)
	} else {
		m.Reset(dir, TypeQuery)
	}
	off := 12
	var ok bool
	for i := 0; i < qd; i++ {
		st := len(s)
		if s, ok = dnsAppendName(s, b, off); !ok {
			emit(m)
			return
		}
		if off, ok = dnsSkipName(b, off); !ok || off+4 > len(b) {
			emit(m)
			return
		}
		if i == 0 {
			m.Add(AttrName, s[st:])
			st = len(s)
			s = dnsAppendType(s, binary.BigEndian.Uint16(b[off:]))
			m.Add(AttrQType, s[st:])
		}
		off += 4
	}
	if flags&0x8000 != 0 {
		if name, ok := dns.RcodeToString[int(flags&0xf)]; ok {
			m.AddString(AttrRCode, name)
		} else {
			st := len(s)
			s = strconv.AppendUint(s, uint64(flags&0xf), 10)
			m.Add(AttrRCode, s[st:])
		}
	}
	for i := 0; i < an && m.n < len(m.attrs); i++ {
		if off, ok = dnsSkipName(b, off); !ok || off+10 > len(b) {
			break
		}
		typ := binary.BigEndian.Uint16(b[off:])
		rdlen := int(binary.BigEndian.Uint16(b[off+8:]))
		rd := off + 10
		off = rd + rdlen
		if off > len(b) || len(s) > 2048 {
			break
		}
		st := len(s)
		s, ok = dnsAppendRData(s, b, typ, rd, rdlen)
		if ok {
			m.Add(AttrAnswer, s[st:])
		}
	}
	emit(m)
}

func dnsAppendType(s []byte, t uint16) []byte {
	if name, ok := dns.TypeToString[t]; ok {
		return append(s, name...)
	}
	return strconv.AppendUint(append(s, "TYPE"...), uint64(t), 10)
}

func dnsAppendRData(s, b []byte, typ uint16, rd, n int) ([]byte, bool) {
	data := b[rd : rd+n]
	switch typ {
	case dns.TypeA:
		if n == 4 {
			return netip.AddrFrom4([4]byte(data)).AppendTo(s), true
		}
	case dns.TypeAAAA:
		if n == 16 {
			return netip.AddrFrom16([16]byte(data)).AppendTo(s), true
		}
	case dns.TypeCNAME, dns.TypeNS, dns.TypePTR, dns.TypeDNAME:
		return dnsAppendName(s, b, rd)
	case dns.TypeMX:
		if n > 2 {
			return dnsAppendName(s, b, rd+2)
		}
	case dns.TypeTXT:
		if n > 0 {
			l := min(int(data[0]), n-1, 200)
			return append(s, data[1:1+l]...), true
		}
	}
	return dnsAppendType(s, typ), true
}
