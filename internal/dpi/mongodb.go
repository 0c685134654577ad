package dpi

import (
	"bytes"
	"encoding/binary"
	"errors"
)

// MongoDB parses the MongoDB wire protocol: OP_MSG and legacy OP_QUERY requests become
// "command" messages with the command name (the first key of the body document), the
// database ($db, or the namespace of OP_QUERY) and the collection when the command names one;
// replies report ok or error with the error code name. BSON is read minimally: top-level keys
// only, every length checked against its enclosing document.
type MongoDB struct{}

func (MongoDB) Name() string          { return "mongodb" }
func (MongoDB) Transports() Transport { return TCP }
func (MongoDB) Ports() []uint16       { return []uint16{27017, 27018, 27019} }

const (
	mongoOpReply      = 1
	mongoOpUpdate     = 2001 // legacy opcodes, still in old captures
	mongoOpInsert     = 2002
	mongoOpGetMore    = 2005
	mongoOpDelete     = 2006
	mongoOpQuery      = 2004
	mongoOpCompressed = 2012
	mongoOpMsg        = 2013
	mongoMaxMessage   = 48 << 20
)

func (MongoDB) Detect(p *Probe) Verdict { return clientFirst(p, mongoDBDetect(p)) }

func mongoDBDetect(p *Probe) Verdict {
	c := p.Client
	if len(c) == 0 {
		if p.Midstream && mongoReply(p.Server) {
			return Maybe
		}
		return No
	}
	if len(c) < 16 {
		if len(c) >= 4 && (binary.LittleEndian.Uint32(c) < 21 || binary.LittleEndian.Uint32(c) > mongoMaxMessage) {
			return No
		}
		return NeedMore
	}
	n := binary.LittleEndian.Uint32(c)
	if n < 21 || n > mongoMaxMessage || binary.LittleEndian.Uint32(c[8:]) != 0 {
		return No
	}
	switch binary.LittleEndian.Uint32(c[12:]) {
	case mongoOpMsg:
		if len(c) < 26 {
			return NeedMore
		}
		flags := binary.LittleEndian.Uint32(c[16:])
		if flags&^0x10003 != 0 || c[20] != 0 {
			return No
		}
		dl := binary.LittleEndian.Uint32(c[21:])
		if dl < 5 || dl > n-21 {
			return No
		}
		return Yes
	case mongoOpQuery, mongoOpUpdate, mongoOpInsert, mongoOpGetMore, mongoOpDelete:
		// flags (or a reserved zero), then the "db.collection" namespace
		if len(c) < 21 {
			return NeedMore
		}
		ns, _, ok := bytes.Cut(c[20:min(len(c), int(n))], []byte{0})
		if ok && bytes.IndexByte(ns, '.') > 0 {
			return Yes
		}
		if !ok && len(c) < int(n) {
			return NeedMore
		}
	case mongoOpCompressed:
		return Maybe
	}
	return No
}

// mongoReply recognises a server reply (OP_REPLY or OP_MSG answering a request) whose first
// document fits the message, for flows seen from the middle.
func mongoReply(s []byte) bool {
	if len(s) < 26 {
		return false
	}
	n := binary.LittleEndian.Uint32(s)
	if n < 26 || n > mongoMaxMessage || binary.LittleEndian.Uint32(s[8:]) == 0 {
		return false
	}
	var doc []byte
	switch binary.LittleEndian.Uint32(s[12:]) {
	case mongoOpMsg:
		if s[20] != 0 {
			return false
		}
		doc = s[21:]
	case mongoOpReply:
		if len(s) < 41 {
			return false
		}
		doc = s[36:]
	default:
		return false
	}
	dl := binary.LittleEndian.Uint32(doc)
	return dl >= 5 && int(dl) <= int(n)-(len(s)-len(doc))
}

// NewParser returns a parser for one connection.
func (MongoDB) NewParser() Parser { return &mongoParser{} }

var errMongoGarbage = errors.New("mongodb: malformed message")

type mongoParser struct {
	r   [2]lenReasm
	msg Message
}

func mongoSize(b []byte) int {
	if len(b) < 4 {
		return 0
	}
	n := binary.LittleEndian.Uint32(b)
	if n < 16 || n > mongoMaxMessage {
		return -1
	}
	return int(n)
}

func (p *mongoParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	dir &= 1
	ok := p.r[dir].feed(data, mongoSize, func(b []byte, whole bool) {
		if len(b) >= 16 {
			p.message(dir, b, emit)
		}
	})
	if !ok {
		return errMongoGarbage
	}
	return nil
}

func (p *mongoParser) message(dir Direction, b []byte, emit func(*Message)) {
	m := &p.msg
	op := binary.LittleEndian.Uint32(b[12:])
	body := b[16:]
	var doc, ns []byte
	switch op {
	case mongoOpMsg:
		if len(body) < 5 {
			return
		}
		// Find the kind-0 section (the body); kind-1 sections are document sequences.
		s := body[4:]
		for len(s) >= 5 && doc == nil {
			switch s[0] {
			case 0:
				if doc = bsonDoc(s[1:]); doc == nil {
					return
				}
			case 1:
				l := int(binary.LittleEndian.Uint32(s[1:]))
				if l < 4 || l+1 > len(s) {
					return
				}
				s = s[1+l:]
			default:
				return
			}
		}
	case mongoOpQuery:
		if len(body) < 4 {
			return
		}
		var rest []byte
		var ok bool
		ns, rest, ok = bytes.Cut(body[4:], []byte{0})
		if !ok || len(rest) < 8 {
			return
		}
		doc = bsonDoc(rest[8:])
	case mongoOpReply:
		if len(body) < 20 {
			return
		}
		doc = bsonDoc(body[20:])
	case mongoOpCompressed:
		m.Reset(dir, "compressed")
		emit(m)
		return
	case mongoOpUpdate, mongoOpInsert, mongoOpGetMore, mongoOpDelete:
		if len(body) < 5 || dir != ClientToServer {
			return
		}
		ns, _, ok := bytes.Cut(body[4:], []byte{0})
		if !ok {
			return
		}
		m.Reset(dir, "command")
		m.AddString(AttrCommand, mongoLegacyOp(op))
		db, coll, _ := bytes.Cut(ns, []byte("."))
		m.Add("collection", capBytes(coll, 128))
		m.Add(AttrDatabase, capBytes(db, 128))
		emit(m)
		return
	default:
		return
	}
	if doc == nil {
		return
	}
	if dir == ServerToClient || op == mongoOpReply {
		p.reply(dir, doc, emit)
		return
	}
	m.Reset(dir, "command")
	first := true
	bsonEach(doc, func(t byte, key, val []byte) bool {
		if first {
			first = false
			if op == mongoOpQuery && !bytes.HasSuffix(ns, []byte(".$cmd")) {
				m.AddString(AttrCommand, "find") // a legacy query on a collection
				m.Add("collection", capBytes(ns, 128))
				return false
			}
			m.Add(AttrCommand, capBytes(key, 64))
			if t == 0x02 && len(val) > 5 {
				m.Add("collection", capBytes(val[4:len(val)-1], 128))
			}
			return true
		}
		if t == 0x02 && string(key) == "$db" && len(val) > 5 {
			m.Add(AttrDatabase, capBytes(val[4:len(val)-1], 128))
			return false
		}
		return true
	})
	if op == mongoOpQuery {
		db, _, _ := bytes.Cut(ns, []byte("."))
		m.Add(AttrDatabase, capBytes(db, 128))
	}
	emit(m)
}

func (p *mongoParser) reply(dir Direction, doc []byte, emit func(*Message)) {
	m := &p.msg
	m.Reset(dir, "reply")
	status, code := "", []byte(nil)
	bsonEach(doc, func(t byte, key, val []byte) bool {
		switch string(key) {
		case "ok":
			status = "error"
			switch {
			case t == 0x01 && len(val) == 8 && binary.LittleEndian.Uint64(val) != 0:
				status = "ok"
			case (t == 0x10 || t == 0x12) && len(val) >= 4 && binary.LittleEndian.Uint32(val) != 0:
				status = "ok"
			}
		case "codeName":
			if t == 0x02 && len(val) > 5 {
				code = val[4 : len(val)-1]
			}
		}
		return true
	})
	if status == "" {
		return // a cursor batch of an OP_REPLY to a legacy query, or similar
	}
	m.AddString(AttrStatus, status)
	if code != nil {
		m.Add("error", capBytes(code, 64))
	}
	emit(m)
}

// bsonDoc returns the document at the start of b, or nil when its length does not fit.
func bsonDoc(b []byte) []byte {
	if len(b) < 5 {
		return nil
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n < 5 || n > len(b) {
		if n >= 5 && len(b) >= MaxBuffer-64 {
			return b // a truncated huge document: its first keys are still readable
		}
		return nil
	}
	return b[:n]
}

// bsonEach calls fn for each top-level element of doc (type, key, raw value) until fn returns
// false or an element does not fit.
func bsonEach(doc []byte, fn func(t byte, key, val []byte) bool) {
	if len(doc) < 5 {
		return
	}
	e := doc[4:]
	for len(e) > 1 && e[0] != 0 {
		t := e[0]
		key, rest, ok := bytes.Cut(e[1:], []byte{0})
		if !ok {
			return
		}
		n := bsonValueLen(t, rest)
		if n < 0 || n > len(rest) {
			return
		}
		if !fn(t, key, rest[:n]) {
			return
		}
		e = rest[n:]
	}
}

func bsonValueLen(t byte, b []byte) int {
	i32 := func() int {
		if len(b) < 4 {
			return -1
		}
		return int(binary.LittleEndian.Uint32(b))
	}
	switch t {
	case 0x01, 0x09, 0x11, 0x12: // double, datetime, timestamp, int64
		return 8
	case 0x02, 0x0d, 0x0e: // string, js, symbol
		if n := i32(); n >= 1 {
			return 4 + n
		}
	case 0x03, 0x04, 0x0f: // document, array, code with scope
		if n := i32(); n >= 5 {
			return n
		}
	case 0x05: // binary
		if n := i32(); n >= 0 {
			return 5 + n
		}
	case 0x06, 0x0a, 0xff, 0x7f: // undefined, null, min/max key
		return 0
	case 0x07: // object id
		return 12
	case 0x08:
		return 1
	case 0x0b: // regex: two C strings
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			return -1
		}
		j := bytes.IndexByte(b[i+1:], 0)
		if j < 0 {
			return -1
		}
		return i + j + 2
	case 0x0c: // db pointer
		if n := i32(); n >= 1 {
			return 4 + n + 12
		}
	case 0x10:
		return 4
	case 0x13:
		return 16
	}
	return -1
}

func mongoLegacyOp(op uint32) string {
	switch op {
	case mongoOpUpdate:
		return "update"
	case mongoOpInsert:
		return "insert"
	case mongoOpGetMore:
		return "getMore"
	}
	return "delete"
}
