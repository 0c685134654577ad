package dpi

import "bytes"

// POP3 parses POP3: the greeting, commands (USER, APOP user, RETR/TOP/DELE message numbers,
// AUTH mechanism, STLS...) and +OK/-ERR replies, skipping multi-line responses (message
// contents, listings). PASS arguments, APOP digests and AUTH exchanges are never reported.
type POP3 struct{}

func (POP3) Name() string          { return "pop3" }
func (POP3) Transports() Transport { return TCP }
func (POP3) Ports() []uint16       { return []uint16{110, 995} }

func (POP3) Detect(p *Probe) Verdict { return textMailDetect(p)[tmPOP3] }

// NewParser returns a parser for one session.
func (POP3) NewParser() Parser { return &pop3Parser{} }

type pop3Parser struct {
	lines  [2]lineReasm
	banner bool
	// Pending commands in order, true when their +OK answer is multi-line.
	queue      [16]bool
	head, n    int
	inMulti    bool
	auth       bool
	tls        bool
	tlsPending bool
	msg        Message
	cmd        [8]byte
}

func (p *pop3Parser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	if p.tls {
		return nil
	}
	dir &= 1
	p.lines[dir].feed(data, 4096, func(l []byte) int {
		if p.tls {
			return 0
		}
		if dir == ClientToServer {
			p.client(l, emit)
		} else {
			p.server(l, emit)
		}
		return 0
	})
	return nil
}

func (p *pop3Parser) push(multi bool) {
	if p.n == len(p.queue) {
		return
	}
	p.queue[(p.head+p.n)%len(p.queue)] = multi
	p.n++
}

func (p *pop3Parser) pop() bool {
	if p.n == 0 {
		return false
	}
	v := p.queue[p.head]
	p.head = (p.head + 1) % len(p.queue)
	p.n--
	return v
}

func (p *pop3Parser) client(l []byte, emit func(*Message)) {
	if p.auth {
		return // SASL responses
	}
	w, rest := cutWord(l)
	if len(w) < 3 || len(w) > 4 || !isAlphaWord(w) {
		return
	}
	m := &p.msg
	cmd := upperInto(p.cmd[:0], w)
	m.Reset(ClientToServer, "command")
	m.Add(AttrCommand, cmd)
	rest = bytes.TrimSpace(rest)
	multi := false
	switch string(cmd) {
	case "USER":
		m.Add(AttrUser, capBytes(rest, 128))
	case "APOP":
		u, _ := cutWord(rest)
		m.Add(AttrUser, capBytes(u, 128))
	case "RETR", "TOP":
		multi = true
		fallthrough
	case "DELE":
		n, _ := cutWord(rest)
		m.Add("arg", capBytes(n, 16))
	case "LIST", "UIDL":
		multi = len(rest) == 0
		if !multi {
			m.Add("arg", capBytes(rest, 16))
		}
	case "CAPA":
		multi = true
	case "AUTH":
		if len(rest) == 0 {
			multi = true // lists mechanisms
		} else {
			mech, _ := cutWord(rest)
			m.Add("mechanism", capBytes(mech, 24))
			p.auth = true
		}
	case "STLS":
		p.tlsPending = true
	}
	p.push(multi)
	emit(m)
}

func (p *pop3Parser) server(l []byte, emit func(*Message)) {
	if p.inMulti {
		if len(l) == 1 && l[0] == '.' {
			p.inMulti = false
		}
		return
	}
	var status []byte
	switch {
	case bytes.HasPrefix(l, []byte("+OK")):
		status = l[:3]
	case bytes.HasPrefix(l, []byte("-ERR")):
		status = l[:4]
	default:
		return // "+ " SASL challenges and noise
	}
	m := &p.msg
	if !p.banner {
		p.banner = true
		m.Reset(ServerToClient, "banner")
		m.Add(AttrStatus, status)
		if len(l) > len(status)+1 {
			m.Add(AttrSoftware, capBytes(l[len(status)+1:], 128))
		}
		emit(m)
		return
	}
	p.auth = false
	multi := p.pop()
	if status[0] == '+' && multi {
		p.inMulti = true
	}
	m.Reset(ServerToClient, "reply")
	m.Add(AttrStatus, status)
	emit(m)
	if p.tlsPending {
		p.tlsPending = false
		p.tls = status[0] == '+'
	}
}

// Midstream: the greeting was missed, so the first status line is an ordinary reply.
func (p *pop3Parser) Midstream() { p.banner = true }

// Gap: bytes of dir were lost; drop the partial line and resynchronise on the next one.
func (p *pop3Parser) Gap(dir Direction) {
	p.lines[dir&1] = lineReasm{dropping: true}
}
