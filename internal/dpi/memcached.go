package dpi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
)

// Memcached parses the text protocol (get/set/delete/incr/stats/meta commands: command and
// first key; values are skipped by their declared length) and the binary protocol (magic
// 0x80/0x81: opcode name, key, response status). SASL payloads and values are never reported.
type Memcached struct{}

func (Memcached) Name() string          { return "memcached" }
func (Memcached) Transports() Transport { return TCP }
func (Memcached) Ports() []uint16       { return []uint16{11211} }

func (Memcached) Detect(p *Probe) Verdict { return clientFirst(p, memcachedDetect(p)) }

func memcachedDetect(p *Probe) Verdict {
	c := p.Client
	if len(c) == 0 {
		if s := p.Server; len(s) >= 24 && s[0] == 0x81 && memcBinOp(s[1]) != "" && p.Midstream {
			// Magic and opcode are two bytes of chance: the header's lengths must add up too.
			kl, el := int(binary.BigEndian.Uint16(s[2:])), int(s[4])
			body := binary.BigEndian.Uint32(s[8:])
			if s[5] == 0 && uint32(kl+el) <= body && body < 1<<30 {
				return Maybe
			}
		}
		if l, ok := firstLine(p.Server); ok && p.Midstream {
			w, rest := cutWord(l)
			switch string(w) {
			case "STORED", "NOT_STORED", "DELETED", "NOT_FOUND", "TOUCHED", "END":
				if len(rest) == 0 {
					return Maybe
				}
			case "VALUE", "STAT":
				return Maybe
			}
		}
		return No
	}
	if c[0] == 0x80 {
		if len(c) < 24 {
			return NeedMore
		}
		kl, el := int(binary.BigEndian.Uint16(c[2:])), int(c[4])
		body := binary.BigEndian.Uint32(c[8:])
		if memcBinOp(c[1]) != "" && c[5] == 0 && uint32(kl+el) <= body && body < 1<<30 {
			return Yes
		}
		return No
	}
	end := bytes.IndexByte(c, '\n')
	if end < 0 {
		if len(c) < 12 && isAlphaWord(bytes.TrimRight(c, " ")) {
			return NeedMore
		}
		return No
	}
	f := bytes.Fields(c[:end])
	if len(f) == 0 || !memcTextCommand(f[0]) {
		return No
	}
	if len(f) == 5 || len(f) == 6 {
		switch string(f[0]) {
		case "set", "add", "replace", "append", "prepend", "cas":
			if isDigits(f[2]) && isDigits(f[3]) && isDigits(f[4]) {
				return Yes // "set key flags exptime bytes"
			}
		}
	}
	if s := p.Server; len(s) > 0 {
		for _, r := range [...]string{"VALUE ", "END\r\n", "STORED\r\n", "NOT_STORED", "DELETED", "NOT_FOUND", "STAT ", "VERSION ", "ERROR\r\n", "CLIENT_ERROR", "SERVER_ERROR", "EXISTS", "TOUCHED", "OK\r\n", "HD", "VA ", "EN\r\n", "NF\r\n", "NS\r\n", "MN\r\n"} {
			if bytes.HasPrefix(s, []byte(r)) {
				return Yes
			}
		}
		return No
	}
	return Maybe
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

func memcTextCommand(w []byte) bool {
	switch string(w) {
	case "get", "gets", "gat", "gats", "set", "add", "replace", "append", "prepend", "cas",
		"delete", "incr", "decr", "touch", "stats", "version", "flush_all", "quit", "verbosity",
		"mg", "ms", "md", "ma", "mn", "me", "lru_crawler", "slabs", "watch", "cache_memlimit",
		"shutdown", "misbehave", "lru":
		return true
	}
	return false
}

// NewParser returns a parser for one connection (text or binary, decided per message).
func (Memcached) NewParser() Parser { return &memcParser{} }

var errMemcGarbage = errors.New("memcached: malformed binary packet")

type memcParser struct {
	lines [2]lineReasm
	bin   [2]lenReasm
	isBin [2]int8 // 0 undecided, 1 binary, -1 text
	msg   Message
	num   [32]byte
}

func memcBinSize(b []byte) int {
	if len(b) < 12 {
		if len(b) > 0 && b[0] != 0x80 && b[0] != 0x81 {
			return -1
		}
		return 0
	}
	if b[0] != 0x80 && b[0] != 0x81 {
		return -1
	}
	n := binary.BigEndian.Uint32(b[8:])
	if n > 1<<30 {
		return -1
	}
	return 24 + int(n)
}

func (p *memcParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	dir &= 1
	if len(data) == 0 {
		return nil
	}
	if p.isBin[dir] == 0 {
		p.isBin[dir] = -1
		if data[0] == 0x80 || data[0] == 0x81 {
			p.isBin[dir] = 1
		}
	}
	if p.isBin[dir] > 0 {
		ok := p.bin[dir].feed(data, memcBinSize, func(b []byte, whole bool) {
			if len(b) >= 24 {
				p.binary(dir, b, emit)
			}
		})
		if !ok {
			return errMemcGarbage
		}
		return nil
	}
	p.lines[dir].feed(data, 2048, func(l []byte) int { return p.text(dir, l, emit) })
	return nil
}

// text handles one line and returns how many value bytes follow it.
func (p *memcParser) text(dir Direction, l []byte, emit func(*Message)) int {
	var f [8][]byte
	n := 0
	for rest := capBytes(l, 1024); n < len(f); {
		rest = bytes.TrimLeft(rest, " \t")
		if len(rest) == 0 {
			break
		}
		f[n], rest = cutWord(rest)
		n++
	}
	if n == 0 {
		return 0
	}
	m := &p.msg
	if dir == ServerToClient {
		switch string(f[0]) {
		case "VALUE": // VALUE key flags bytes [cas]
			if n >= 4 {
				return memcDataLen(f[3])
			}
		case "VA": // VA size flags...
			if n >= 2 {
				return memcDataLen(f[1])
			}
		case "STORED", "NOT_STORED", "EXISTS", "NOT_FOUND", "DELETED", "TOUCHED", "ERROR",
			"CLIENT_ERROR", "SERVER_ERROR", "HD", "NS", "EX", "NF":
			m.Reset(dir, "reply")
			m.Add(AttrStatus, f[0])
			emit(m)
		case "VERSION":
			if n >= 2 {
				m.Reset(dir, "reply")
				m.AddString(AttrSoftware, "memcached")
				m.Add(AttrVersion, capBytes(f[1], 64))
				emit(m)
			}
		}
		return 0
	}
	if !memcTextCommand(f[0]) {
		return 0
	}
	m.Reset(dir, "command")
	up := p.num[:0]
	for _, c := range capBytes(f[0], 16) {
		if c >= 'a' && c <= 'z' {
			c -= 32
		}
		up = append(up, c)
	}
	m.Add(AttrCommand, up)
	skip := 0
	switch string(f[0]) {
	case "set", "add", "replace", "append", "prepend", "cas":
		if n >= 5 {
			skip = memcDataLen(f[4])
		}
	case "ms": // ms key datalen flags...
		if n >= 3 {
			skip = memcDataLen(f[2])
		}
	case "stats", "version", "flush_all", "quit", "verbosity", "mn", "lru_crawler", "slabs",
		"watch", "cache_memlimit", "shutdown", "misbehave", "lru":
		if n >= 2 && string(f[0]) == "stats" {
			m.Add("arg", capBytes(f[1], 32))
		}
		emit(m)
		return 0
	}
	if n >= 2 {
		keys := n - 1
		switch string(f[0]) {
		case "get", "gets":
		case "gat", "gats":
			keys--
		default:
			keys = 1
		}
		m.Add("key", capBytes(f[1], 250))
		if string(f[0]) == "gat" || string(f[0]) == "gats" {
			if n >= 3 {
				m.Add("key", capBytes(f[2], 250))
			}
		}
		m.Add("keys", strconv.AppendInt(p.num[len(up):len(up)], int64(max(keys, 0)), 10))
	}
	emit(m)
	return skip
}

// memcDataLen is the value length plus CRLF, or 0 when the field is not a sane length.
func memcDataLen(b []byte) int {
	v, err := strconv.Atoi(string(b))
	if err != nil || v < 0 || v > 1<<30 {
		return 0
	}
	return v + 2
}

func (p *memcParser) binary(dir Direction, b []byte, emit func(*Message)) {
	op := memcBinOp(b[1])
	if op == "" {
		return
	}
	m := &p.msg
	kl, el := int(binary.BigEndian.Uint16(b[2:])), int(b[4])
	if b[0] == 0x80 {
		m.Reset(dir, "command")
		m.AddString(AttrCommand, op)
		if kl > 0 && 24+el+kl <= len(b) && b[1] != 0x21 && b[1] != 0x22 {
			m.Add("key", capBytes(b[24+el:24+el+kl], 250))
		}
		emit(m)
		return
	}
	m.Reset(dir, "reply")
	m.AddString(AttrCommand, op)
	m.AddString(AttrStatus, memcBinStatus(binary.BigEndian.Uint16(b[6:])))
	emit(m)
}

func memcBinStatus(s uint16) string {
	switch s {
	case 0:
		return "NO_ERROR"
	case 1:
		return "KEY_ENOENT"
	case 2:
		return "KEY_EEXISTS"
	case 3:
		return "E2BIG"
	case 4:
		return "EINVAL"
	case 5:
		return "NOT_STORED"
	case 6:
		return "DELTA_BADVAL"
	case 0x20:
		return "AUTH_ERROR"
	case 0x21:
		return "AUTH_CONTINUE"
	case 0x81:
		return "UNKNOWN_COMMAND"
	case 0x82:
		return "ENOMEM"
	}
	return "OTHER"
}

func memcBinOp(op byte) string {
	names := [...]string{"GET", "SET", "ADD", "REPLACE", "DELETE", "INCREMENT", "DECREMENT",
		"QUIT", "FLUSH", "GETQ", "NOOP", "VERSION", "GETK", "GETKQ", "APPEND", "PREPEND", "STAT",
		"SETQ", "ADDQ", "REPLACEQ", "DELETEQ", "INCREMENTQ", "DECREMENTQ", "QUITQ", "FLUSHQ",
		"APPENDQ", "PREPENDQ", "VERBOSITY", "TOUCH", "GAT", "GATQ"}
	switch {
	case int(op) < len(names):
		return names[op]
	case op == 0x20:
		return "SASL_LIST_MECHS"
	case op == 0x21:
		return "SASL_AUTH"
	case op == 0x22:
		return "SASL_STEP"
	case op == 0x23:
		return "GATK"
	case op == 0x24:
		return "GATKQ"
	}
	return ""
}

// Gap: bytes of dir were lost; drop the partial line and resynchronise on the next one.
func (p *memcParser) Gap(dir Direction) {
	p.lines[dir&1] = lineReasm{dropping: true}
}
