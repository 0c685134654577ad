package dpi

import (
	"bytes"
	"encoding/binary"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// HTTP2 is cleartext HTTP/2, by prior knowledge (the client preface) or by an HTTP/1.1
// Upgrade: h2c answered with 101. Header blocks are decoded with HPACK per direction and
// reported as requests (method, authority, path, and gRPC service and method when the
// content-type is application/grpc) and responses (status, grpc-status).
type HTTP2 struct{}

// TypeTrailers is an HTTP/2 trailing header block (gRPC's grpc-status lives there).
const TypeTrailers = "trailers"

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

func (HTTP2) Name() string          { return "http2" }
func (HTTP2) Transports() Transport { return TCP }
func (HTTP2) Ports() []uint16       { return []uint16{80, 8080, 50051} }
func (HTTP2) NewParser() Parser     { return &http2Parser{} }

// Detect: the client preface is a Yes; an HTTP/1.1 request asking for h2c waits for the
// server's 101; a server opening with a SETTINGS frame is a Yes; mid-stream, a chain of
// well-formed frames is a Maybe.
func (HTTP2) Detect(p *Probe) Verdict {
	c := p.Client
	if len(c) > 0 {
		n := min(len(c), len(h2Preface))
		if string(c[:n]) == h2Preface[:n] {
			if n == len(h2Preface) {
				return Yes
			}
			return NeedMore
		}
		switch requestLineVerdict(c) {
		case NeedMore:
			return NeedMore
		case Yes:
			end := bytes.Index(c, []byte("\r\n\r\n"))
			if end < 0 {
				if len(c) >= MaxProbe {
					return No
				}
				return NeedMore
			}
			if !askedH2C(c[:end]) {
				return No
			}
			if rest := c[end+4:]; len(rest) >= len(h2Preface) && string(rest[:len(h2Preface)]) == h2Preface {
				return Yes // the client only sends the preface once the server said 101
			}
			if p.Midstream && h2FrameChain(p.Server) {
				return Yes // the 101 was lost: the server's HTTP/2 frames answer the request
			}
			if len(p.Server) < 12 {
				return NeedMore
			}
			if string(p.Server[:12]) == "HTTP/1.1 101" {
				return Yes
			}
			return No
		}
		if !p.Midstream {
			return No
		}
	}
	s := p.Server
	if n := min(len(s), 12); n > 0 && string(s[:n]) == "HTTP/1.1 101"[:n] {
		// The server's 101 to an h2c upgrade whose request was missed (mid-stream start,
		// lost segment): the Upgrade header names the protocol that follows.
		end := bytes.Index(s, []byte("\r\n\r\n"))
		if end < 0 {
			if len(s) >= MaxProbe {
				return No
			}
			return NeedMore
		}
		if askedH2C(s[:end]) {
			return Yes
		}
		return No
	}
	if len(c) == 0 && len(s) > 0 && !p.Midstream {
		if len(s) < 9 {
			// A server preface is a SETTINGS frame: length < 256, type 4.
			if s[0] != 0 || len(s) > 1 && s[1] != 0 || len(s) > 3 && s[3] != 4 {
				return No
			}
			return NeedMore
		}
		l := int(s[0])<<16 | int(s[1])<<8 | int(s[2])
		if s[3] == 4 && s[4]&^1 == 0 && binary.BigEndian.Uint32(s[5:]) == 0 && l%6 == 0 && l <= 6*16 {
			return Yes
		}
		return No
	}
	if p.Midstream && (h2FrameChain(c) || h2FrameChain(s)) {
		return Maybe
	}
	return No
}

func askedH2C(head []byte) bool {
	for len(head) > 0 {
		i := bytes.IndexByte(head, '\n')
		if i < 0 {
			i = len(head)
		}
		line := head[:i]
		if c := bytes.IndexByte(line, ':'); c > 0 && httpEqualFold(line[:c], "upgrade") &&
			httpContainsFold(line[c+1:], "h2c") {
			return true
		}
		head = head[min(i+1, len(head)):]
	}
	return false
}

// h2FrameChain reports at least two consecutive plausible frames (or one filling b exactly).
func h2FrameChain(b []byte) bool {
	off, n := 0, 0
	for off+9 <= len(b) {
		l := int(b[off])<<16 | int(b[off+1])<<8 | int(b[off+2])
		typ, stream := b[off+3], binary.BigEndian.Uint32(b[off+5:])&0x7fffffff
		if l > 1<<16 || typ > 9 || b[off+5]&0x80 != 0 {
			return false
		}
		switch typ {
		case 0, 1, 2, 3, 5, 9: // stream frames
			if stream == 0 {
				return false
			}
		case 4, 6, 7:
			if stream != 0 || typ == 4 && l%6 != 0 || typ == 6 && l != 8 {
				return false
			}
		}
		off += 9 + l
		n++
		if n >= 2 {
			return true
		}
	}
	return n == 1 && off == len(b)
}

type h2Mode uint8

const (
	h2Unknown h2Mode = iota
	h2Frames
	h2Upgrade // HTTP/1.1 until the 101 (server) or the preface (client)
	h2HTTP1   // the upgrade was refused: plain HTTP/1.1 from here on
	h2Stopped // framing lost after a gap: ignore the rest
)

type h2Dir struct {
	mode    h2Mode
	preface int // bytes of the client preface matched so far
	hdr     [9]byte
	nhdr    int
	remain  int // payload bytes left in the current frame
	typ     byte
	flags   byte
	stream  uint32
	payload []byte // current HEADERS/CONTINUATION/SETTINGS payload
	keep    bool   // collect this frame's payload
	block   []byte // header block fragments until END_HEADERS
	dec     *hpack.Decoder
	broken  bool // the HPACK table is out of sync (missed bytes): headers are guesses
	h1buf   []byte
	fields  h2Fields
}

// h2Fields are the headers of one block we care about.
type h2Fields struct {
	method, path, authority, status, ctype, grpcStatus, ua string
}

type http2Parser struct {
	d         [2]h2Dir
	h1        http1Parser
	msg       Message
	midstream bool
}

// Midstream: no preface to expect and HPACK state was missed; a direction that starts with
// HTTP/1.1 is the tail of an h2c upgrade (decided on its first bytes in Feed).
func (p *http2Parser) Midstream() {
	p.midstream = true
	for i := range p.d {
		p.d[i].preface, p.d[i].broken = len(h2Preface), true
	}
	p.h1.Midstream()
}

// Gap loses frame alignment in dir; we stop parsing that direction.
func (p *http2Parser) Gap(dir Direction) {
	d := &p.d[dir&1]
	if d.mode == h2HTTP1 {
		p.h1.Gap(dir)
		return
	}
	d.mode = h2Stopped
}

func (p *http2Parser) decoder(dir Direction) *hpack.Decoder {
	d := &p.d[dir&1]
	if d.dec == nil {
		d.dec = hpack.NewDecoder(4096, func(hf hpack.HeaderField) { d.fields.set(hf) })
		d.dec.SetMaxStringLength(MaxBuffer)
	}
	return d.dec
}

func (f *h2Fields) set(hf hpack.HeaderField) {
	switch hf.Name {
	case ":method":
		f.method = hf.Value
	case ":path":
		f.path = hf.Value
	case ":authority":
		f.authority = hf.Value
	case ":status":
		f.status = hf.Value
	case "content-type":
		f.ctype = hf.Value
	case "grpc-status":
		f.grpcStatus = hf.Value
	case "user-agent":
		f.ua = hf.Value
	case "host":
		if f.authority == "" {
			f.authority = hf.Value
		}
	}
}

func (p *http2Parser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	dir &= 1
	d := &p.d[dir]
	if d.mode == h2Unknown {
		d.mode = h2Frames
		if dir == ClientToServer && len(data) > 0 && data[0] != 'P' &&
			(!p.midstream || requestLineVerdict(data) == Yes) {
			d.mode = h2Upgrade
		}
		if dir == ServerToClient && bytes.HasPrefix(data, []byte("HTTP/1.")) {
			d.mode = h2Upgrade
		}
	}
	switch d.mode {
	case h2Upgrade:
		return p.upgrade(dir, d, data, emit)
	case h2HTTP1:
		return p.h1.Feed(dir, data, emit)
	case h2Frames:
		p.frames(dir, d, data, emit)
	}
	return nil
}

// upgrade handles the HTTP/1.1 prelude of an h2c upgrade.
func (p *http2Parser) upgrade(dir Direction, d *h2Dir, data []byte, emit func(*Message)) error {
	if dir == ClientToServer {
		if i := bytes.Index(data, []byte(h2Preface)); i >= 0 {
			if err := p.h1.Feed(dir, data[:i], emit); err != nil {
				return err
			}
			d.mode = h2Frames
			p.frames(dir, d, data[i:], emit)
			return nil
		}
		return p.h1.Feed(dir, data, emit)
	}
	if len(d.h1buf)+len(data) > 8<<10 {
		d.mode = h2HTTP1
		p.d[0].mode = h2HTTP1
		return p.h1.Feed(dir, append(d.h1buf, data...), emit)
	}
	d.h1buf = append(d.h1buf, data...)
	end := bytes.Index(d.h1buf, []byte("\r\n\r\n"))
	if end < 0 {
		return nil
	}
	buf := d.h1buf
	d.h1buf = nil
	if err := p.h1.Feed(dir, buf[:end+4], emit); err != nil {
		return err
	}
	if !bytes.HasPrefix(buf, []byte("HTTP/1.1 101")) {
		if len(buf) > 9 && buf[9] == '1' { // another interim response: keep waiting
			return p.upgrade(dir, d, buf[end+4:], emit)
		}
		d.mode, p.d[0].mode = h2HTTP1, h2HTTP1
		return p.h1.Feed(dir, buf[end+4:], emit)
	}
	d.mode = h2Frames
	d.preface = len(h2Preface)
	p.frames(dir, d, buf[end+4:], emit)
	return nil
}

func (p *http2Parser) frames(dir Direction, d *h2Dir, data []byte, emit func(*Message)) {
	if dir == ServerToClient {
		d.preface = len(h2Preface)
	}
	for d.preface < len(h2Preface) && len(data) > 0 {
		if data[0] != h2Preface[d.preface] { // no (more) preface: frames start here
			d.preface = len(h2Preface)
			break
		}
		d.preface++
		data = data[1:]
	}
	for len(data) > 0 {
		if d.remain == 0 && d.nhdr < 9 {
			n := copy(d.hdr[d.nhdr:], data)
			d.nhdr += n
			data = data[n:]
			if d.nhdr < 9 {
				return
			}
			d.remain = int(d.hdr[0])<<16 | int(d.hdr[1])<<8 | int(d.hdr[2])
			d.typ, d.flags = d.hdr[3], d.hdr[4]
			d.stream = binary.BigEndian.Uint32(d.hdr[5:]) & 0x7fffffff
			d.keep = (d.typ == 1 || d.typ == 9 || d.typ == 4) && d.remain <= MaxBuffer
			d.payload = d.payload[:0]
			if (d.typ == 1 || d.typ == 9) && !d.keep {
				d.broken, d.block = true, d.block[:0] // a block we cannot hold: HPACK state lost
			}
			if d.remain == 0 {
				p.frame(dir, d, emit)
				d.nhdr = 0
				continue
			}
		}
		n := min(d.remain, len(data))
		if d.keep {
			d.payload = append(d.payload, data[:n]...)
		}
		d.remain -= n
		data = data[n:]
		if d.remain == 0 {
			p.frame(dir, d, emit)
			d.nhdr = 0
		}
	}
}

// frame handles one complete frame whose payload (if kept) is in d.payload.
func (p *http2Parser) frame(dir Direction, d *h2Dir, emit func(*Message)) {
	b := d.payload
	switch d.typ {
	case 4: // SETTINGS: a header table size applies to the peer's encoder, our other decoder
		if d.flags&1 != 0 || !d.keep {
			return
		}
		for i := 0; i+6 <= len(b); i += 6 {
			if binary.BigEndian.Uint16(b[i:]) == 1 {
				p.decoder(dir ^ 1).SetAllowedMaxDynamicTableSize(min(binary.BigEndian.Uint32(b[i+2:]), MaxBuffer))
			}
		}
	case 1: // HEADERS
		if !d.keep {
			return
		}
		if d.flags&0x8 != 0 { // PADDED
			if len(b) < 1 || int(b[0]) >= len(b) {
				return
			}
			b = b[1 : len(b)-int(b[0])]
		}
		if d.flags&0x20 != 0 { // PRIORITY
			if len(b) < 5 {
				return
			}
			b = b[5:]
		}
		d.block = append(d.block[:0], b...)
		if d.flags&0x4 != 0 {
			p.headers(dir, d, emit)
		}
	case 9: // CONTINUATION
		if !d.keep || len(d.block)+len(b) > MaxBuffer {
			d.block = d.block[:0]
			return
		}
		d.block = append(d.block, b...)
		if d.flags&0x4 != 0 {
			p.headers(dir, d, emit)
		}
	}
}

func (p *http2Parser) headers(dir Direction, d *h2Dir, emit func(*Message)) {
	dec := p.decoder(dir)
	d.fields = h2Fields{}
	_, err := dec.Write(d.block)
	if err == nil {
		err = dec.Close()
	}
	d.block = d.block[:0]
	if err != nil {
		// The dynamic table is out of sync; start a fresh one so static-table fields decode.
		d.dec, d.broken = nil, true
	}
	f := &d.fields
	m := &p.msg
	switch {
	case f.method != "":
		m.Reset(dir, TypeRequest)
		m.AddString(AttrMethod, f.method)
		if f.authority != "" {
			m.AddString(AttrHost, f.authority)
		}
		m.AddString(AttrPath, f.path)
		if strings.HasPrefix(f.ctype, "application/grpc") {
			if svc, rpc, ok := grpcMethod(f.path); ok {
				m.AddString(AttrService, svc)
				m.AddString(AttrRPC, rpc)
			}
		}
		if f.ua != "" {
			m.AddString(AttrUserAgent, f.ua)
		}
	case f.status != "":
		m.Reset(dir, TypeResponse)
		m.AddString(AttrStatus, f.status)
		if f.grpcStatus != "" {
			m.AddString("grpc_status", f.grpcStatus)
		}
	case f.grpcStatus != "":
		m.Reset(dir, TypeTrailers)
		m.AddString("grpc_status", f.grpcStatus)
	default:
		return
	}
	emit(m)
}

// grpcMethod splits "/pkg.Service/Method".
func grpcMethod(path string) (svc, rpc string, ok bool) {
	if len(path) < 4 || path[0] != '/' {
		return "", "", false
	}
	i := strings.IndexByte(path[1:], '/')
	if i <= 0 || i+2 >= len(path) {
		return "", "", false
	}
	return path[1 : i+1], path[i+2:], true
}
