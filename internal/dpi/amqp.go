package dpi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
)

// AMQP parses AMQP 0-9-1 (RabbitMQ): the protocol header, Connection.Start (server product and
// version), Connection.StartOk (user of PLAIN, never the password), Connection.Open (virtual
// host), Exchange/Queue declarations and bindings, Basic.Publish/Consume/Get (exchange,
// routing key, queue) and Connection/Channel.Close (reply code). Message bodies are skipped.
// The AMQP 1.0 header is recognised but its frames are not parsed.
type AMQP struct{}

func (AMQP) Name() string          { return "amqp" }
func (AMQP) Transports() Transport { return TCP }
func (AMQP) Ports() []uint16       { return []uint16{5672, 5671} }

const amqpHeader = "AMQP"

func (AMQP) Detect(p *Probe) Verdict {
	if c := p.Client; len(c) > 0 {
		if len(c) < 8 {
			if bytes.HasPrefix([]byte(amqpHeader), c[:min(len(c), 4)]) {
				return NeedMore
			}
		} else if bytes.HasPrefix(c, []byte(amqpHeader)) && c[4] <= 3 {
			return Yes
		}
	}
	if p.Midstream && (amqpFrames(p.Client) || len(p.Client) == 0 && amqpFrames(p.Server)) {
		return Yes
	}
	if s := p.Server; len(s) >= 11 && len(p.Client) == 0 || p.Midstream && len(s) >= 11 {
		// Connection.Start on channel 0.
		if s[0] == 1 && s[1] == 0 && s[2] == 0 && s[7] == 0 && s[8] == 10 && s[9] == 0 && s[10] == 10 {
			return Yes
		}
	}
	return No
}

// amqpFrames recognises a stream seen from the middle that starts at a method frame of a
// known class and method, checked by its frame-end octet.
func amqpFrames(b []byte) bool {
	if len(b) < 12 || b[0] != 1 {
		return false
	}
	n := int(binary.BigEndian.Uint32(b[3:]))
	if n < 4 || n > 1<<20 || 7+n >= len(b) || b[7+n] != 0xce {
		return false
	}
	return amqpMethod(binary.BigEndian.Uint16(b[7:]), binary.BigEndian.Uint16(b[9:])) != ""
}

// NewParser returns a parser for one connection.
func (AMQP) NewParser() Parser { return &amqpParser{} }

var errAMQPGarbage = errors.New("amqp: malformed frame")

type amqpParser struct {
	r      [2]lenReasm
	header bool // the client's protocol header was consumed
	v10    bool // AMQP 1.0: not parsed past the header
	msg    Message
	num    [8]byte
}

func amqpSize(b []byte) int {
	if len(b) < 7 {
		if len(b) > 0 && b[0] > 8 && b[0] != 'A' {
			return -1
		}
		return 0
	}
	if b[0] == 'A' { // a protocol header, also sent by the server to refuse a version
		if !bytes.HasPrefix(b, []byte(amqpHeader)) {
			return -1
		}
		return 8
	}
	if b[0] < 1 || b[0] > 8 {
		return -1
	}
	n := binary.BigEndian.Uint32(b[3:])
	if n > 1<<28 {
		return -1
	}
	return int(n) + 8
}

func (p *amqpParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	if p.v10 {
		return nil
	}
	dir &= 1
	ok := p.r[dir].feed(data, amqpSize, func(b []byte, whole bool) {
		if p.v10 {
			return
		}
		if len(b) == 8 && bytes.HasPrefix(b, []byte(amqpHeader)) {
			m := &p.msg
			m.Reset(dir, "header")
			ver := strconv.AppendUint(p.num[:0], uint64(b[5]), 10)
			ver = append(ver, '-')
			ver = strconv.AppendUint(ver, uint64(b[6]), 10)
			ver = append(ver, '-')
			ver = strconv.AppendUint(ver, uint64(b[7]), 10)
			m.Add(AttrVersion, ver)
			emit(m)
			if b[5] == 1 && b[6] == 0 || b[4] != 0 && b[4] != 1 {
				p.v10 = true
			}
			return
		}
		if b[0] == 1 && len(b) >= 11 && (!whole || b[len(b)-1] == 0xce) {
			p.method(dir, b[7:], emit)
		}
	})
	if !ok {
		return errAMQPGarbage
	}
	return nil
}

func (p *amqpParser) method(dir Direction, b []byte, emit func(*Message)) {
	class, id := binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
	name := amqpMethod(class, id)
	if name == "" {
		return
	}
	r := amqpReader{b: b[4:]}
	m := &p.msg
	m.Reset(dir, "method")
	m.AddString(AttrCommand, name)
	switch uint32(class)<<16 | uint32(id) {
	case 10<<16 | 10: // Connection.Start
		r.skip(2)
		r.table(func(k, v []byte) {
			switch string(k) {
			case "product":
				m.Add(AttrSoftware, capBytes(v, 64))
			case "version":
				m.Add(AttrVersion, capBytes(v, 32))
			}
		})
	case 10<<16 | 11: // Connection.StartOk
		r.table(func(k, v []byte) {
			if string(k) == "product" {
				m.Add("client", capBytes(v, 64))
			}
		})
		mech := r.short()
		m.Add("mechanism", capBytes(mech, 32))
		if string(mech) == "PLAIN" {
			// "authzid\0user\0password": report the user only.
			f := bytes.SplitN(r.long(), []byte{0}, 3)
			if len(f) == 3 {
				m.Add(AttrUser, capBytes(f[1], 128))
			}
		}
	case 10<<16 | 40: // Connection.Open
		m.Add(AttrDatabase, capBytes(r.short(), 128))
	case 10<<16 | 50, 20<<16 | 40: // Connection.Close, Channel.Close
		code := r.u16()
		m.Add(AttrStatus, strconv.AppendUint(p.num[:0], uint64(code), 10))
		m.Add("text", capBytes(r.short(), 128))
	case 40<<16 | 10: // Exchange.Declare
		r.skip(2)
		m.Add(AttrTopic, r.short())
		m.Add("type", r.short())
	case 50<<16 | 10, 50<<16 | 40, 60<<16 | 20, 60<<16 | 70, 50<<16 | 30: // Queue.Declare/Delete, Basic.Consume/Get, Queue.Purge
		r.skip(2)
		m.Add(AttrTopic, r.short())
	case 50<<16 | 20, 50<<16 | 50: // Queue.Bind/Unbind
		r.skip(2)
		m.Add(AttrTopic, r.short())
		m.Add("exchange", r.short())
		m.Add("routing_key", r.short())
	case 60<<16 | 40: // Basic.Publish
		r.skip(2)
		ex := r.short()
		key := r.short()
		if len(ex) > 0 {
			m.Add(AttrTopic, ex)
		} else {
			m.Add(AttrTopic, key) // the default exchange routes to the queue named by the key
		}
		m.Add("exchange", ex)
		m.Add("routing_key", key)
	}
	emit(m)
}

// amqpReader reads AMQP method arguments; overruns yield empty values.
type amqpReader struct{ b []byte }

func (r *amqpReader) take(n int) []byte {
	if n < 0 || n > len(r.b) {
		r.b = nil
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *amqpReader) skip(n int) { r.take(n) }

func (r *amqpReader) u16() uint16 {
	if v := r.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *amqpReader) u32() int {
	if v := r.take(4); v != nil {
		return int(binary.BigEndian.Uint32(v) & 0x7fffffff)
	}
	return -1
}

func (r *amqpReader) short() []byte {
	if v := r.take(1); v != nil {
		return r.take(int(v[0]))
	}
	return nil
}

func (r *amqpReader) long() []byte { return r.take(r.u32()) }

// table calls fn for the string-valued top-level entries of a field table.
func (r *amqpReader) table(fn func(k, v []byte)) {
	t := amqpReader{b: r.long()}
	for len(t.b) > 0 {
		k := t.short()
		tv := t.take(1)
		if tv == nil {
			return
		}
		switch tv[0] {
		case 'S', 'x':
			v := t.long()
			if tv[0] == 'S' {
				fn(k, v)
			}
		case 't', 'b', 'B':
			t.skip(1)
		case 's', 'u':
			t.skip(2)
		case 'I', 'i', 'f':
			t.skip(4)
		case 'l', 'L', 'd', 'T':
			t.skip(8)
		case 'D':
			t.skip(5)
		case 'A', 'F':
			t.long()
		case 'V':
		default:
			return
		}
	}
}

func amqpMethod(class, id uint16) string {
	switch uint32(class)<<16 | uint32(id) {
	case 10<<16 | 10:
		return "Connection.Start"
	case 10<<16 | 11:
		return "Connection.StartOk"
	case 10<<16 | 30:
		return "Connection.Tune"
	case 10<<16 | 40:
		return "Connection.Open"
	case 10<<16 | 50:
		return "Connection.Close"
	case 20<<16 | 10:
		return "Channel.Open"
	case 20<<16 | 40:
		return "Channel.Close"
	case 40<<16 | 10:
		return "Exchange.Declare"
	case 40<<16 | 20:
		return "Exchange.Delete"
	case 50<<16 | 10:
		return "Queue.Declare"
	case 50<<16 | 20:
		return "Queue.Bind"
	case 50<<16 | 30:
		return "Queue.Purge"
	case 50<<16 | 40:
		return "Queue.Delete"
	case 50<<16 | 50:
		return "Queue.Unbind"
	case 60<<16 | 20:
		return "Basic.Consume"
	case 60<<16 | 40:
		return "Basic.Publish"
	case 60<<16 | 70:
		return "Basic.Get"
	case 85<<16 | 10:
		return "Confirm.Select"
	case 90<<16 | 10:
		return "Tx.Select"
	}
	return ""
}
