package dpi

import (
	"bytes"
	"strconv"
)

// IMAP parses IMAP4: the greeting, tagged commands (LOGIN user, SELECT/EXAMINE/CREATE...
// mailbox, UID FETCH...) and tagged OK/NO/BAD completions. Literals ({n}) are skipped by
// length in both directions, so message bodies and literal passwords are never read as
// commands; LOGIN passwords and AUTHENTICATE exchanges are never reported; after an accepted
// STARTTLS the rest is TLS and ignored.
type IMAP struct{}

func (IMAP) Name() string          { return "imap" }
func (IMAP) Transports() Transport { return TCP }
func (IMAP) Ports() []uint16       { return []uint16{143, 993} }

func (IMAP) Detect(p *Probe) Verdict { return textMailDetect(p)[tmIMAP] }

// NewParser returns a parser for one session.
func (IMAP) NewParser() Parser { return &imapParser{} }

type imapParser struct {
	lines   [2]lineReasm
	cont    [2]bool // the next line continues a command or response after a literal
	banner  bool
	auth    bool
	tls     bool
	tlsTag  [16]byte
	tlsTagN int
	msg     Message
	cmd     [24]byte
}

func (p *imapParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	if p.tls {
		return nil
	}
	dir &= 1
	p.lines[dir].feed(data, 8192, func(l []byte) int {
		if p.tls {
			return 0
		}
		cont := p.cont[dir]
		n := imapLiteral(l)
		p.cont[dir] = n >= 0
		if !cont {
			if dir == ClientToServer {
				p.client(l, emit)
			} else {
				p.server(l, emit)
			}
		}
		return max(n, 0)
	})
	return nil
}

// imapLiteral returns n when the line ends with a literal announcement {n} or {n+}, else -1.
func imapLiteral(l []byte) int {
	if len(l) < 3 || l[len(l)-1] != '}' {
		return -1
	}
	i := bytes.LastIndexByte(l, '{')
	if i < 0 {
		return -1
	}
	d := bytes.TrimSuffix(l[i+1:len(l)-1], []byte{'+'})
	n, err := strconv.Atoi(string(d))
	if err != nil || n < 0 || n > 1<<30 {
		return -1
	}
	return n
}

func (p *imapParser) client(l []byte, emit func(*Message)) {
	if p.auth {
		return // SASL responses until the tagged completion
	}
	tag, rest := cutWord(l)
	w, rest := cutWord(rest)
	if len(tag) == 0 || len(tag) > 32 || len(w) == 0 || len(w) > 16 || !isAlphaWord(w) {
		return
	}
	m := &p.msg
	cmd := upperInto(p.cmd[:0:16], w)
	if string(cmd) == "UID" {
		sub, r := cutWord(rest)
		rest = r
		cmd = append(cmd, ' ')
		cmd = append(cmd, upperInto(p.cmd[len(cmd):len(cmd):24], sub)...)
	}
	m.Reset(ClientToServer, "command")
	m.Add(AttrCommand, cmd)
	m.Add("tag", capBytes(tag, 32))
	switch string(cmd) {
	case "LOGIN":
		if u := imapAString(rest); u != nil {
			m.Add(AttrUser, capBytes(u, 128))
		}
	case "SELECT", "EXAMINE", "CREATE", "DELETE", "STATUS", "APPEND", "SUBSCRIBE", "UNSUBSCRIBE", "RENAME", "GETQUOTAROOT":
		if mb := imapAString(rest); mb != nil {
			m.Add(AttrName, capBytes(mb, 256))
		}
	case "AUTHENTICATE":
		mech, ir := cutWord(rest)
		m.Add("mechanism", capBytes(mech, 24))
		p.auth = len(ir) == 0 // with an initial response there is usually no exchange
	case "STARTTLS":
		p.tlsTagN = copy(p.tlsTag[:], tag)
	}
	emit(m)
}

// imapAString returns the first atom or quoted string of s (nil for a literal).
func imapAString(s []byte) []byte {
	if len(s) == 0 || s[0] == '{' {
		return nil
	}
	if s[0] == '"' {
		var i int
		for i = 1; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' {
				i++
			}
		}
		return s[1:min(i, len(s))]
	}
	w, _ := cutWord(s)
	return w
}

func (p *imapParser) server(l []byte, emit func(*Message)) {
	m := &p.msg
	tag, rest := cutWord(l)
	status, text := cutWord(rest)
	if !p.banner {
		if string(tag) != "*" || !eqWord(status, "OK", "PREAUTH", "BYE") {
			return
		}
		p.banner = true
		m.Reset(ServerToClient, "banner")
		m.Add(AttrStatus, status)
		if len(text) > 0 {
			m.Add(AttrSoftware, capBytes(text, 128))
		}
		emit(m)
		return
	}
	if len(tag) == 0 || string(tag) == "*" || string(tag) == "+" || !eqWord(status, "OK", "NO", "BAD") {
		return
	}
	p.auth = false
	m.Reset(ServerToClient, "reply")
	m.Add(AttrStatus, status)
	m.Add("tag", capBytes(tag, 32))
	emit(m)
	if p.tlsTagN > 0 && bytes.Equal(tag, p.tlsTag[:p.tlsTagN]) {
		p.tls = eqWord(status, "OK")
		p.tlsTagN = 0
	}
}

// Midstream: the greeting was missed; tagged completions are reported from the start.
func (p *imapParser) Midstream() { p.banner = true }

// Gap: bytes of dir were lost; drop the partial line and resynchronise on the next one.
func (p *imapParser) Gap(dir Direction) {
	p.lines[dir&1] = lineReasm{dropping: true}
	p.cont[dir&1] = false
}
