package dpi

import "bytes"

// FTP parses the FTP control connection: the server banner, commands (USER, RETR/STOR and
// other path commands, PASV/EPSV/PORT, AUTH TLS...) and final reply codes, multi-line replies
// included. PASS and ACCT arguments are never reported; after an accepted AUTH TLS the rest
// is TLS and ignored.
type FTP struct{}

func (FTP) Name() string          { return "ftp" }
func (FTP) Transports() Transport { return TCP }
func (FTP) Ports() []uint16       { return []uint16{21, 2121} }

func (FTP) Detect(p *Probe) Verdict { return textMailDetect(p)[tmFTP] }

// NewParser returns a parser for one control connection.
func (FTP) NewParser() Parser { return &ftpParser{} }

type ftpParser struct {
	lines       [2]lineReasm
	banner      bool
	multi       [3]byte // code of the multi-line reply in progress
	inMulti     bool
	multiBanner bool
	tls         bool
	tlsPending  bool
	msg         Message
	cmd         [8]byte
}

func (p *ftpParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
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

func (p *ftpParser) client(l []byte, emit func(*Message)) {
	w, rest := cutWord(l)
	if len(w) < 3 || len(w) > 4 || !isAlphaWord(w) {
		return
	}
	m := &p.msg
	cmd := upperInto(p.cmd[:0], w)
	m.Reset(ClientToServer, "command")
	m.Add(AttrCommand, cmd)
	rest = bytes.TrimSpace(rest)
	switch string(cmd) {
	case "PASS", "ACCT":
		// never the argument
	case "USER":
		m.Add(AttrUser, capBytes(rest, 128))
	case "RETR", "STOR", "STOU", "APPE", "DELE", "CWD", "XCWD", "MKD", "XMKD", "RMD", "XRMD",
		"SIZE", "MDTM", "LIST", "NLST", "MLSD", "MLST", "RNFR", "RNTO", "STAT":
		if len(rest) > 0 {
			m.Add(AttrPath, capBytes(rest, 256))
		}
	case "AUTH":
		m.Add("mechanism", capBytes(rest, 16))
		p.tlsPending = true
	case "PORT", "EPRT", "TYPE", "MODE", "STRU", "OPTS", "PROT":
		if len(rest) > 0 {
			m.Add("arg", capBytes(rest, 64))
		}
	}
	emit(m)
}

func (p *ftpParser) server(l []byte, emit func(*Message)) {
	if p.inMulti {
		if len(l) >= 4 && bytes.Equal(l[:3], p.multi[:]) && l[3] == ' ' {
			p.inMulti = false
			if !p.multiBanner {
				p.reply(l, emit)
			}
			p.multiBanner = false
		}
		return
	}
	code, final, ok := replyCode(l)
	if !ok {
		return
	}
	if !final {
		p.inMulti = true
		copy(p.multi[:], code)
		if !p.banner {
			p.multiBanner = true
			p.reply(l, emit) // the first line of a multi-line banner names the software
		}
		return
	}
	p.reply(l, emit)
}

func (p *ftpParser) reply(l []byte, emit func(*Message)) {
	m := &p.msg
	code := l[:3]
	if !p.banner {
		p.banner = true
		m.Reset(ServerToClient, "banner")
		m.Add(AttrStatus, code)
		if len(l) > 4 {
			m.Add(AttrSoftware, capBytes(bytes.TrimSpace(l[4:]), 128))
		}
		emit(m)
		return
	}
	m.Reset(ServerToClient, "reply")
	m.Add(AttrStatus, code)
	emit(m)
	switch {
	case p.tlsPending && code[0] == '2':
		p.tls = true
	case code[0] != '3':
		p.tlsPending = false
	}
}

// Midstream: the banner was missed, so the first reply is an ordinary one.
func (p *ftpParser) Midstream() { p.banner = true }

// Gap: bytes of dir were lost; drop the partial line and resynchronise on the next one.
func (p *ftpParser) Gap(dir Direction) {
	p.lines[dir&1] = lineReasm{dropping: true}
}
