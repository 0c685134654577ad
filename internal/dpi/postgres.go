package dpi

import (
	"bytes"
	"encoding/binary"
	"errors"
)

// Postgres parses the PostgreSQL frontend/backend protocol v3: the startup message (user,
// database, application), SSL and GSS encryption requests, simple Query and extended Parse
// (SQL verb and capped text), authentication method, server version, command completion and
// ErrorResponse (SQLSTATE, severity, message). Passwords and SASL data are never reported.
type Postgres struct{}

func (Postgres) Name() string          { return "postgres" }
func (Postgres) Transports() Transport { return TCP }
func (Postgres) Ports() []uint16       { return []uint16{5432} }

const (
	pgProtocol3 = 196608
	pgProtocol2 = 131072 // pre-7.4 clients
	pgSSL       = 80877103
	pgGSSEnc    = 80877104
	pgCancel    = 80877102
	pgMaxQuery  = 512 // bytes of SQL text reported
)

func (Postgres) Detect(p *Probe) Verdict { return clientFirst(p, postgresDetect(p)) }

func postgresDetect(p *Probe) Verdict {
	c := p.Client
	if len(c) >= 8 {
		n := binary.BigEndian.Uint32(c)
		code := binary.BigEndian.Uint32(c[4:])
		switch {
		case (code == pgSSL || code == pgGSSEnc) && n == 8:
			return Yes
		case code == pgCancel && n == 16:
			return Yes
		case (code == pgProtocol3 || code == pgProtocol2) && n > 8 && n < 10000:
			if code == pgProtocol3 && len(c) >= 13 && !bytes.Contains(c[8:min(int(n), len(c))], []byte("user\x00")) {
				return No
			}
			return Yes
		}
		if p.Midstream || len(p.Server) == 0 {
			return pgTypedClient(c)
		}
		return No
	}
	if len(c) > 0 {
		if c[0] == 0 && (len(c) < 2 || c[1] == 0) {
			return NeedMore
		}
		return No
	}
	return No
}

// pgTypedClient recognises a flow seen from the middle by a Query message.
func pgTypedClient(c []byte) Verdict {
	if c[0] != 'Q' || len(c) < 6 {
		return No
	}
	n := int(binary.BigEndian.Uint32(c[1:]))
	if n < 5 || n > MaxBuffer {
		return No
	}
	end := min(n+1, len(c))
	q := c[5:end]
	if end == n+1 && (len(q) == 0 || q[len(q)-1] != 0) {
		return No
	}
	for _, b := range bytes.TrimSuffix(q, []byte{0}) {
		if b < 0x09 || b == 0x7f {
			return No
		}
	}
	return Maybe
}

// NewParser returns a parser for one connection.
func (Postgres) NewParser() Parser {
	p := &pgParser{}
	p.sizeC, p.sizeS = p.clientSize, p.serverSize
	return p
}

var errPGGarbage = errors.New("postgres: malformed message")

type pgParser struct {
	r            [2]lenReasm
	sizeC, sizeS frameSizer
	typed        bool // the client's startup phase is over
	sslPending   bool // an SSLRequest/GSSENCRequest awaits its one-byte answer
	encrypted    bool // TLS or GSS took over: nothing more to parse
	bad          bool
	msg          Message
	verb         [16]byte
}

// Midstream makes the parser expect typed messages from the start.
func (p *pgParser) Midstream() { p.typed = true }

func (p *pgParser) clientSize(b []byte) int {
	if !p.typed && len(b) >= 1 && b[0] >= 'A' {
		p.typed = true // a typed message: the startup happened before we looked
	}
	if !p.typed {
		if len(b) < 4 {
			return 0
		}
		n := int(binary.BigEndian.Uint32(b))
		if n < 8 || n > 10000 {
			return -1
		}
		return n
	}
	return pgTypedSize(b)
}

func pgTypedSize(b []byte) int {
	if len(b) < 5 {
		return 0
	}
	n := binary.BigEndian.Uint32(b[1:])
	if n < 4 || n > 1<<30 {
		return -1
	}
	return int(n) + 1
}

func (p *pgParser) serverSize(b []byte) int {
	if p.sslPending && len(b) > 0 && (b[0] == 'S' || b[0] == 'N' || b[0] == 'G') {
		return 1
	}
	return pgTypedSize(b)
}

func (p *pgParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	if p.encrypted {
		return nil
	}
	dir &= 1
	size := p.sizeC
	if dir == ServerToClient {
		size = p.sizeS
	}
	ok := p.r[dir].feed(data, size, func(b []byte, whole bool) {
		if p.encrypted || p.bad {
			return
		}
		if dir == ClientToServer {
			p.client(b, emit)
		} else {
			p.server(b, emit)
		}
	})
	if !ok || p.bad {
		return errPGGarbage
	}
	return nil
}

func (p *pgParser) client(b []byte, emit func(*Message)) {
	m := &p.msg
	if !p.typed || (len(b) >= 8 && b[0] == 0) {
		if len(b) < 8 {
			p.bad = true
			return
		}
		switch code := binary.BigEndian.Uint32(b[4:]); {
		case code == pgSSL:
			p.sslPending = true
			m.Reset(ClientToServer, "ssl_request")
		case code == pgGSSEnc:
			p.sslPending = true
			m.Reset(ClientToServer, "gssenc_request")
		case code == pgCancel:
			m.Reset(ClientToServer, "cancel")
		case code>>16 == 3:
			p.typed = true
			p.startup(b[8:])
		case code>>16 == 2 && len(b) >= 8+96: // fixed fields: database[64], user[32]...
			p.typed = true
			m.Reset(ClientToServer, "startup")
			m.AddString(AttrVersion, "2.0")
			db, _, _ := bytes.Cut(b[8:72], []byte{0})
			user, _, _ := bytes.Cut(b[72:104], []byte{0})
			m.Add(AttrUser, user)
			m.Add(AttrDatabase, db)
		default:
			p.bad = true
			return
		}
		emit(m)
		return
	}
	body := b[5:]
	switch b[0] {
	case 'Q':
		q, _, _ := bytes.Cut(body, []byte{0})
		p.query("query", q, emit)
	case 'P':
		name, rest, _ := bytes.Cut(body, []byte{0})
		q, _, _ := bytes.Cut(rest, []byte{0})
		p.query("parse", q, emit)
		if len(name) > 0 {
			m.Add("statement", capBytes(name, 64))
		}
		emit(m)
		return
	case 'X':
		m.Reset(ClientToServer, "terminate")
		emit(m)
	}
}

// query fills p.msg for a statement; the caller emits (after adding extras).
func (p *pgParser) query(typ string, q []byte, emit func(*Message)) {
	m := &p.msg
	m.Reset(ClientToServer, typ)
	if v := sqlVerbInto(p.verb[:0], q); len(v) > 0 {
		m.Add(AttrVerb, v)
	}
	m.Add(AttrQuery, capBytes(q, pgMaxQuery))
	if typ == "query" {
		emit(m)
	}
}

func (p *pgParser) startup(params []byte) {
	m := &p.msg
	m.Reset(ClientToServer, "startup")
	m.AddString(AttrVersion, "3.0")
	for len(params) > 0 && params[0] != 0 {
		k, rest, ok := bytes.Cut(params, []byte{0})
		if !ok {
			return
		}
		v, rest, _ := bytes.Cut(rest, []byte{0})
		params = rest
		switch string(k) {
		case "user":
			m.Add(AttrUser, capBytes(v, 128))
		case "database":
			m.Add(AttrDatabase, capBytes(v, 128))
		case "application_name":
			m.Add("application", capBytes(v, 128))
		case "replication":
			m.Add("replication", capBytes(v, 16))
		}
	}
}

func (p *pgParser) server(b []byte, emit func(*Message)) {
	m := &p.msg
	if len(b) == 1 {
		p.sslPending = false
		m.Reset(ServerToClient, "ssl_response")
		if b[0] == 'N' {
			m.AddString(AttrStatus, "rejected")
		} else {
			m.AddString(AttrStatus, "accepted")
			p.encrypted = true
		}
		emit(m)
		return
	}
	p.sslPending = false
	body := b[5:]
	switch b[0] {
	case 'R':
		if len(body) < 4 {
			return
		}
		var method string
		switch binary.BigEndian.Uint32(body) {
		case 0:
			method = "ok"
		case 3:
			method = "cleartext"
		case 5:
			method = "md5"
		case 10:
			method = "sasl"
		default:
			return
		}
		m.Reset(ServerToClient, "auth")
		m.AddString("method", method)
		emit(m)
	case 'S':
		k, rest, _ := bytes.Cut(body, []byte{0})
		if string(k) != "server_version" {
			return
		}
		v, _, _ := bytes.Cut(rest, []byte{0})
		m.Reset(ServerToClient, "parameter")
		m.AddString(AttrSoftware, "PostgreSQL")
		m.Add(AttrVersion, capBytes(v, 64))
		emit(m)
	case 'C':
		tag, _, _ := bytes.Cut(body, []byte{0})
		m.Reset(ServerToClient, "complete")
		if v := sqlVerbInto(p.verb[:0], tag); len(v) > 0 {
			m.Add(AttrVerb, v)
		}
		emit(m)
	case 'E':
		m.Reset(ServerToClient, "error")
		for len(body) > 1 {
			f := body[0]
			v, rest, ok := bytes.Cut(body[1:], []byte{0})
			if !ok {
				break
			}
			body = rest
			switch f {
			case 'C':
				m.Add(AttrStatus, capBytes(v, 8))
			case 'V':
				m.Add("severity", capBytes(v, 16))
			case 'M':
				m.Add("message", capBytes(v, 256))
			}
		}
		emit(m)
	}
}

// sqlVerbInto writes the uppercased first keyword of an SQL text to dst (at most cap(dst)
// bytes), skipping whitespace, parentheses and comments. Shared by postgres and mysql.
func sqlVerbInto(dst, q []byte) []byte {
	for {
		q = bytes.TrimLeft(q, " \t\r\n(")
		switch {
		case bytes.HasPrefix(q, []byte("--")) || bytes.HasPrefix(q, []byte("#")):
			i := bytes.IndexByte(q, '\n')
			if i < 0 {
				return dst[:0]
			}
			q = q[i+1:]
			continue
		case bytes.HasPrefix(q, []byte("/*")):
			i := bytes.Index(q[2:], []byte("*/"))
			if i < 0 {
				return dst[:0]
			}
			q = q[i+4:]
			continue
		}
		break
	}
	for _, c := range q {
		if len(dst) == cap(dst) {
			break
		}
		switch {
		case c >= 'a' && c <= 'z':
			dst = append(dst, c-32)
		case c >= 'A' && c <= 'Z' || c == '_':
			dst = append(dst, c)
		default:
			return dst
		}
	}
	return dst
}
