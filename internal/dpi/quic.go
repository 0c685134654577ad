package dpi

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
)

// QUIC recognises QUIC long-header packets over UDP (v1 RFC 9000, v2 RFC 9369, drafts 29-34)
// and decrypts the client's Initial packets, whose keys derive from public values (RFC 9001
// section 5.2), to read the TLS ClientHello inside: SNI and ALPN. Reports the version and the
// destination connection id length; 1-RTT (short header) packets are encrypted and skipped.
type QUIC struct{}

func (QUIC) Name() string          { return "quic" }
func (QUIC) Transports() Transport { return UDP }
func (QUIC) Ports() []uint16       { return []uint16{443, 8443} }
func (QUIC) NewParser() Parser     { return &quicParser{} }

const (
	quicV1      = 0x00000001
	quicV2      = 0x6b3343cf
	quicMaxHS   = 16 << 10 // ClientHello reassembly bound (post-quantum key shares are large)
	quicMaxPkts = 8        // client Initial packets decrypted per flow at most
)

// quicSalt returns the Initial salt and label prefix of a version, or nil if unknown.
func quicSalt(v uint32) (salt []byte, v2 bool) {
	switch {
	case v == quicV1:
		return quicSaltV1[:], false
	case v == quicV2:
		return quicSaltV2[:], true
	case v >= 0xff00001d && v <= 0xff000022: // drafts 29-34
		return quicSaltDraft29[:], false
	}
	return nil, false
}

var (
	quicSaltV1      = [20]byte{0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a}
	quicSaltV2      = [20]byte{0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9, 0xbd, 0x2e, 0xd9}
	quicSaltDraft29 = [20]byte{0xaf, 0xbf, 0xec, 0x28, 0x99, 0x93, 0xd2, 0x4c, 0x9e, 0x97, 0x86, 0xf1, 0x9c, 0x61, 0x11, 0xe0, 0x43, 0x90, 0xa8, 0x99}
)

// quicLong is a parsed long header.
type quicLong struct {
	version  uint32
	dcid     []byte
	scid     []byte
	typ      byte // 0 Initial, 1 0-RTT, 2 Handshake, 3 Retry (v1 numbering, v2 mapped)
	pnOffset int  // Initial/0-RTT/Handshake: where the packet number starts
	end      int  // end of this packet within the datagram
}

// quicParseLong parses the long header at b[0]; ok=false if it is not one.
func quicParseLong(b []byte) (h quicLong, ok bool) {
	if len(b) < 7 || b[0]&0x80 == 0 {
		return h, false
	}
	h.version = binary.BigEndian.Uint32(b[1:])
	dl := int(b[5])
	if dl > 20 || len(b) < 6+dl+1 {
		return h, false
	}
	h.dcid = b[6 : 6+dl]
	off := 6 + dl
	sl := int(b[off])
	if sl > 20 || len(b) < off+1+sl {
		return h, false
	}
	h.scid = b[off+1 : off+1+sl]
	off += 1 + sl
	if h.version == 0 { // version negotiation
		h.typ = 0xff
		h.end = len(b)
		return h, true
	}
	if b[0]&0x40 == 0 {
		return h, false // the fixed bit (greasing it is negotiated, never on first packets)
	}
	t := b[0] >> 4 & 3
	if h.version == quicV2 { // v2 rotates the types: 1 Initial, 2 0-RTT, 3 Handshake, 0 Retry
		t = (t + 3) & 3
	}
	h.typ = t
	if t == 3 { // Retry runs to the end of the datagram
		h.end = len(b)
		return h, true
	}
	if t == 0 {
		tl, n := quicVarint(b[off:])
		if n == 0 || tl > uint64(len(b)) {
			return h, false
		}
		off += n + int(tl)
	}
	if off > len(b) {
		return h, false
	}
	ln, n := quicVarint(b[off:])
	if n == 0 || ln > uint64(len(b)) {
		return h, false
	}
	h.pnOffset = off + n
	h.end = h.pnOffset + int(ln)
	if h.end > len(b) || ln < 20 {
		return h, false
	}
	return h, true
}

func quicVarint(b []byte) (uint64, int) {
	if len(b) == 0 {
		return 0, 0
	}
	n := 1 << (b[0] >> 6)
	if len(b) < n {
		return 0, 0
	}
	v := uint64(b[0] & 0x3f)
	for i := 1; i < n; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v, n
}

func quicKnownVersion(v uint32) bool {
	s, _ := quicSalt(v)
	return s != nil || v>>8 == 0x513035 || v>>8 == 0x513034 || v>>24 == 'T' // gQUIC Q04x/Q05x, T05x
}

func (QUIC) Detect(p *Probe) Verdict {
	c := p.Client
	if len(c) > 0 {
		h, ok := quicParseLong(c)
		if !ok || h.typ == 0xff || !quicKnownVersion(h.version) {
			return No
		}
		if h.typ == 0 && len(h.dcid) >= 8 && len(c) >= 1200 {
			return Yes // a client Initial padded to 1200 bytes, as RFC 9000 14.1 demands
		}
		return Maybe
	}
	if s := p.Server; len(s) > 0 {
		if h, ok := quicParseLong(s); ok && (h.typ == 0xff || quicKnownVersion(h.version)) {
			return Maybe
		}
	}
	return No
}

type quicParser struct {
	odcid    [20]byte
	odcidLen int
	pkts     int
	helloed  bool
	serverID bool
	crypto   []byte
	ranges   [32][2]int // received CRYPTO byte ranges [start, end)
	nranges  int
	plain    []byte
	hdr      [64]byte
	bigHdr   []byte
	msg      Message
	sc       scratch
}

func (p *quicParser) Feed(dir Direction, d []byte, emit func(*Message)) error {
	if len(d) == 0 || d[0]&0x80 == 0 {
		return nil // 1-RTT short header: encrypted, and the bulk of the flow
	}
	first, ok := quicParseLong(d)
	if !ok {
		return nil
	}
	m := &p.msg
	p.sc.reset()
	m.Reset(dir, "initial")
	switch first.typ {
	case 0xff:
		m.Type = "version_negotiation"
	case 3:
		m.Type = "retry"
	case 1, 2:
		return nil // 0-RTT/Handshake without an Initial first: nothing readable
	}
	m.Add(AttrVersion, p.version(first.version))
	m.Add("dcid_len", p.sc.uint(uint64(len(first.dcid))))
	if dir == ServerToClient {
		if p.serverID && first.typ == 0 {
			return nil // report the server's first Initial only
		}
		p.serverID = true
		emit(m)
		return nil
	}
	if first.typ == 0 && !p.helloed && p.pkts < quicMaxPkts {
		// Coalesced packets: walk them, decrypting each Initial.
		for b := d; len(b) > 0; {
			h, ok := quicParseLong(b)
			if !ok || h.typ != 0 {
				break
			}
			p.pkts++
			if p.odcidLen == 0 {
				p.odcidLen = copy(p.odcid[:], h.dcid)
			}
			p.initial(b[:h.end], h)
			b = b[h.end:]
		}
		if !p.helloed {
			p.hello(m)
		}
	}
	emit(m)
	return nil
}

func (p *quicParser) version(v uint32) []byte {
	switch {
	case v == quicV1:
		return p.sc.uint(1)
	case v == quicV2:
		return p.sc.uint(2)
	case v >= 0xff000000 && v <= 0xff0000ff:
		start := len(p.sc.b)
		p.sc.b = append(p.sc.b, "draft-"...)
		p.sc.uint(uint64(v & 0xff))
		return p.sc.b[start:len(p.sc.b):len(p.sc.b)]
	case v>>24 == 'Q' || v>>24 == 'T':
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], v)
		return p.sc.copy(b[:])
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	start := len(p.sc.b)
	p.sc.b = append(p.sc.b, "0x"...)
	p.sc.hex(b[:], 0)
	return p.sc.b[start:len(p.sc.b):len(p.sc.b)]
}

// quicClientKeys derives the client Initial AEAD and header-protection block (RFC 9001 5.2).
func quicClientKeys(version uint32, dcid []byte) (aead cipher.AEAD, hp cipher.Block, iv []byte, ok bool) {
	salt, v2 := quicSalt(version)
	if salt == nil {
		return nil, nil, nil, false
	}
	initial, err := hkdf.Extract(sha256.New, dcid, salt)
	if err != nil {
		return nil, nil, nil, false
	}
	secret, err := quicExpandLabel(initial, "client in", 32)
	if err != nil {
		return nil, nil, nil, false
	}
	kl, il, hl := "quic key", "quic iv", "quic hp"
	if v2 {
		kl, il, hl = "quicv2 key", "quicv2 iv", "quicv2 hp"
	}
	key, err1 := quicExpandLabel(secret, kl, 16)
	iv, err2 := quicExpandLabel(secret, il, 12)
	hpKey, err3 := quicExpandLabel(secret, hl, 16)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, nil, nil, false
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, nil, false
	}
	aead, err = cipher.NewGCM(blk)
	if err != nil {
		return nil, nil, nil, false
	}
	hp, err = aes.NewCipher(hpKey)
	if err != nil {
		return nil, nil, nil, false
	}
	return aead, hp, iv, true
}

// quicExpandLabel is TLS 1.3 HKDF-Expand-Label with an empty context.
func quicExpandLabel(secret []byte, label string, n int) ([]byte, error) {
	info := make([]byte, 0, 4+6+len(label))
	info = append(info, byte(n>>8), byte(n), byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, 0)
	return hkdf.Expand(sha256.New, secret, string(info), n)
}

// initial removes header protection from one client Initial packet, decrypts it and collects
// its CRYPTO frames.
func (p *quicParser) initial(pkt []byte, h quicLong) {
	dcid := h.dcid
	aead, hp, iv, ok := quicClientKeys(h.version, dcid)
	if !ok {
		return
	}
	if !p.decrypt(pkt, h, aead, hp, iv) && p.odcidLen > 0 && string(dcid) != string(p.odcid[:p.odcidLen]) {
		// Later Initials carry the server's chosen DCID but keep the original keys.
		if aead, hp, iv, ok = quicClientKeys(h.version, p.odcid[:p.odcidLen]); ok {
			p.decrypt(pkt, h, aead, hp, iv)
		}
	}
}

func (p *quicParser) decrypt(pkt []byte, h quicLong, aead cipher.AEAD, hp cipher.Block, iv []byte) bool {
	sampleAt := h.pnOffset + 4
	if sampleAt+16 > len(pkt) {
		return false
	}
	if h.pnOffset+4 > len(p.hdr) && len(p.bigHdr) < h.pnOffset+4 {
		p.bigHdr = make([]byte, h.pnOffset+4) // a long token (after Retry or NEW_TOKEN)
	}
	var mask [16]byte
	hp.Encrypt(mask[:], pkt[sampleAt:sampleAt+16])
	b0 := pkt[0] ^ mask[0]&0x0f
	pnLen := int(b0&3) + 1
	hdr := p.hdr[:]
	if h.pnOffset+4 > len(p.hdr) {
		hdr = p.bigHdr
	}
	hdr = hdr[:h.pnOffset+pnLen]
	copy(hdr, pkt[:h.pnOffset+pnLen])
	hdr[0] = b0
	var pn uint64
	for i := 0; i < pnLen; i++ {
		hdr[h.pnOffset+i] ^= mask[1+i]
		pn = pn<<8 | uint64(hdr[h.pnOffset+i])
	}
	var nonce [12]byte
	copy(nonce[:], iv)
	for i := 0; i < 8; i++ {
		nonce[11-i] ^= byte(pn >> (8 * i))
	}
	if cap(p.plain) < len(pkt) {
		p.plain = make([]byte, 0, 2048)
	}
	plain, err := aead.Open(p.plain[:0], nonce[:], pkt[h.pnOffset+pnLen:], hdr)
	if err != nil {
		return false
	}
	p.frames(plain)
	return true
}

// frames walks the frames allowed in an Initial packet, keeping CRYPTO data.
func (p *quicParser) frames(b []byte) {
	for len(b) > 0 {
		t, n := quicVarint(b)
		if n == 0 {
			return
		}
		b = b[n:]
		switch t {
		case 0x00, 0x01: // PADDING, PING
		case 0x02, 0x03: // ACK
			var cnt uint64
			for i := 0; i < 4; i++ {
				v, n := quicVarint(b)
				if n == 0 {
					return
				}
				if i == 2 {
					cnt = v
				}
				b = b[n:]
			}
			extra := cnt * 2
			if t == 0x03 {
				extra += 3
			}
			for i := uint64(0); i < extra; i++ {
				_, n := quicVarint(b)
				if n == 0 {
					return
				}
				b = b[n:]
			}
		case 0x06: // CRYPTO
			off, n1 := quicVarint(b)
			if n1 == 0 {
				return
			}
			ln, n2 := quicVarint(b[n1:])
			if n2 == 0 || ln > uint64(len(b)-n1-n2) {
				return
			}
			data := b[n1+n2 : n1+n2+int(ln)]
			p.addCrypto(off, data)
			b = b[n1+n2+int(ln):]
		default: // CONNECTION_CLOSE or anything else: nothing more we need
			return
		}
	}
}

func (p *quicParser) addCrypto(off uint64, data []byte) {
	if off >= quicMaxHS || len(data) == 0 || p.nranges == len(p.ranges) {
		return
	}
	end := int(off) + len(data)
	if end > quicMaxHS {
		end = quicMaxHS
		data = data[:end-int(off)]
	}
	if p.crypto == nil {
		p.crypto = make([]byte, 0, 4096)
	}
	if end > len(p.crypto) {
		if end > cap(p.crypto) {
			grown := make([]byte, len(p.crypto), max(end, 2*cap(p.crypto)))
			copy(grown, p.crypto)
			p.crypto = grown
		}
		p.crypto = p.crypto[:end]
	}
	copy(p.crypto[off:], data)
	p.ranges[p.nranges] = [2]int{int(off), end}
	p.nranges++
}

// contiguous returns how many CRYPTO bytes from offset 0 have arrived.
func (p *quicParser) contiguous() int {
	have := 0
	for changed := true; changed; {
		changed = false
		for _, r := range p.ranges[:p.nranges] {
			if r[0] <= have && r[1] > have {
				have = r[1]
				changed = true
			}
		}
	}
	return have
}

// hello parses the ClientHello once it is complete and adds its SNI and ALPN to m.
func (p *quicParser) hello(m *Message) {
	have := p.contiguous()
	if have < 4 || p.crypto[0] != 1 {
		return
	}
	n := int(p.crypto[1])<<16 | int(p.crypto[2])<<8 | int(p.crypto[3])
	if have < 4+n {
		return
	}
	p.helloed = true
	ch := p.crypto[4 : 4+n]
	if len(ch) < 35 {
		return
	}
	b := ch[34:]
	skip := func(lenBytes int) bool {
		if len(b) < lenBytes {
			return false
		}
		l := 0
		for i := 0; i < lenBytes; i++ {
			l = l<<8 | int(b[i])
		}
		if len(b) < lenBytes+l {
			return false
		}
		b = b[lenBytes+l:]
		return true
	}
	if !skip(1) || !skip(2) || !skip(1) || len(b) < 2 { // session id, suites, compression
		return
	}
	ext := b[2:]
	if el := int(binary.BigEndian.Uint16(b)); el < len(ext) {
		ext = ext[:el]
	}
	m.Type = "client_hello"
	for len(ext) >= 4 {
		t := binary.BigEndian.Uint16(ext)
		l := int(binary.BigEndian.Uint16(ext[2:]))
		if 4+l > len(ext) {
			return
		}
		v := ext[4 : 4+l]
		ext = ext[4+l:]
		switch t {
		case 0: // server_name: list length, type 0, name length, name
			if len(v) >= 5 && v[2] == 0 {
				nl := int(binary.BigEndian.Uint16(v[3:]))
				if 5+nl <= len(v) {
					m.Add(AttrSNI, capBytes(v[5:5+nl], 255))
				}
			}
		case 16: // ALPN
			if len(v) >= 2 {
				v = v[2:]
				for len(v) > 0 {
					pl := int(v[0])
					if 1+pl > len(v) {
						break
					}
					m.Add(AttrALPN, v[1:1+pl])
					v = v[1+pl:]
				}
			}
		}
	}
}
