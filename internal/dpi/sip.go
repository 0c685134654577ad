package dpi

import "bytes"

// SIP is the Session Initiation Protocol (RFC 3261) over UDP (one message per datagram) and
// TCP (framed by Content-Length). Requests report the method, Request-URI, From, To, Call-ID,
// CSeq and User-Agent; responses the status code, reason and Server. Authorization headers
// are never read.
type SIP struct{}

func (SIP) Name() string          { return "sip" }
func (SIP) Transports() Transport { return TCP | UDP }
func (SIP) Ports() []uint16       { return []uint16{5060, 5061} }
func (SIP) NewParser() Parser     { return newTextMsgParser(&sipConf) }

func (SIP) Detect(p *Probe) Verdict { return textMsgDetect(&sipConf, p) }

var sipConf = textMsgConf{
	proto:   "sip",
	version: []string{"SIP/2.0"},
	methods: []string{"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "PRACK",
		"SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"},
	headers: map[string]string{
		"from": "from", "f": "from", "to": "to", "t": "to", "call-id": "call_id",
		"i": "call_id", "cseq": "cseq", "user-agent": AttrUserAgent, "server": AttrSoftware,
		"content-length": "content-length", "l": "content-length",
	},
	uriAttr: "uri",
}

// textMsgConf describes an HTTP-like text protocol (SIP, RTSP).
type textMsgConf struct {
	proto   string
	version []string          // start-line version tokens ("SIP/2.0", "RTSP/1.0")
	methods []string          // request methods, uppercase
	headers map[string]string // lowercase header name -> attribute key
	binary  bool              // RTSP interleaved '$' frames between messages
	uriAttr string            // attribute for the request target
}

// textMsgStart classifies a start line: a request (method, uri) or a response (status).
func textMsgStart(c *textMsgConf, l []byte) (method string, uri, status, reason []byte, ok bool) {
	for _, v := range c.version {
		if bytes.HasPrefix(l, []byte(v)) && len(l) >= len(v)+4 && l[len(v)] == ' ' {
			s := l[len(v)+1:]
			if len(s) < 3 || s[0] < '1' || s[0] > '6' || s[1] < '0' || s[1] > '9' ||
				s[2] < '0' || s[2] > '9' || (len(s) > 3 && s[3] != ' ') {
				return "", nil, nil, nil, false
			}
			if len(s) > 4 {
				reason = s[4:]
			}
			return "", nil, s[:3], reason, true
		}
	}
	sp := bytes.IndexByte(l, ' ')
	if sp <= 0 {
		return "", nil, nil, nil, false
	}
	for _, m := range c.methods {
		if string(l[:sp]) == m {
			method = m
			break
		}
	}
	if method == "" {
		return "", nil, nil, nil, false
	}
	rest := l[sp+1:]
	sp2 := bytes.LastIndexByte(rest, ' ')
	if sp2 <= 0 {
		return "", nil, nil, nil, false
	}
	ver := rest[sp2+1:]
	for _, v := range c.version {
		if string(ver) == v {
			return method, rest[:sp2], nil, nil, true
		}
	}
	return "", nil, nil, nil, false
}

func textMsgDetect(c *textMsgConf, p *Probe) Verdict {
	v := No
	for _, b := range [][]byte{p.Client, p.Server} {
		b = bytes.TrimLeft(b, "\r\n") // SIP keep-alives (RFC 5626) may come first
		if len(b) == 0 {
			continue
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if len(b) < 512 && textMsgPrefixOK(c, b) {
				v = max(v, NeedMore)
			}
			continue
		}
		if _, _, _, _, ok := textMsgStart(c, bytes.TrimSuffix(b[:i], []byte{'\r'})); ok {
			return Yes
		}
	}
	return v
}

// textMsgPrefixOK: could b be the beginning of a start line?
func textMsgPrefixOK(c *textMsgConf, b []byte) bool {
	for _, s := range c.version {
		if bytes.HasPrefix([]byte(s), b) || bytes.HasPrefix(b, []byte(s+" ")) {
			return true
		}
	}
	for _, m := range c.methods {
		if bytes.HasPrefix([]byte(m+" "), b) || bytes.HasPrefix(b, []byte(m+" ")) {
			return true
		}
	}
	return false
}

type textMsgDir struct {
	lr     lineReasm
	inMsg  bool
	clen   int
	hdrLen int
	dollar [4]byte
	nd     int
	skip   int
}

type textMsgParser struct {
	c   *textMsgConf
	d   [2]textMsgDir
	msg [2]Message
	sc  [2]scratch
}

func newTextMsgParser(c *textMsgConf) *textMsgParser { return &textMsgParser{c: c} }

const textMsgMaxLine = 8 << 10

func (p *textMsgParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	d := &p.d[dir&1]
	if (d.skip > 0 || d.lr.skip > 0 || len(d.lr.buf) > 0 || d.inMsg || d.lr.dropping || d.nd > 0) &&
		textMsgStarts(p.c, data) {
		// A new message where the old one was still pending (a UDP datagram after a short
		// or lying one, or a stream resuming): resynchronise on it.
		d.skip, d.lr.skip, d.lr.buf, d.lr.dropping, d.inMsg, d.nd = 0, 0, d.lr.buf[:0], false, false, 0
	}
	for len(data) > 0 {
		if d.skip > 0 {
			if len(data) <= d.skip {
				d.skip -= len(data)
				return nil
			}
			data = data[d.skip:]
			d.skip = 0
			continue
		}
		if p.c.binary && !d.inMsg && len(d.lr.buf) == 0 && !d.lr.dropping && (d.nd > 0 || data[0] == '$') {
			for d.nd < 4 && len(data) > 0 {
				d.dollar[d.nd] = data[0]
				d.nd++
				data = data[1:]
			}
			if d.nd < 4 {
				return nil
			}
			d.nd = 0
			d.skip = int(d.dollar[2])<<8 | int(d.dollar[3])
			continue
		}
		rest, ok := d.lr.feed(data, textMsgMaxLine, func(l []byte) int { return p.line(dir, l, emit) })
		if !ok {
			return errNotThisProtocol(p.c.proto)
		}
		data = rest
	}
	return nil
}

// textMsgStarts: does b begin with a start line?
func textMsgStarts(c *textMsgConf, b []byte) bool {
	i := bytes.IndexByte(capBytes(b, 2048), '\n')
	if i < 0 {
		return false
	}
	_, _, _, _, ok := textMsgStart(c, bytes.TrimSuffix(b[:i], []byte{'\r'}))
	return ok
}

func (p *textMsgParser) line(dir Direction, l []byte, emit func(*Message)) int {
	d := &p.d[dir&1]
	m := &p.msg[dir&1]
	sc := &p.sc[dir&1]
	if !d.inMsg {
		if len(l) == 0 {
			return 0 // keep-alive CRLFs
		}
		method, uri, status, reason, ok := textMsgStart(p.c, l)
		if !ok {
			return 0 // not a start line: resynchronise on the next one
		}
		d.inMsg, d.clen, d.hdrLen = true, 0, 0
		sc.reset()
		if method != "" {
			m.Reset(dir, "request")
			m.AddString(AttrMethod, method)
			m.Add(p.c.uriAttr, sc.copy(capBytes(uri, 1024)))
		} else {
			m.Reset(dir, "response")
			m.Add(AttrStatus, sc.copy(status))
			if len(reason) > 0 {
				m.Add("reason", sc.copy(capBytes(reason, 128)))
			}
		}
		return 0
	}
	if len(l) == 0 { // end of the header block; the body is skipped by the caller
		d.inMsg = false
		emit(m)
		d.skip = d.clen
		d.lr.stop = true
		return 0
	}
	d.hdrLen += len(l)
	if d.hdrLen > 64<<10 { // an endless header block: give up on this message
		d.inMsg = false
		return 0
	}
	c := bytes.IndexByte(l, ':')
	if c <= 0 || c > 32 {
		return 0
	}
	var lower [32]byte
	name := bytes.TrimRight(l[:c], " \t")
	for i, ch := range name {
		lower[i] = ch | 0x20
	}
	key, ok := p.c.headers[string(lower[:len(name)])]
	if !ok {
		return 0
	}
	v := bytes.TrimSpace(l[c+1:])
	if key == "content-length" {
		if n := natsNumber(v); n >= 0 {
			d.clen = n
		}
		return 0
	}
	if m.Get(key) == nil {
		m.Add(key, sc.copy(capBytes(v, 256)))
	}
	return 0
}

func (s *scratch) copy(v []byte) []byte {
	start := len(s.b)
	s.b = append(s.b, v...)
	return s.b[start:len(s.b):len(s.b)]
}
