package dpi

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strconv"
)

// TLS is the TLS (and SSL 3.0) handshake: the ClientHello's version, SNI, ALPN and the JA3 and
// JA4 fingerprints, and the ServerHello's negotiated version, cipher and ALPN. Records after
// the handshake are only counted.
type TLS struct{}

// Message types of TLS.
const (
	TypeClientHello = "client_hello"
	TypeServerHello = "server_hello"
)

func (TLS) Name() string          { return "tls" }
func (TLS) Transports() Transport { return TCP }
func (TLS) Ports() []uint16 {
	return []uint16{443, 8443, 465, 563, 636, 853, 989, 990, 992, 993, 994, 995, 5061, 6443}
}
func (TLS) NewParser() Parser { return &tlsParser{} }

// Detect wants a handshake record carrying a ClientHello (client) or ServerHello (server); for
// mid-stream flows two well-formed consecutive records of any type are a Maybe.
func (TLS) Detect(p *Probe) Verdict {
	if len(p.Client) > 0 {
		v := tlsHelloVerdict(p.Client, 1)
		if v != No || !p.Midstream {
			return v
		}
	}
	if len(p.Server) > 0 {
		if v := tlsHelloVerdict(p.Server, 2); v != No {
			return v
		}
	}
	if p.Midstream && (tlsRecordChain(p.Client) || tlsRecordChain(p.Server)) {
		return Maybe
	}
	if len(p.Client) == 0 && len(p.Server) == 0 {
		return NeedMore
	}
	return No
}

func tlsHelloVerdict(b []byte, hsType byte) Verdict {
	if len(b) == 0 {
		return NeedMore
	}
	if hsType == 1 && b[0]&0x80 != 0 && len(b) >= 5 {
		// SSLv2-compatible ClientHello (old clients): 2-byte length, type 1, version 3.x.
		if b[2] == 1 && b[3] == 3 && b[4] <= 3 && int(b[0]&0x7f)<<8|int(b[1]) >= 9 {
			return Yes
		}
		return No
	}
	if b[0] != 0x16 {
		return No
	}
	if len(b) < 6 {
		if len(b) >= 2 && b[1] != 3 {
			return No
		}
		return NeedMore
	}
	if b[1] != 3 || b[2] > 4 {
		return No
	}
	rl := int(binary.BigEndian.Uint16(b[3:]))
	if rl == 0 || rl > 16384+2048 || b[5] != hsType {
		return No
	}
	if len(b) < 9 {
		return NeedMore
	}
	hl := int(b[6])<<16 | int(b[7])<<8 | int(b[8])
	if hl < 38 || hl > 1<<16 {
		return No
	}
	if len(b) >= 11 && b[9] != 3 && !(b[9] == 0xfe) { // legacy_version 3.x (or DTLS-looking)
		return No
	}
	return Yes
}

// tlsRecordChain reports two consecutive well-formed records (or one filling b exactly).
func tlsRecordChain(b []byte) bool {
	off, n := 0, 0
	for off+5 <= len(b) {
		t := b[off]
		if t < 20 || t > 24 || b[off+1] != 3 || b[off+2] > 4 {
			return false
		}
		l := int(binary.BigEndian.Uint16(b[off+3:]))
		if l == 0 || l > 16384+2048 {
			return false
		}
		off += 5 + l
		n++
		if n >= 2 {
			return true
		}
	}
	return n == 1 && off == len(b)
}

type tlsDir struct {
	rec     [5]byte // partial record header
	nrec    int
	remain  int  // payload bytes left in the current record
	typ     byte // current record's content type
	hs      []byte
	done    bool // handshake messages we care about were seen or encryption started
	skipAll bool
}

type tlsParser struct {
	d   [2]tlsDir
	msg Message
	buf []byte // fingerprint scratch
}

// Midstream: the handshake was missed; just count.
func (p *tlsParser) Midstream() { p.d[0].done, p.d[1].done = true, true }

// Gap loses record framing; give up parsing that direction.
func (p *tlsParser) Gap(dir Direction) { p.d[dir&1].skipAll = true }

func (p *tlsParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	d := &p.d[dir&1]
	if d.skipAll {
		return nil
	}
	for len(data) > 0 {
		if d.remain == 0 {
			n := copy(d.rec[d.nrec:], data)
			d.nrec += n
			data = data[n:]
			if d.nrec < 5 {
				return nil
			}
			d.nrec = 0
			d.typ = d.rec[0]
			d.remain = int(binary.BigEndian.Uint16(d.rec[3:]))
			if d.typ < 20 || d.typ > 24 || d.rec[1] != 3 {
				d.skipAll = true // lost framing (or not TLS after all)
				return nil
			}
			if d.typ == 20 || d.typ == 23 { // ChangeCipherSpec or data: handshake is encrypted now
				d.done = true
			}
			continue
		}
		n := min(d.remain, len(data))
		if d.typ == 22 && !d.done {
			if len(d.hs)+n > MaxBuffer {
				d.done = true
			} else {
				d.hs = append(d.hs, data[:n]...)
				p.handshake(dir, d, emit)
			}
		}
		d.remain -= n
		data = data[n:]
	}
	return nil
}

// handshake consumes complete handshake messages from d.hs.
func (p *tlsParser) handshake(dir Direction, d *tlsDir, emit func(*Message)) {
	for len(d.hs) >= 4 && !d.done {
		l := int(d.hs[1])<<16 | int(d.hs[2])<<8 | int(d.hs[3])
		if len(d.hs) < 4+l {
			return
		}
		body := d.hs[4 : 4+l]
		switch d.hs[0] {
		case 1:
			p.clientHello(body, emit)
			d.done = true
		case 2:
			p.serverHello(body, emit)
			d.done = true
		}
		d.hs = d.hs[4+l:]
	}
	if d.done {
		d.hs = nil
	}
}

func tlsGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>8 == v&0xff }

// tlsHello is a parsed ClientHello or ServerHello; slices point into the message.
type tlsHello struct {
	version   uint16 // legacy_version
	ciphers   []uint16
	exts      []uint16
	groups    []uint16
	points    []uint8
	sigAlgs   []uint16
	versions  []uint16
	sni       []byte
	alpn      [][]byte
	cipherSel uint16
}

func tlsParseHello(b []byte, client bool) (h tlsHello, ok bool) {
	r := tlsReader{b: b}
	h.version = r.u16()
	r.skip(32) // random
	r.skip(int(r.u8()))
	if client {
		cs := r.bytes(int(r.u16()))
		for i := 0; i+1 < len(cs); i += 2 {
			h.ciphers = append(h.ciphers, binary.BigEndian.Uint16(cs[i:]))
		}
		r.skip(int(r.u8())) // compression methods
	} else {
		h.cipherSel = r.u16()
		r.skip(1)
	}
	if r.bad {
		return h, false
	}
	if len(r.b) < 2 {
		return h, true // no extensions
	}
	ext := tlsReader{b: r.bytes(int(r.u16()))}
	for len(ext.b) >= 4 && !ext.bad {
		typ := ext.u16()
		e := tlsReader{b: ext.bytes(int(ext.u16()))}
		h.exts = append(h.exts, typ)
		switch typ {
		case 0: // server_name
			l := tlsReader{b: e.bytes(int(e.u16()))}
			for len(l.b) >= 3 && !l.bad {
				t := l.u8()
				name := l.bytes(int(l.u16()))
				if t == 0 && h.sni == nil {
					h.sni = name
				}
			}
		case 10: // supported_groups
			g := e.bytes(int(e.u16()))
			for i := 0; i+1 < len(g); i += 2 {
				h.groups = append(h.groups, binary.BigEndian.Uint16(g[i:]))
			}
		case 11: // ec_point_formats
			h.points = e.bytes(int(e.u8()))
		case 13: // signature_algorithms
			s := e.bytes(int(e.u16()))
			for i := 0; i+1 < len(s); i += 2 {
				h.sigAlgs = append(h.sigAlgs, binary.BigEndian.Uint16(s[i:]))
			}
		case 16: // ALPN
			l := tlsReader{b: e.bytes(int(e.u16()))}
			for len(l.b) > 0 && !l.bad {
				if p := l.bytes(int(l.u8())); len(p) > 0 {
					h.alpn = append(h.alpn, p)
				}
			}
		case 43: // supported_versions: a list in the ClientHello, one value in the ServerHello
			if client {
				v := e.bytes(int(e.u8()))
				for i := 0; i+1 < len(v); i += 2 {
					h.versions = append(h.versions, binary.BigEndian.Uint16(v[i:]))
				}
			} else if len(e.b) >= 2 {
				h.versions = append(h.versions, binary.BigEndian.Uint16(e.b))
			}
		}
	}
	return h, true
}

func tlsVersionName(v uint16) string {
	switch v {
	case 0x0300:
		return "SSL 3.0"
	case 0x0301:
		return "TLS 1.0"
	case 0x0302:
		return "TLS 1.1"
	case 0x0303:
		return "TLS 1.2"
	case 0x0304:
		return "TLS 1.3"
	}
	return "0x" + strconv.FormatUint(uint64(v), 16)
}

func (h *tlsHello) maxVersion() uint16 {
	v := uint16(0)
	for _, x := range h.versions {
		if !tlsGREASE(x) && x > v {
			v = x
		}
	}
	if v == 0 {
		v = h.version
	}
	return v
}

func (p *tlsParser) clientHello(body []byte, emit func(*Message)) {
	m := &p.msg
	m.Reset(ClientToServer, TypeClientHello)
	if AddClientHello(m, body, 't') {
		emit(m)
	}
}

// AddClientHello parses a ClientHello handshake body (after the 4-byte handshake header) and
// adds version, SNI, ALPN, JA3 and JA4 to m. proto is JA4's transport letter: 't' for TLS over
// TCP, 'q' for QUIC, 'd' for DTLS. It reports whether the body parsed.
func AddClientHello(m *Message, body []byte, proto byte) bool {
	h, ok := tlsParseHello(body, true)
	if !ok {
		return false
	}
	m.AddString(AttrVersion, tlsVersionName(h.maxVersion()))
	if h.sni != nil {
		m.Add(AttrSNI, h.sni)
	}
	for i, a := range h.alpn {
		if i < 4 {
			m.Add(AttrALPN, a)
		}
	}
	m.AddString(AttrJA3, ja3(&h))
	m.AddString(AttrJA4, ja4(&h, proto))
	return true
}

func (p *tlsParser) serverHello(body []byte, emit func(*Message)) {
	h, ok := tlsParseHello(body, false)
	if !ok {
		return
	}
	m := &p.msg
	m.Reset(ServerToClient, TypeServerHello)
	m.AddString(AttrVersion, tlsVersionName(h.maxVersion()))
	m.AddString("cipher", "0x"+hex.EncodeToString([]byte{byte(h.cipherSel >> 8), byte(h.cipherSel)}))
	if len(h.alpn) > 0 {
		m.Add(AttrALPN, h.alpn[0])
	}
	emit(m)
}

// ja3 is the MD5 of "version,ciphers,extensions,groups,point formats" in decimal, GREASE
// values removed (https://github.com/salesforce/ja3).
func ja3(h *tlsHello) string {
	b := strconv.AppendUint(nil, uint64(h.version), 10)
	list16 := func(vs []uint16) {
		b = append(b, ',')
		first := true
		for _, v := range vs {
			if tlsGREASE(v) {
				continue
			}
			if !first {
				b = append(b, '-')
			}
			first = false
			b = strconv.AppendUint(b, uint64(v), 10)
		}
	}
	list16(h.ciphers)
	list16(h.exts)
	list16(h.groups)
	b = append(b, ',')
	for i, v := range h.points {
		if i > 0 {
			b = append(b, '-')
		}
		b = strconv.AppendUint(b, uint64(v), 10)
	}
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

// ja4 is the FoxIO JA4 TLS client fingerprint (https://github.com/FoxIO-LLC/ja4,
// technical_details/JA4.md): ja4_a (transport, version, SNI, cipher and extension counts,
// ALPN first/last characters), ja4_b (truncated SHA-256 of the sorted ciphers) and ja4_c
// (truncated SHA-256 of the sorted extensions without SNI and ALPN, then the signature
// algorithms in order). proto is 't' (TCP), 'q' (QUIC) or 'd' (DTLS).
func ja4(h *tlsHello, proto byte) string {
	var ciphers, exts []uint16
	for _, c := range h.ciphers {
		if !tlsGREASE(c) {
			ciphers = append(ciphers, c)
		}
	}
	for _, e := range h.exts {
		if !tlsGREASE(e) {
			exts = append(exts, e)
		}
	}
	a := []byte{proto}
	v := h.maxVersion()
	switch v {
	case 0x0304:
		a = append(a, "13"...)
	case 0x0303:
		a = append(a, "12"...)
	case 0x0302:
		a = append(a, "11"...)
	case 0x0301:
		a = append(a, "10"...)
	case 0x0300:
		a = append(a, "s3"...)
	case 0x0002:
		a = append(a, "s2"...)
	case 0xfeff:
		a = append(a, "d1"...)
	case 0xfefd:
		a = append(a, "d2"...)
	case 0xfefc:
		a = append(a, "d3"...)
	default:
		a = append(a, "00"...)
	}
	if h.sni != nil {
		a = append(a, 'd')
	} else {
		a = append(a, 'i')
	}
	count := func(n int) {
		n = min(n, 99)
		a = append(a, byte('0'+n/10), byte('0'+n%10))
	}
	count(len(ciphers))
	count(len(exts))
	if len(h.alpn) == 0 {
		a = append(a, "00"...)
	} else {
		first := h.alpn[0]
		f, l := first[0], first[len(first)-1]
		if ja4Alnum(f) && ja4Alnum(l) {
			a = append(a, f, l)
		} else {
			x := hex.EncodeToString(first)
			a = append(a, x[0], x[len(x)-1])
		}
	}
	a = append(a, '_')
	slices.Sort(ciphers)
	a = append(a, ja4Hash(ja4HexList(nil, ciphers))...)
	a = append(a, '_')
	var rest []uint16
	for _, e := range exts {
		if e != 0 && e != 16 {
			rest = append(rest, e)
		}
	}
	slices.Sort(rest)
	if len(rest) == 0 && len(h.sigAlgs) == 0 {
		a = append(a, "000000000000"...)
	} else {
		c := ja4HexList(nil, rest)
		if len(h.sigAlgs) > 0 {
			c = append(c, '_')
			c = ja4HexList(c, h.sigAlgs)
		}
		a = append(a, ja4Hash(c)...)
	}
	return string(a)
}

func ja4Alnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func ja4HexList(b []byte, vs []uint16) []byte {
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, hex.EncodeToString([]byte{byte(v >> 8), byte(v)})...)
	}
	return b
}

func ja4Hash(b []byte) string {
	if len(b) == 0 {
		return "000000000000"
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// tlsReader reads big-endian fields and remembers running out instead of panicking.
type tlsReader struct {
	b   []byte
	bad bool
}

func (r *tlsReader) u8() uint8 {
	if len(r.b) < 1 {
		r.bad = true
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *tlsReader) u16() uint16 {
	if len(r.b) < 2 {
		r.bad, r.b = true, nil
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *tlsReader) bytes(n int) []byte {
	if n > len(r.b) {
		r.bad = true
		v := r.b
		r.b = nil
		return v
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *tlsReader) skip(n int) { r.bytes(n) }
