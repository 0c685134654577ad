package dpi

import "encoding/binary"

// Cassandra is the CQL native protocol, versions 3 to 5: 9-byte frame headers (version with
// the response bit, flags, stream, opcode, body length). Requests report the opcode as the
// command; STARTUP its CQL version and driver; QUERY and PREPARE the statement verb and the
// capped text; USE statements and SET_KEYSPACE results the keyspace. v5 "modern framing"
// (segments after STARTUP/READY) is followed when uncompressed. Credentials in AUTH_RESPONSE
// are never read.
type Cassandra struct{}

func (Cassandra) Name() string          { return "cassandra" }
func (Cassandra) Transports() Transport { return TCP }
func (Cassandra) Ports() []uint16       { return []uint16{9042} }
func (Cassandra) NewParser() Parser     { return &cqlParser{} }

const (
	cqlError        = 0x00
	cqlStartup      = 0x01
	cqlReady        = 0x02
	cqlAuthenticate = 0x03
	cqlOptions      = 0x05
	cqlSupported    = 0x06
	cqlQuery        = 0x07
	cqlResult       = 0x08
	cqlPrepare      = 0x09
	cqlExecute      = 0x0A
	cqlRegister     = 0x0B
	cqlEvent        = 0x0C
	cqlBatch        = 0x0D
	cqlAuthChall    = 0x0E
	cqlAuthResp     = 0x0F
	cqlAuthSuccess  = 0x10
	cqlMaxBody      = 256 << 20 // the protocol's own limit
	cqlHeaderLen    = 9
)

var cqlOpNames = [...]string{
	cqlError: "ERROR", cqlStartup: "STARTUP", cqlReady: "READY", cqlAuthenticate: "AUTHENTICATE",
	4: "", cqlOptions: "OPTIONS", cqlSupported: "SUPPORTED", cqlQuery: "QUERY", cqlResult: "RESULT",
	cqlPrepare: "PREPARE", cqlExecute: "EXECUTE", cqlRegister: "REGISTER", cqlEvent: "EVENT",
	cqlBatch: "BATCH", cqlAuthChall: "AUTH_CHALLENGE", cqlAuthResp: "AUTH_RESPONSE",
	cqlAuthSuccess: "AUTH_SUCCESS",
}

var cqlRequestOps = [len(cqlOpNames)]bool{cqlStartup: true, cqlOptions: true, cqlQuery: true,
	cqlPrepare: true, cqlExecute: true, cqlRegister: true, cqlBatch: true, cqlAuthResp: true}

// cqlHeader validates a frame header; ok=false if it cannot be CQL v3-v5.
func cqlHeader(b []byte, fromClient bool) (op byte, body int, ok bool) {
	v := b[0]
	if fromClient != (v&0x80 == 0) {
		return 0, 0, false
	}
	if v&0x7f < 3 || v&0x7f > 5 || b[1]&^0x1f != 0 {
		return 0, 0, false
	}
	op = b[4]
	if int(op) >= len(cqlOpNames) || op == 4 || (fromClient && !cqlRequestOps[op]) ||
		(!fromClient && cqlRequestOps[op]) {
		return 0, 0, false
	}
	n := binary.BigEndian.Uint32(b[5:9])
	if n > cqlMaxBody {
		return 0, 0, false
	}
	return op, int(n), true
}

func (Cassandra) Detect(p *Probe) Verdict {
	c := p.Client
	if len(c) > 0 {
		if len(c) < cqlHeaderLen {
			if c[0] >= 3 && c[0] <= 5 {
				return NeedMore
			}
			return No
		}
		op, n, ok := cqlHeader(c, true)
		if !ok {
			return No
		}
		switch op {
		case cqlOptions:
			if n == 0 {
				return Yes
			}
		case cqlStartup:
			body := c[cqlHeaderLen:]
			if len(body) < 2 {
				return NeedMore
			}
			if n >= 2 && n < 4096 && binary.BigEndian.Uint16(body) <= 16 {
				return Yes
			}
		case cqlQuery, cqlPrepare:
			body := c[cqlHeaderLen:]
			if len(body) < 4 {
				return NeedMore
			}
			if ql := binary.BigEndian.Uint32(body); int(ql)+4 <= n {
				return Maybe
			}
		}
		return No
	}
	s := p.Server
	if len(s) >= cqlHeaderLen {
		if op, _, ok := cqlHeader(s, false); ok && (op == cqlSupported || op == cqlReady ||
			op == cqlAuthenticate || op == cqlResult) {
			return Maybe
		}
	}
	return No
}

type cqlParser struct {
	r        [2]lenReasm
	segments [2]bool // v5 modern framing in effect for this direction
	seg      [2]lenReasm
	msg      Message
	sc       scratch
}

func (p *cqlParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	d := dir & 1
	if p.segments[d] {
		if !p.seg[d].feed(data, cqlSegmentSize, func(s []byte, whole bool) {
			p.segment(dir, s, whole, emit)
		}) {
			return errNotThisProtocol("cassandra")
		}
		return nil
	}
	bad := false
	ok := p.r[d].feed(data, func(b []byte) int { return p.frameSize(dir, b) },
		func(f []byte, whole bool) {
			if !p.frame(dir, f, emit) {
				bad = true
			}
		})
	if !ok || bad {
		return errNotThisProtocol("cassandra")
	}
	return nil
}

func (p *cqlParser) frameSize(dir Direction, b []byte) int {
	if len(b) < cqlHeaderLen {
		return 0
	}
	if _, n, ok := cqlHeader(b, dir == ClientToServer); ok {
		return cqlHeaderLen + n
	}
	return -1
}

// cqlSegmentSize sizes a v5 uncompressed segment: 3-byte little-endian header word (17-bit
// payload length, self-contained flag), 3-byte CRC24, payload, 4-byte CRC32.
func cqlSegmentSize(b []byte) int {
	if len(b) < 6 {
		return 0
	}
	n := int(b[0]) | int(b[1])<<8 | int(b[2]&1)<<16
	return 6 + n + 4
}

func (p *cqlParser) segment(dir Direction, s []byte, whole bool, emit func(*Message)) {
	if len(s) < 6 || s[2]&2 == 0 { // not self-contained: a slice of a large frame, skip
		return
	}
	payload := s[6:]
	if whole && len(payload) >= 4 {
		payload = payload[:len(payload)-4]
	}
	for len(payload) >= cqlHeaderLen {
		_, n, ok := cqlHeader(payload, dir == ClientToServer)
		if !ok {
			return
		}
		end := cqlHeaderLen + n
		if end > len(payload) {
			end = len(payload)
		}
		p.frame(dir, payload[:end], emit)
		payload = payload[end:]
	}
}

// frame parses one (possibly truncated) frame; false means give up on the flow.
func (p *cqlParser) frame(dir Direction, f []byte, emit func(*Message)) bool {
	op, _, ok := cqlHeader(f, dir == ClientToServer)
	if !ok {
		return false
	}
	version := f[0] & 0x7f
	flags := f[1]
	body := f[cqlHeaderLen:]
	m := &p.msg
	p.sc.reset()
	if dir == ClientToServer {
		m.Reset(dir, "request")
	} else {
		m.Reset(dir, "response")
	}
	m.AddString(AttrCommand, cqlOpNames[op])
	if flags&0x01 != 0 { // compressed body: header facts only
		emit(m)
		return true
	}
	if dir == ServerToClient && flags&0x08 != 0 { // warnings precede the body
		body = cqlSkipStringList(body)
	}
	if flags&0x04 != 0 && dir == ServerToClient { // custom payload: bytes map, skip
		body = nil
	}
	switch op {
	case cqlStartup:
		m.Add(AttrVersion, p.sc.uint(uint64(version)))
		cqlStringMap(body, func(k, v []byte) {
			switch string(k) {
			case "CQL_VERSION":
				m.Add("cql_version", capBytes(v, 32))
			case "DRIVER_NAME":
				m.Add(AttrSoftware, capBytes(v, 128))
			case "DRIVER_VERSION":
				m.Add("driver_version", capBytes(v, 64))
			case "COMPRESSION":
				m.Add("compression", capBytes(v, 32))
			}
		})
		if version == 5 && dir == ClientToServer {
			p.segments[0] = !cqlHasCompression(body)
		}
	case cqlQuery, cqlPrepare:
		if q, ok := cqlLongString(body); ok {
			p.addQuery(m, q)
		}
	case cqlBatch:
		if len(body) >= 3 {
			n := int(binary.BigEndian.Uint16(body[1:3]))
			m.Add("statements", p.sc.uint(uint64(n)))
			if len(body) > 3 && body[3] == 0 { // first statement is a query string
				if q, ok := cqlLongString(body[4:]); ok {
					p.addQuery(m, q)
				}
			}
		}
	case cqlError:
		if len(body) >= 4 {
			code := binary.BigEndian.Uint32(body)
			m.Add(AttrStatus, p.sc.hex(body[:4], 0))
			_ = code
			if s, ok := cqlString(body[4:]); ok {
				m.Add("message", capBytes(s, 256))
			}
		}
	case cqlResult:
		if len(body) >= 4 {
			kind := binary.BigEndian.Uint32(body)
			switch kind {
			case 1:
				m.AddString("kind", "void")
			case 2:
				m.AddString("kind", "rows")
			case 3:
				m.AddString("kind", "set_keyspace")
				if s, ok := cqlString(body[4:]); ok {
					m.Add(AttrDatabase, capBytes(s, 256))
				}
			case 4:
				m.AddString("kind", "prepared")
			case 5:
				m.AddString("kind", "schema_change")
			}
		}
	case cqlAuthenticate:
		if s, ok := cqlString(body); ok {
			m.Add("authenticator", capBytes(s, 128))
		}
	case cqlReady:
		if version == 5 {
			p.segments[1] = p.segments[0]
		}
	}
	if version == 5 && op == cqlAuthenticate {
		p.segments[1] = p.segments[0]
	}
	emit(m)
	return true
}

var cqlVerbs = []string{"SELECT", "INSERT", "UPDATE", "DELETE", "USE", "CREATE", "DROP",
	"ALTER", "TRUNCATE", "BATCH", "BEGIN", "APPLY", "GRANT", "REVOKE", "LIST", "DESCRIBE"}

func (p *cqlParser) addQuery(m *Message, q []byte) {
	v := firstWordVerb(q, cqlVerbs)
	if v != "" {
		m.AddString(AttrVerb, v)
	}
	m.Add(AttrQuery, capBytes(q, 1024))
	if v == "USE" {
		ks := q
		for len(ks) > 0 && (ks[0] == ' ' || ks[0] == '\t' || ks[0] == '\n' || ks[0] == '\r') {
			ks = ks[1:]
		}
		if len(ks) >= 3 {
			ks = ks[3:]
		}
		for len(ks) > 0 && (ks[0] == ' ' || ks[0] == '\t' || ks[0] == '\n') {
			ks = ks[1:]
		}
		end := 0
		for end < len(ks) && ks[end] != ';' && ks[end] != ' ' && ks[end] != '\n' {
			end++
		}
		ks = ks[:end]
		if len(ks) >= 2 && ks[0] == '"' && ks[len(ks)-1] == '"' {
			ks = ks[1 : len(ks)-1]
		}
		if len(ks) > 0 {
			m.Add(AttrDatabase, capBytes(ks, 256))
		}
	}
}

// cqlLongString reads an [int]-length string; a truncated one returns what is there.
func cqlLongString(b []byte) ([]byte, bool) {
	if len(b) < 4 {
		return nil, false
	}
	n := int32(binary.BigEndian.Uint32(b))
	if n < 0 {
		return nil, false
	}
	b = b[4:]
	if int(n) < len(b) {
		b = b[:n]
	}
	return b, true
}

// cqlString reads a [short]-length string; a truncated one returns what is there.
func cqlString(b []byte) ([]byte, bool) {
	if len(b) < 2 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if n < len(b) {
		b = b[:n]
	}
	return b, true
}

func cqlStringMap(b []byte, f func(k, v []byte)) {
	if len(b) < 2 {
		return
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	for i := 0; i < n && i < 64; i++ {
		k, ok := cqlString(b)
		if !ok || len(b) < 2+len(k) {
			return
		}
		b = b[2+len(k):]
		v, ok := cqlString(b)
		if !ok || len(b) < 2+len(v) {
			return
		}
		b = b[2+len(v):]
		f(k, v)
	}
}

func cqlHasCompression(startup []byte) bool {
	found := false
	cqlStringMap(startup, func(k, _ []byte) {
		if string(k) == "COMPRESSION" {
			found = true
		}
	})
	return found
}

func cqlSkipStringList(b []byte) []byte {
	if len(b) < 2 {
		return nil
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	for i := 0; i < n; i++ {
		s, ok := cqlString(b)
		if !ok || len(b) < 2+len(s) {
			return nil
		}
		b = b[2+len(s):]
	}
	return b
}
