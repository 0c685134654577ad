package dpi

import (
	"bytes"
	"strconv"
)

// SMTP parses SMTP/ESMTP/LMTP: the server banner, commands (EHLO/HELO host, MAIL FROM, RCPT
// TO, AUTH mechanism, DATA, BDAT, STARTTLS...) and final reply codes. Message contents are
// counted, not reported; AUTH exchanges are skipped (they carry credentials); after an
// accepted STARTTLS the rest is TLS and ignored.
type SMTP struct{}

func (SMTP) Name() string          { return "smtp" }
func (SMTP) Transports() Transport { return TCP }
func (SMTP) Ports() []uint16       { return []uint16{25, 465, 587, 2525, 24} }

func (SMTP) Detect(p *Probe) Verdict { return textMailDetect(p)[tmSMTP] }

// NewParser returns a parser for one session.
func (SMTP) NewParser() Parser { return &smtpParser{} }

type smtpParser struct {
	lines      [2]lineReasm
	banner     bool
	inData     bool
	dataBytes  int
	auth       bool // client lines are SASL responses until a final non-334 reply
	tls        bool
	tlsPending bool
	pending    int // commands sent and not yet answered
	dataAt     int // the reply number (counting down) that answers DATA; 0 when none
	msg        Message
	cmd        [12]byte
	mech       [24]byte
	num        [20]byte
}

func (p *smtpParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	if p.tls {
		return nil
	}
	dir &= 1
	p.lines[dir].feed(data, 4096, func(l []byte) int {
		if p.tls {
			return 0
		}
		if dir == ClientToServer {
			return p.client(l, emit)
		}
		p.server(l, emit)
		return 0
	})
	return nil
}

func (p *smtpParser) client(l []byte, emit func(*Message)) int {
	m := &p.msg
	if p.inData {
		if len(l) == 1 && l[0] == '.' {
			p.inData = false
			p.pending++
			m.Reset(ClientToServer, "data")
			m.Add("bytes", strconv.AppendInt(p.num[:0], int64(p.dataBytes), 10))
			emit(m)
		} else {
			p.dataBytes += len(l) + 2
		}
		return 0
	}
	if p.auth {
		return 0
	}
	w, rest := cutWord(l)
	if len(w) == 0 || len(w) > 12 || !isAlphaWord(w) {
		return 0
	}
	p.pending++
	cmd := upperInto(p.cmd[:0], w)
	m.Reset(ClientToServer, "command")
	m.Add(AttrCommand, cmd)
	skip := 0
	switch string(cmd) {
	case "EHLO", "HELO", "LHLO":
		m.Add(AttrHost, capBytes(bytes.TrimSpace(rest), 255))
	case "MAIL", "RCPT":
		_, addr, _ := bytes.Cut(rest, []byte{':'})
		addr = bytes.TrimSpace(addr)
		if i := bytes.IndexByte(addr, '>'); i >= 0 {
			addr = addr[:i+1]
		}
		key := "from"
		if cmd[0] == 'R' {
			key = "to"
		}
		m.Add(key, capBytes(addr, 256))
	case "AUTH":
		mech, _ := cutWord(rest)
		m.Add("mechanism", upperInto(p.mech[:0], mech)) // never the initial response
		p.auth = true
	case "DATA":
		p.inData, p.dataBytes, p.dataAt = true, 0, p.pending
	case "BDAT":
		n, _ := cutWord(rest)
		if v, err := strconv.Atoi(string(n)); err == nil && v > 0 {
			skip = v
			p.dataBytes = v
		}
	case "STARTTLS":
		p.tlsPending = true
	}
	emit(m)
	return skip
}

func (p *smtpParser) server(l []byte, emit func(*Message)) {
	code, final, ok := replyCode(l)
	if !ok || !final {
		return
	}
	m := &p.msg
	if !p.banner {
		p.banner = true
		m.Reset(ServerToClient, "banner")
		m.Add(AttrStatus, code)
		if len(l) > 4 {
			m.Add(AttrSoftware, capBytes(l[4:], 128))
		}
		emit(m)
		return
	}
	if p.pending > 0 {
		p.pending--
	}
	if p.dataAt > 0 {
		if p.dataAt--; p.dataAt == 0 && string(code) != "354" {
			p.inData = false // DATA refused: what follows are commands
		}
	}
	if string(code) != "334" {
		p.auth = false
	}
	m.Reset(ServerToClient, "reply")
	m.Add(AttrStatus, code)
	emit(m)
	switch {
	case p.tlsPending && string(code) == "220":
		p.tls = true
	case code[0] == '4' || code[0] == '5':
		p.tlsPending = false
	}
}

// Midstream: the banner was missed, so the first reply is an ordinary one.
func (p *smtpParser) Midstream() { p.banner = true }

// Gap: bytes of dir were lost; drop the partial line and resynchronise on the next one.
func (p *smtpParser) Gap(dir Direction) {
	p.lines[dir&1] = lineReasm{dropping: true}
}
