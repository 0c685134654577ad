package dpi

import (
	"bytes"
)

// HTTP1 is HTTP/1.0 and HTTP/1.1: requests (method, host, path, user agent) and responses
// (status), following keep-alive, Content-Length, chunked bodies, HEAD and CONNECT, and
// resynchronising on the next message start after a gap or a mid-stream start.
type HTTP1 struct{}

// Message types of HTTP1 (and of HTTP2, which reports the same shape).
const (
	TypeRequest  = "request"
	TypeResponse = "response"
)

func (HTTP1) Name() string          { return "http" }
func (HTTP1) Transports() Transport { return TCP }
func (HTTP1) Ports() []uint16       { return []uint16{80, 8000, 8008, 8080, 8888, 3128} }
func (HTTP1) NewParser() Parser     { return &http1Parser{} }

// Detect recognises a request line ending in HTTP/1.x, or a status line, from either side.
func (HTTP1) Detect(p *Probe) Verdict {
	c, s := No, No
	if len(p.Client) > 0 {
		if c = requestLineVerdict(p.Client); c == Yes {
			return Yes
		}
	}
	if len(p.Server) > 0 {
		if s = statusLineVerdict(p.Server); s == Yes {
			return Yes
		}
	}
	if p.Midstream && (findAnyMessageStart(p.Client) >= 0 || findAnyMessageStart(p.Server) >= 0) {
		return Yes
	}
	if c == NeedMore || s == NeedMore || len(p.Client)+len(p.Server) == 0 {
		return NeedMore
	}
	return No
}

// requestLineVerdict judges "METHOD SP target SP HTTP/1.x CRLF" at the start of b.
func requestLineVerdict(b []byte) Verdict {
	for len(b) > 0 && (b[0] == '\r' || b[0] == '\n') { // some clients send a stray CRLF first
		b = b[1:]
	}
	if len(b) == 0 {
		return NeedMore
	}
	i := 0
	for i < len(b) && i < 20 && httpTokenChar(b[i]) {
		i++
	}
	if i == len(b) {
		return NeedMore
	}
	if i == 0 || b[i] != ' ' {
		return No
	}
	end := bytes.IndexByte(b, '\n')
	if end < 0 {
		for _, c := range b[i:] {
			if c < ' ' && c != '\r' || c == 0x7f {
				return No
			}
		}
		if len(b) >= MaxProbe {
			return No
		}
		return NeedMore
	}
	if requestVersion(b[:end]) == nil {
		return No
	}
	return Yes
}

// requestVersion returns the HTTP/1.x version of a request line (without its \n), or nil.
func requestVersion(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\r"))
	sp := bytes.LastIndexByte(line, ' ')
	if sp < 0 {
		return nil
	}
	v := line[sp+1:]
	if len(v) != 8 || !bytes.HasPrefix(v, []byte("HTTP/1.")) || (v[7] != '0' && v[7] != '1') {
		return nil
	}
	for _, c := range line[:sp] {
		if c < ' ' || c == 0x7f {
			return nil
		}
	}
	return v
}

func statusLineVerdict(b []byte) Verdict {
	const prefix = "HTTP/1."
	n := min(len(b), len(prefix))
	if string(b[:n]) != prefix[:n] {
		return No
	}
	if len(b) < 13 {
		return NeedMore
	}
	if (b[7] == '0' || b[7] == '1') && b[8] == ' ' && httpDigit(b[9]) && httpDigit(b[10]) && httpDigit(b[11]) &&
		(b[12] == ' ' || b[12] == '\r' || b[12] == '\n') {
		return Yes
	}
	return No
}

func httpTokenChar(c byte) bool { return c >= 'A' && c <= 'Z' || c == '-' || c == '_' }
func httpDigit(c byte) bool     { return c >= '0' && c <= '9' }

// findMessageStart finds the offset of a request line (client) or status line (server) that
// starts b or a line of b, or -1.
func findMessageStart(b []byte, dir Direction) int {
	off := 0
	for off < len(b) {
		i := bytes.Index(b[off:], []byte("HTTP/1."))
		if i < 0 {
			return -1
		}
		i += off
		if dir == ServerToClient {
			if (i == 0 || b[i-1] == '\n') && statusLineVerdict(b[i:]) == Yes {
				return i
			}
		} else {
			ls := bytes.LastIndexByte(b[:i], '\n') + 1
			if requestLineVerdict(b[ls:]) == Yes {
				return ls
			}
		}
		off = i + 1
	}
	return -1
}

// findAnyMessageStart finds the first request or status line in b, or -1. A flow seen from the
// middle may have its sides guessed wrong, so resynchronisation accepts either kind.
func findAnyMessageStart(b []byte) int {
	i, j := findMessageStart(b, ClientToServer), findMessageStart(b, ServerToClient)
	switch {
	case i < 0:
		return j
	case j < 0 || i < j:
		return i
	}
	return j
}

type h1State uint8

const (
	h1Head h1State = iota
	h1Body
	h1ChunkSize
	h1ChunkData
	h1Trailer
	h1UntilClose
	h1Resync
)

type http1Dir struct {
	resp   bool // this side sends responses (normally the server; mid-stream it may be swapped)
	state  h1State
	remain int64
	buf    []byte // a header block or line split across segments; at most MaxBuffer
}

type http1Parser struct {
	d [2]http1Dir
	// Methods of requests awaiting a response, so HEAD and CONNECT responses are framed right.
	pending [16]uint8
	pr, pw  uint8
	msg     Message
	init    bool
}

const (
	reqOther uint8 = iota
	reqHead
	reqConnect
)

// Midstream starts both directions looking for the next message start.
func (p *http1Parser) Midstream() {
	p.d[0].state, p.d[1].state = h1Resync, h1Resync
}

// Gap resynchronises dir on the next message start.
func (p *http1Parser) Gap(dir Direction) {
	if !p.init {
		p.d[1].resp, p.init = true, true
	}
	p.d[dir&1] = http1Dir{state: h1Resync, resp: p.d[dir&1].resp, buf: p.d[dir&1].buf[:0]}
	p.pr, p.pw = 0, 0
}

func (p *http1Parser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	if !p.init { // the server side sends responses unless resynchronisation finds otherwise
		p.d[1].resp, p.init = true, true
	}
	d := &p.d[dir&1]
	for len(data) > 0 {
		switch d.state {
		case h1Head:
			data = p.head(dir, d, data, emit)
		case h1Body, h1ChunkData:
			n := int64(len(data))
			if n > d.remain {
				n = d.remain
			}
			data = data[n:]
			d.remain -= n
			if d.remain == 0 {
				if d.state == h1Body {
					d.state = h1Head
				} else {
					d.state = h1ChunkSize
				}
			}
		case h1ChunkSize, h1Trailer:
			var line []byte
			var ok bool
			line, data, ok = d.line(data)
			if !ok {
				continue
			}
			line = bytes.TrimRight(line, "\r")
			if d.state == h1Trailer {
				if len(line) == 0 {
					d.state = h1Head
				}
				d.buf = d.buf[:0]
				continue
			}
			size, valid := parseChunkSize(line)
			d.buf = d.buf[:0]
			switch {
			case !valid:
				d.state = h1Resync
			case size == 0:
				d.state = h1Trailer
			default:
				d.state, d.remain = h1ChunkData, size+2 // data and its CRLF
			}
		case h1UntilClose:
			return nil
		case h1Resync:
			i := findAnyMessageStart(data)
			if i < 0 {
				return nil
			}
			data = data[i:]
			d.resp = statusLineVerdict(data) == Yes
			d.state = h1Head
			d.buf = d.buf[:0]
		}
	}
	return nil
}

// line returns the next \n-terminated line from the buffered bytes and data, and the rest.
func (d *http1Dir) line(data []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(data, '\n')
	if i < 0 {
		if len(d.buf)+len(data) > 4096 { // no chunk-size or trailer line is this long
			d.state, d.buf = h1Resync, d.buf[:0]
			return nil, nil, false
		}
		d.buf = append(d.buf, data...)
		return nil, nil, false
	}
	if len(d.buf) == 0 {
		return data[:i], data[i+1:], true
	}
	d.buf = append(d.buf, data[:i]...)
	return d.buf, data[i+1:], true
}

func parseChunkSize(line []byte) (int64, bool) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		switch {
		case c >= '0' && c <= '9':
			n = n<<4 | int64(c-'0')
		case c >= 'a' && c <= 'f':
			n = n<<4 | int64(c-'a'+10)
		case c >= 'A' && c <= 'F':
			n = n<<4 | int64(c-'A'+10)
		default:
			return 0, false
		}
	}
	return n, true
}

// head collects one header block (possibly across segments) and processes it.
func (p *http1Parser) head(dir Direction, d *http1Dir, data []byte, emit func(*Message)) []byte {
	if len(d.buf) == 0 {
		for len(data) > 0 && (data[0] == '\r' || data[0] == '\n') { // tolerated between messages
			data = data[1:]
		}
		if len(data) == 0 {
			return nil
		}
		if !plausibleStart(data, d.resp) {
			d.state = h1Resync
			return data
		}
		if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
			p.message(dir, d, data[:i+4], emit)
			return data[i+4:]
		}
		if i := bytes.Index(data, []byte("\n\n")); i >= 0 {
			p.message(dir, d, data[:i+2], emit)
			return data[i+2:]
		}
	}
	old := len(d.buf)
	take := min(len(data), MaxBuffer-old)
	d.buf = append(d.buf, data[:take]...)
	from := max(0, old-3)
	end := -1
	if i := bytes.Index(d.buf[from:], []byte("\r\n\r\n")); i >= 0 {
		end = from + i + 4
	} else if i := bytes.Index(d.buf[from:], []byte("\n\n")); i >= 0 {
		end = from + i + 2
	}
	if end < 0 {
		if len(d.buf) >= MaxBuffer { // a header block this large is an attack or not HTTP
			d.state, d.buf = h1Resync, d.buf[:0]
		}
		return data[take:]
	}
	p.message(dir, d, d.buf[:end], emit)
	d.buf = d.buf[:0]
	return data[end-old:]
}

func plausibleStart(b []byte, resp bool) bool {
	if resp {
		return statusLineVerdict(b) != No
	}
	return requestLineVerdict(b) != No
}

// message parses a complete header block and sets up body framing.
func (p *http1Parser) message(dir Direction, d *http1Dir, block []byte, emit func(*Message)) {
	nl := bytes.IndexByte(block, '\n')
	first := bytes.TrimRight(block[:nl], "\r")
	var host, ua, cl, te, upgrade, ctype []byte
	rest := block[nl+1:]
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		line := bytes.TrimRight(rest[:i], "\r")
		rest = rest[i+1:]
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			continue
		}
		name, val := line[:c], bytes.TrimSpace(line[c+1:])
		switch {
		case httpEqualFold(name, "host"):
			host = val
		case httpEqualFold(name, "user-agent"):
			ua = val
		case httpEqualFold(name, "content-length"):
			cl = val
		case httpEqualFold(name, "transfer-encoding"):
			te = val
		case httpEqualFold(name, "upgrade"):
			upgrade = val
		case httpEqualFold(name, "content-type"):
			ctype = val
		}
	}
	chunked := len(te) > 0 && httpContainsFold(te, "chunked")
	length, hasLength := httpDecimal(cl)
	m := &p.msg
	if !d.resp {
		sp1 := bytes.IndexByte(first, ' ')
		sp2 := bytes.LastIndexByte(first, ' ')
		if sp1 < 0 || sp2 <= sp1 {
			d.state = h1Resync
			return
		}
		method := first[:sp1]
		kind := reqOther
		switch string(method) {
		case "HEAD":
			kind = reqHead
		case "CONNECT":
			kind = reqConnect
		}
		if p.pw-p.pr < uint8(len(p.pending)) {
			p.pending[p.pw%uint8(len(p.pending))] = kind
			p.pw++
		}
		m.Reset(dir, TypeRequest)
		m.Add(AttrMethod, method)
		if len(host) > 0 {
			m.Add(AttrHost, host)
		}
		m.Add(AttrPath, first[sp1+1:sp2])
		m.Add(AttrVersion, first[sp2+1:])
		if len(ua) > 0 {
			m.Add(AttrUserAgent, ua)
		}
		if len(upgrade) > 0 {
			m.Add("upgrade", upgrade)
		}
		emit(m)
		switch {
		case chunked:
			d.state = h1ChunkSize
		case hasLength && length > 0:
			d.state, d.remain = h1Body, length
		default:
			d.state = h1Head
		}
		return
	}
	if len(first) < 12 {
		d.state = h1Resync
		return
	}
	status := first[9:12]
	m.Reset(dir, TypeResponse)
	m.Add(AttrStatus, status)
	m.Add(AttrVersion, first[:8])
	if len(ctype) > 0 {
		m.Add("content_type", ctype)
	}
	emit(m)
	code := int(status[0]-'0')*100 + int(status[1]-'0')*10 + int(status[2]-'0')
	if code == 101 {
		// Switching protocols: what follows is not HTTP/1 in either direction.
		p.d[0].state, p.d[1].state = h1UntilClose, h1UntilClose
		return
	}
	if code >= 100 && code < 200 { // interim response; the final one follows
		d.state = h1Head
		return
	}
	kind := reqOther
	if p.pw != p.pr {
		kind = p.pending[p.pr%uint8(len(p.pending))]
		p.pr++
	}
	switch {
	case kind == reqConnect && code >= 200 && code < 300:
		p.d[0].state, p.d[1].state = h1UntilClose, h1UntilClose
	case kind == reqHead || code == 204 || code == 304:
		d.state = h1Head
	case chunked:
		d.state = h1ChunkSize
	case hasLength:
		if length > 0 {
			d.state, d.remain = h1Body, length
		} else {
			d.state = h1Head
		}
	default:
		d.state = h1UntilClose // body delimited by the end of the connection
	}
}

func httpDecimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if !httpDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// httpEqualFold compares b with the lowercase ASCII s, ignoring case, without allocating.
func httpEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// httpContainsFold reports whether b contains the lowercase ASCII s, ignoring case.
func httpContainsFold(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		if httpEqualFold(b[i:i+len(s)], s) {
			return true
		}
	}
	return false
}
