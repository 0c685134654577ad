package dpi

import "bytes"

// Syslog is BSD syslog (RFC 3164) and the syslog protocol (RFC 5424) over UDP (one message per
// datagram) and TCP (RFC 6587: octet counting "LEN <PRI>..." or newline-delimited). Reports
// facility, severity, hostname, app name and, for RFC 5424, the version and msgid. The free
// text of the message is not recorded: logs carry secrets more often than they should.
type Syslog struct{}

func (Syslog) Name() string          { return "syslog" }
func (Syslog) Transports() Transport { return TCP | UDP }
func (Syslog) Ports() []uint16       { return []uint16{514, 601, 6514} }
func (Syslog) NewParser() Parser     { return &syslogParser{} }

var syslogFacilities = [...]string{"kern", "user", "mail", "daemon", "auth", "syslog", "lpr",
	"news", "uucp", "cron", "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0",
	"local1", "local2", "local3", "local4", "local5", "local6", "local7"}

var syslogSeverities = [...]string{"emerg", "alert", "crit", "err", "warning", "notice",
	"info", "debug"}

var syslogMonths = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
	"Oct", "Nov", "Dec"}

// syslogPRI parses "<PRI>" at the start of b: pri, bytes used, ok. need is true when b is a
// valid but incomplete prefix.
func syslogPRI(b []byte) (pri, n int, need, ok bool) {
	if len(b) == 0 {
		return 0, 0, true, false
	}
	if b[0] != '<' {
		return 0, 0, false, false
	}
	for i := 1; i < len(b) && i <= 4; i++ {
		c := b[i]
		if c == '>' {
			if i == 1 || pri > 191 || (b[1] == '0' && i > 2) {
				return 0, 0, false, false
			}
			return pri, i + 1, false, true
		}
		if c < '0' || c > '9' {
			return 0, 0, false, false
		}
		pri = pri*10 + int(c-'0')
	}
	if len(b) <= 4 {
		return 0, 0, true, false
	}
	return 0, 0, false, false
}

// syslogHeaderOK: after the PRI, an RFC 5424 version ("1 ") or an RFC 3164 timestamp
// ("Mmm dd hh:mm:ss") or an ISO timestamp (some 3164 senders).
func syslogHeaderOK(b []byte) (ok, need bool) {
	if len(b) < 2 {
		return false, true
	}
	if b[0] == '1' && b[1] == ' ' {
		return true, false
	}
	if len(b) < 15 {
		for _, m := range syslogMonths {
			if bytes.HasPrefix([]byte(m), capBytes(b, 3)) {
				return false, true
			}
		}
		return false, b[0] >= '0' && b[0] <= '9'
	}
	for _, m := range syslogMonths {
		if string(b[:3]) == m && b[3] == ' ' && b[6] == ' ' && b[9] == ':' && b[12] == ':' {
			return true, false
		}
	}
	// "2026-11-25T..." timestamps without the 5424 version.
	if b[4] == '-' && b[7] == '-' && b[10] == 'T' {
		return true, false
	}
	return false, false
}

func (Syslog) Detect(p *Probe) Verdict {
	b := p.Client
	if len(b) == 0 {
		return No
	}
	if p.Transport == TCP && b[0] >= '1' && b[0] <= '9' { // octet counting
		i := 0
		for i < len(b) && i < 8 && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == len(b) {
			return NeedMore
		}
		if b[i] != ' ' {
			return No
		}
		b = b[i+1:]
	}
	_, n, need, ok := syslogPRI(b)
	if need {
		return NeedMore
	}
	if !ok {
		return No
	}
	hok, hneed := syslogHeaderOK(b[n:])
	switch {
	case hok:
		return Yes
	case hneed:
		return NeedMore
	}
	return Maybe // a PRI and free text: RFC 3164 allows it, weakly
}

type syslogParser struct {
	lr      lineReasm
	octets  bool // octet-counting framing seen
	pending int  // octet-counted bytes of the current message still to come
	buf     []byte
	msg     Message
	lines   bool // newline framing seen: a chunk without '\n' is part of a line
}

const syslogMaxMsg = 8 << 10

func (p *syslogParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	if dir != ClientToServer {
		return nil // syslog is one-way; anything back is not ours to read
	}
	if len(p.lr.buf) > 0 && !p.lines && !p.octets && p.pending == 0 {
		if _, _, _, ok := syslogPRI(data); ok {
			// The pending bytes were a whole datagram without a newline (too short for the
			// header check below), and this is the next one.
			p.message(dir, bytes.TrimRight(p.lr.buf, "\r\x00"), emit)
			p.lr.buf = p.lr.buf[:0]
		}
	}
	if len(p.lr.buf) == 0 && !p.lr.dropping && p.pending == 0 && len(p.buf) == 0 {
		if _, _, _, ok := syslogPRI(data); ok && (bytes.IndexByte(data, '\n') < 0 ||
			bytes.IndexByte(data, '\n') == len(data)-1) {
			// One whole message: a segment holding exactly one line, or a datagram. A chunk
			// without a newline may also be the head of a TCP line: it is taken as a whole
			// message only when it holds the complete header, so the result is the same.
			if data[len(data)-1] == '\n' || !p.octets && !p.lines && syslogHeaderComplete(data) {
				p.message(dir, bytes.TrimRight(data, "\r\n\x00"), emit)
				p.lines = p.lines || data[len(data)-1] == '\n'
				return nil
			}
		}
	}
	for len(data) > 0 {
		if p.pending > 0 { // inside an octet-counted message
			n := min(p.pending, len(data))
			if len(p.buf)+n <= syslogMaxMsg {
				p.buf = append(p.buf, data[:n]...)
			}
			p.pending -= n
			data = data[n:]
			if p.pending == 0 {
				p.message(dir, p.buf, emit)
				p.buf = p.buf[:0]
			}
			continue
		}
		if len(p.lr.buf) == 0 && !p.lr.dropping && (data[0] >= '1' && data[0] <= '9' || len(p.buf) > 0) {
			// Octet counting: "LEN " then LEN bytes. Collect the digits across segments.
			i := 0
			for i < len(data) && data[i] >= '0' && data[i] <= '9' && len(p.buf) < 8 {
				p.buf = append(p.buf, data[i])
				i++
			}
			if i == len(data) {
				return nil
			}
			if data[i] != ' ' || len(p.buf) == 0 {
				p.buf = p.buf[:0]
				// Not octet counting after all: treat as a line.
			} else {
				n := natsNumber(p.buf)
				p.buf = p.buf[:0]
				if n <= 0 {
					return errNotThisProtocol("syslog")
				}
				p.octets = true
				p.pending = n
				data = data[i+1:]
				continue
			}
		}
		rest, ok := p.lr.feed(data, syslogMaxMsg, func(l []byte) int {
			if len(l) > 0 {
				p.message(dir, bytes.TrimRight(l, "\r\x00"), emit)
			}
			p.lines = !p.octets
			if p.octets {
				p.lr.stop = true
			}
			return 0
		})
		if !ok {
			return errNotThisProtocol("syslog")
		}
		data = rest
	}
	return nil
}

func (p *syslogParser) message(dir Direction, b []byte, emit func(*Message)) {
	pri, n, _, ok := syslogPRI(b)
	if !ok {
		return
	}
	m := &p.msg
	m.Reset(dir, "log")
	if f := pri >> 3; f < len(syslogFacilities) {
		m.AddString("facility", syslogFacilities[f])
	}
	m.AddString("severity", syslogSeverities[pri&7])
	b = b[n:]
	if len(b) >= 2 && b[0] == '1' && b[1] == ' ' {
		// RFC 5424: VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID
		m.AddString(AttrVersion, "1")
		var f [6][]byte
		rest := b[2:]
		for i := 0; i < 5; i++ {
			j := bytes.IndexByte(rest, ' ')
			if j < 0 {
				f[i] = rest
				rest = nil
				break
			}
			f[i], rest = rest[:j], rest[j+1:]
		}
		if h := f[1]; len(h) > 0 && string(h) != "-" {
			m.Add(AttrHost, capBytes(h, 255))
		}
		if a := f[2]; len(a) > 0 && string(a) != "-" {
			m.Add(AttrName, capBytes(a, 48))
		}
		if id := f[4]; len(id) > 0 && string(id) != "-" {
			m.Add("msgid", capBytes(id, 32))
		}
		emit(m)
		return
	}
	// RFC 3164: "Mmm dd hh:mm:ss HOSTNAME TAG[pid]: MSG" (HOSTNAME often missing locally).
	if len(b) >= 16 && b[3] == ' ' && b[6] == ' ' && b[9] == ':' && b[15] == ' ' {
		b = b[16:]
	} else if i := bytes.IndexByte(capBytes(b, 40), ' '); i > 18 && b[4] == '-' {
		b = b[i+1:] // ISO timestamp
	}
	w1, rest := syslogWord(b)
	w2, _ := syslogWord(rest)
	switch {
	case syslogIsTag(w1):
		m.Add(AttrName, syslogTag(w1))
	case len(w1) > 0 && syslogIsTag(w2):
		m.Add(AttrHost, capBytes(w1, 255))
		m.Add(AttrName, syslogTag(w2))
	case len(w1) > 0:
		m.Add(AttrHost, capBytes(w1, 255))
	}
	emit(m)
}

func syslogWord(b []byte) (w, rest []byte) {
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return b, nil
	}
	return b[:i], b[i+1:]
}

// syslogIsTag: "app:" or "app[123]:".
func syslogIsTag(w []byte) bool {
	return len(w) > 1 && w[len(w)-1] == ':'
}

func syslogTag(w []byte) []byte {
	w = w[:len(w)-1]
	if i := bytes.IndexByte(w, '['); i > 0 {
		w = w[:i]
	}
	return capBytes(w, 48)
}

// syslogHeaderComplete: does b hold every header field we report (RFC 5424: PRI VERSION
// TIMESTAMP HOSTNAME APP-NAME PROCID MSGID and a space; RFC 3164: timestamp, host, tag)?
func syslogHeaderComplete(b []byte) bool {
	spaces := bytes.Count(capBytes(b, 512), []byte{' '})
	if len(b) > 6 && b[bytes.IndexByte(b, '>')+1] == '1' {
		return spaces >= 6
	}
	return spaces >= 4
}
