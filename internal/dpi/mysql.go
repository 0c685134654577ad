package dpi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
)

// MySQL parses the MySQL/MariaDB client/server protocol: the server greeting (version,
// software), the client handshake response (user, database; never the auth data), the SSL
// request, COM_QUERY/COM_STMT_PREPARE (SQL verb and capped text), COM_INIT_DB and other
// command names, and server error packets (code, SQLSTATE, message).
type MySQL struct{}

func (MySQL) Name() string          { return "mysql" }
func (MySQL) Transports() Transport { return TCP }
func (MySQL) Ports() []uint16       { return []uint16{3306, 33060} }

const (
	myClientConnectWithDB = 0x8
	myClientProtocol41    = 0x200
	myClientSSL           = 0x800
	myClientSecureConn    = 0x8000
	myClientPluginAuth    = 0x80000
	myClientAuthLenenc    = 0x200000
)

func (MySQL) Detect(p *Probe) Verdict {
	if s := p.Server; len(s) > 0 {
		if len(s) < 6 {
			if len(s) >= 4 && s[3] != 0 || len(p.Client) > 0 {
				return No // the client answers only a complete greeting
			}
			return NeedMore
		}
		n := int(s[0]) | int(s[1])<<8 | int(s[2])<<16
		if s[3] == 0 && n >= 20 && n < 1024 && s[4] == 10 {
			v := s[5:min(len(s), 4+n)]
			i := bytes.IndexByte(v, 0)
			if i > 0 && v[0] >= '0' && v[0] <= '9' && bytes.IndexByte(v[:i], '.') > 0 {
				return Yes
			}
		}
		if s[3] == 0 && n >= 3 && n < 1024 && s[4] == 0xff && len(p.Client) == 0 {
			return Maybe // "Host ... is not allowed to connect" instead of a greeting
		}
		if !p.Midstream {
			return No
		}
	}
	if c := p.Client; len(c) >= 36 && c[3] == 1 {
		// A handshake response whose greeting was not captured: capabilities with
		// CLIENT_PROTOCOL_41, max packet, charset, then 23 filler bytes of which MariaDB uses
		// the last 4 for its extended capabilities.
		caps := binary.LittleEndian.Uint32(c[4:])
		n := int(c[0]) | int(c[1])<<8 | int(c[2])<<16
		if caps&myClientProtocol41 != 0 && n >= 32 && n < 4096 && bytes.Equal(c[13:32], make([]byte, 19)) {
			return Yes
		}
	}
	if c := p.Client; len(c) >= 5 && p.Midstream {
		n := int(c[0]) | int(c[1])<<8 | int(c[2])<<16
		if c[3] == 0 && c[4] == 3 && n > 1 && n < MaxBuffer {
			q := c[5:min(len(c), 4+n)]
			for _, b := range q {
				if b < 0x09 {
					return No
				}
			}
			return Maybe
		}
	}
	return No
}

// NewParser returns a parser for one connection.
func (MySQL) NewParser() Parser { return &myParser{} }

var errMySQLGarbage = errors.New("mysql: malformed packet")

type myParser struct {
	r         [2]lenReasm
	greeted   bool
	handshake bool // the client's handshake response was seen
	ssl       bool
	msg       Message
	verb      [16]byte
	num       [24]byte
}

func mySize(b []byte) int {
	if len(b) < 4 {
		return 0
	}
	return 4 + (int(b[0]) | int(b[1])<<8 | int(b[2])<<16)
}

func (p *myParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	if p.ssl {
		return nil
	}
	dir &= 1
	ok := p.r[dir].feed(data, mySize, func(b []byte, whole bool) {
		if p.ssl || len(b) < 5 {
			return
		}
		if dir == ClientToServer {
			p.client(b[3], b[4:], emit)
		} else {
			p.server(b[3], b[4:], emit)
		}
	})
	if !ok {
		return errMySQLGarbage
	}
	return nil
}

func (p *myParser) server(seq byte, b []byte, emit func(*Message)) {
	m := &p.msg
	switch {
	case !p.greeted && seq == 0 && b[0] == 10:
		p.greeted = true
		v, _, _ := bytes.Cut(b[1:], []byte{0})
		m.Reset(ServerToClient, "greeting")
		sw := "MySQL"
		if bytes.Contains(v, []byte("MariaDB")) {
			sw = "MariaDB"
			v = bytes.TrimPrefix(v, []byte("5.5.5-")) // MariaDB's replication-compatibility prefix
		}
		m.AddString(AttrSoftware, sw)
		m.Add(AttrVersion, capBytes(v, 64))
		emit(m)
	case b[0] == 0xff && len(b) >= 3:
		code := binary.LittleEndian.Uint16(b[1:])
		if code == 0xffff {
			return // progress report, not an error
		}
		m.Reset(ServerToClient, "error")
		m.Add(AttrStatus, strconv.AppendUint(p.num[:0], uint64(code), 10))
		msg := b[3:]
		if len(msg) >= 6 && msg[0] == '#' {
			m.Add("sqlstate", msg[1:6])
			msg = msg[6:]
		}
		m.Add("message", capBytes(msg, 256))
		emit(m)
	case b[0] == 0 && p.handshake && seq >= 2 && seq <= 6:
		m.Reset(ServerToClient, "auth")
		m.AddString(AttrStatus, "ok")
		emit(m)
	}
}

func (p *myParser) client(seq byte, b []byte, emit func(*Message)) {
	m := &p.msg
	if seq != 0 {
		if !p.handshake && len(b) >= 32 && seq <= 2 {
			p.handshakeResponse(b, emit)
		}
		return // auth switch responses and the like
	}
	p.handshake = true // a command: the handshake is over (or was not seen)
	name := myCommand(b[0])
	if name == "" {
		return
	}
	switch b[0] {
	case 0x03, 0x16: // COM_QUERY, COM_STMT_PREPARE
		q := b[1:]
		m.Reset(ClientToServer, "query")
		if b[0] == 0x16 {
			m.Reset(ClientToServer, "prepare")
		}
		if v := sqlVerbInto(p.verb[:0], q); len(v) > 0 {
			m.Add(AttrVerb, v)
		}
		m.Add(AttrQuery, capBytes(q, pgMaxQuery))
	case 0x02: // COM_INIT_DB
		m.Reset(ClientToServer, "init_db")
		m.Add(AttrDatabase, capBytes(b[1:], 128))
	default:
		m.Reset(ClientToServer, "command")
		m.AddString(AttrCommand, name)
	}
	emit(m)
}

func (p *myParser) handshakeResponse(b []byte, emit func(*Message)) {
	m := &p.msg
	caps := binary.LittleEndian.Uint32(b)
	if caps&myClientProtocol41 == 0 {
		return // pre-4.1 clients are not parsed
	}
	if len(b) == 32 && caps&myClientSSL != 0 {
		p.ssl = true
		m.Reset(ClientToServer, "ssl_request")
		emit(m)
		return
	}
	p.handshake = true
	m.Reset(ClientToServer, "login")
	rest := b[32:]
	user, rest, ok := bytes.Cut(rest, []byte{0})
	m.Add(AttrUser, capBytes(user, 128))
	if ok && caps&myClientConnectWithDB != 0 {
		// Skip the auth response without looking at it.
		var n int
		switch {
		case caps&myClientAuthLenenc != 0 && len(rest) > 0:
			n = int(rest[0]) + 1
			if rest[0] >= 0xfb {
				n = -1 // multi-byte length: auth data this long is not real
			}
		case caps&myClientSecureConn != 0 && len(rest) > 0:
			n = int(rest[0]) + 1
		default:
			if i := bytes.IndexByte(rest, 0); i >= 0 {
				n = i + 1
			}
		}
		if n > 0 && n <= len(rest) {
			db, _, _ := bytes.Cut(rest[n:], []byte{0})
			if len(db) > 0 {
				m.Add(AttrDatabase, capBytes(db, 128))
			}
		}
	}
	emit(m)
}

func myCommand(c byte) string {
	switch c {
	case 0x01:
		return "QUIT"
	case 0x02:
		return "INIT_DB"
	case 0x03:
		return "QUERY"
	case 0x04:
		return "FIELD_LIST"
	case 0x05:
		return "CREATE_DB"
	case 0x06:
		return "DROP_DB"
	case 0x07:
		return "REFRESH"
	case 0x08:
		return "SHUTDOWN"
	case 0x09:
		return "STATISTICS"
	case 0x0a:
		return "PROCESS_INFO"
	case 0x0c:
		return "PROCESS_KILL"
	case 0x0d:
		return "DEBUG"
	case 0x0e:
		return "PING"
	case 0x11:
		return "CHANGE_USER"
	case 0x12:
		return "BINLOG_DUMP"
	case 0x16:
		return "STMT_PREPARE"
	case 0x17:
		return "STMT_EXECUTE"
	case 0x19:
		return "STMT_CLOSE"
	case 0x1a:
		return "STMT_RESET"
	case 0x1b:
		return "SET_OPTION"
	case 0x1f:
		return "RESET_CONNECTION"
	}
	return ""
}

// Midstream: the greeting and handshake were missed; every client packet is a command.
func (p *myParser) Midstream() { p.greeted, p.handshake = true, true }
