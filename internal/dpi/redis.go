package dpi

import (
	"bytes"
	"errors"
	"strconv"
)

// Redis parses RESP (2 and 3) and inline commands. A client command becomes a "command"
// message with the uppercased command name (AttrCommand), the number of keys it names and the
// first key; argument values are never reported (AUTH, CONFIG SET, HELLO carry secrets).
// Server simple-string and error replies become "reply" messages with status ok or error.
type Redis struct{}

func (Redis) Name() string          { return "redis" }
func (Redis) Transports() Transport { return TCP }
func (Redis) Ports() []uint16       { return []uint16{6379, 6380, 26379} }

func (Redis) Detect(p *Probe) Verdict { return clientFirst(p, redisDetect(p)) }

func redisDetect(p *Probe) Verdict {
	c := p.Client
	if len(c) == 0 {
		if p.Midstream && redisReply(p.Server) {
			return Maybe
		}
		return No
	}
	if c[0] == '*' {
		// "*<count>\r\n$<len>\r\n"
		i := 1
		for i < len(c) && i < 9 && c[i] >= '0' && c[i] <= '9' {
			i++
		}
		if i == 1 {
			if len(c) == 1 {
				return NeedMore
			}
			return No
		}
		rest := c[i:]
		want := "\r\n$"
		if len(rest) < len(want) {
			if bytes.HasPrefix([]byte(want), rest) {
				return NeedMore
			}
			return No
		}
		if bytes.HasPrefix(rest, []byte(want)) {
			return Yes
		}
		return No
	}
	// Inline command: a known command word, then the server answers in RESP.
	end := bytes.IndexByte(c, '\n')
	if end < 0 {
		if len(c) < 16 && isAlphaWord(c) {
			return NeedMore
		}
		return No
	}
	line := bytes.TrimRight(c[:end], "\r")
	w, _, _ := bytes.Cut(line, []byte(" "))
	if !redisInline(w) || bytes.Contains(line, []byte(" HTTP/")) {
		return No
	}
	if s := p.Server; len(s) > 0 {
		// RESP lines end in CRLF and have a known shape; "+OK text" is POP3 answering the
		// same words, "- foo" or "+ bar" from other line protocols are not Redis either.
		if i := bytes.IndexByte(s, '\n'); i > 0 && s[i-1] == '\r' && redisReply(s) {
			return Yes
		}
		return No
	}
	// "PING", "QUIT", "get k" are also other protocols' commands: the RESP reply decides.
	return NeedMore
}

// redisReply recognises typical server replies, for flows whose commands were not captured.
func redisReply(s []byte) bool {
	l, ok := firstLine(s)
	if !ok || len(l) < 2 {
		return false
	}
	switch l[0] {
	case '+':
		return eqWord(l[1:], "OK", "PONG", "QUEUED")
	case '-':
		w, _ := cutWord(l[1:])
		return eqWord(w, "ERR", "WRONGTYPE", "NOAUTH", "MOVED", "ASK", "LOADING", "READONLY", "NOSCRIPT", "BUSY", "EXECABORT")
	case ':', '$', '*':
		_, ok := respInt(l[1:])
		return ok
	}
	return false
}

func isAlphaWord(b []byte) bool {
	for _, c := range b {
		if !(c|0x20 >= 'a' && c|0x20 <= 'z') {
			return false
		}
	}
	return true
}

// redisInline lists commands people and health checks type inline.
func redisInline(w []byte) bool {
	for _, k := range [...]string{"PING", "INFO", "AUTH", "SELECT", "GET", "SET", "KEYS", "QUIT",
		"MONITOR", "HELLO", "CONFIG", "DBSIZE", "FLUSHALL", "FLUSHDB", "CLIENT", "COMMAND", "DEL",
		"EXISTS", "INCR", "SUBSCRIBE", "PUBLISH", "SCAN", "TTL", "TYPE", "ECHO", "ROLE", "SLAVEOF",
		"REPLICAOF", "SYNC", "PSYNC", "LPUSH", "RPUSH", "HGETALL", "HSET", "SHUTDOWN", "DEBUG", "EVAL",
		"MODULE", "SAVE", "BGSAVE", "CLUSTER", "SENTINEL", "ACL", "EXPIRE", "LRANGE", "MGET", "MSET"} {
		if bytes.EqualFold(w, []byte(k)) {
			return true
		}
	}
	return false
}

// NewParser returns a streaming RESP parser.
func (Redis) NewParser() Parser { return &redisParser{} }

const (
	redisMaxDepth   = 32       // COMMAND DOCS replies nest maps about 8 deep
	redisMaxLine    = 64 << 10 // redis' own inline and bulk-header limit
	redisCapture    = 256      // bytes kept of the command name and first key
	redisMaxElement = 1 << 24
)

var errRedisGarbage = errors.New("redis: malformed RESP")

type redisDir struct {
	line    []byte
	drop    bool // skipping the rest of a line cut by a gap
	bulk    int  // payload bytes (plus CRLF) still to read, 0 when reading lines
	bulkLen int  // payload length of the current bulk string
	stack   [redisMaxDepth]int
	depth   int
	top     byte // type byte of the current top-level value
	elem    int  // index of the next element in a client command
	capt    [2][redisCapture]byte
	captN   [2]int
}

type redisParser struct {
	d   [2]redisDir
	msg Message
	up  [32]byte
	num [20]byte
}

func (p *redisParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	s := &p.d[dir&1]
	for len(data) > 0 {
		if s.bulk > 0 {
			n := min(s.bulk, len(data))
			if s.depth == 1 && s.elem < 2 && s.top == '*' {
				done := s.bulkLen + 2 - s.bulk // payload bytes already read
				if k := s.elem; done < s.bulkLen {
					s.captN[k] += copy(s.capt[k][s.captN[k]:], data[:min(n, s.bulkLen-done)])
				}
			}
			s.bulk -= n
			data = data[n:]
			if s.bulk == 0 {
				p.element(dir, s, emit)
			}
			continue
		}
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if !s.drop {
				if len(s.line)+len(data) > redisMaxLine {
					return errRedisGarbage
				}
				s.line = append(s.line, data...)
			}
			return nil
		}
		l := data[:i]
		if s.drop { // the rest of a line cut by a gap
			s.drop = false
			data = data[i+1:]
			continue
		}
		if len(s.line) > 0 {
			if len(s.line)+i > redisMaxLine {
				return errRedisGarbage
			}
			s.line = append(s.line, l...)
			l = s.line
		}
		data = data[i+1:]
		if err := p.line(dir, s, bytes.TrimSuffix(l, []byte{'\r'}), emit); err != nil {
			return err
		}
		s.line = s.line[:0]
	}
	return nil
}

func (p *redisParser) line(dir Direction, s *redisDir, l []byte, emit func(*Message)) error {
	if len(l) == 0 {
		if s.depth == 0 {
			return nil // stray CRLF between inline commands
		}
		return errRedisGarbage
	}
	t := l[0]
	if s.depth == 0 {
		s.top, s.elem, s.captN = t, 0, [2]int{}
	}
	switch t {
	case '*', '~', '>', '%', '|':
		n, ok := respInt(l[1:])
		if !ok || n > redisMaxElement {
			return errRedisGarbage
		}
		if t == '%' || t == '|' {
			n *= 2
		}
		if n <= 0 {
			p.element(dir, s, emit)
			return nil
		}
		if s.depth == redisMaxDepth {
			return errRedisGarbage
		}
		s.stack[s.depth] = n
		s.depth++
		return nil
	case '$', '!', '=':
		n, ok := respInt(l[1:])
		if !ok || n > 512<<20 {
			return errRedisGarbage
		}
		if n < 0 {
			p.element(dir, s, emit)
			return nil
		}
		s.bulk, s.bulkLen = n+2, n
		return nil
	case '+', '-', ':', '_', ',', '#', '(':
		if s.depth == 0 && dir == ServerToClient && (t == '+' || t == '-') {
			p.reply(dir, t, l[1:], emit)
		}
		p.element(dir, s, emit)
		return nil
	}
	if s.depth > 0 {
		return errRedisGarbage
	}
	if dir == ClientToServer && (t|0x20 >= 'a' && t|0x20 <= 'z') {
		p.inline(dir, l, emit)
		return nil
	}
	return nil // resynchronise on the next line (e.g. a flow seen mid-bulk)
}

// element ends one value; when it closes the top-level value a message may be emitted.
func (p *redisParser) element(dir Direction, s *redisDir, emit func(*Message)) {
	if s.depth == 1 {
		s.elem++
	}
	for s.depth > 0 {
		s.stack[s.depth-1]--
		if s.stack[s.depth-1] > 0 {
			return
		}
		s.depth-- // the closed aggregate is itself an element one level up: count it there
	}
	if dir == ClientToServer && s.top == '*' && s.elem > 0 {
		p.command(dir, s.capt[0][:s.captN[0]], s.capt[1][:s.captN[1]], s.elem-1, emit)
	}
}

func (p *redisParser) inline(dir Direction, l []byte, emit func(*Message)) {
	rest := bytes.TrimLeft(capBytes(l, 1024), " \t")
	name, rest := cutWord(rest)
	args := 0
	var key []byte
	for {
		rest = bytes.TrimLeft(rest, " \t")
		if len(rest) == 0 {
			break
		}
		var w []byte
		w, rest = cutWord(rest)
		if args == 0 {
			key = w
		}
		args++
	}
	p.command(dir, name, key, args, emit)
}

// respInt parses a RESP length or count: an optional '-' and at most 10 digits.
func respInt(b []byte) (int, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

func (p *redisParser) command(dir Direction, name, first []byte, args int, emit func(*Message)) {
	n := copy(p.up[:], name)
	up := p.up[:n]
	for i, c := range up {
		if c >= 'a' && c <= 'z' {
			up[i] = c - 32
		}
	}
	m := &p.msg
	m.Reset(dir, "command")
	m.Add(AttrCommand, up)
	keys := redisKeys(up, args)
	m.Add("keys", strconv.AppendInt(p.num[:0], int64(keys), 10))
	if keys > 0 && len(first) > 0 {
		m.Add("key", first)
	}
	emit(m)
}

// redisKeys is how many keys a command with args arguments names (first key at argument 1).
func redisKeys(cmd []byte, args int) int {
	if args == 0 {
		return 0
	}
	switch string(cmd) { // no allocation: the compiler special-cases string(b) in a switch
	case "DEL", "EXISTS", "MGET", "UNLINK", "TOUCH", "WATCH", "SUNION", "SINTER", "SDIFF",
		"PFCOUNT", "PFMERGE", "SUNIONSTORE", "SINTERSTORE", "SDIFFSTORE", "RENAME", "RENAMENX":
		return args
	case "MSET", "MSETNX":
		return args / 2
	case "PING", "INFO", "AUTH", "HELLO", "SELECT", "CONFIG", "CLIENT", "COMMAND", "QUIT",
		"FLUSHALL", "FLUSHDB", "DBSIZE", "SCAN", "KEYS", "PUBLISH", "SUBSCRIBE", "PSUBSCRIBE",
		"UNSUBSCRIBE", "PUNSUBSCRIBE", "SSUBSCRIBE", "ACL", "MIGRATE", "EVAL", "EVALSHA", "FCALL",
		"SCRIPT", "FUNCTION", "CLUSTER", "SENTINEL", "MODULE", "DEBUG", "ECHO", "SLAVEOF",
		"REPLICAOF", "MULTI", "EXEC", "DISCARD", "SAVE", "BGSAVE", "SHUTDOWN", "MEMORY", "OBJECT",
		"LATENCY", "SLOWLOG", "XREAD", "XREADGROUP", "PUBSUB", "WAIT", "TIME", "ROLE", "RESET",
		"SWAPDB", "READONLY", "READWRITE", "LASTSAVE", "MONITOR", "SYNC", "PSYNC", "FAILOVER":
		return 0
	}
	return 1
}

func (p *redisParser) reply(dir Direction, t byte, text []byte, emit func(*Message)) {
	m := &p.msg
	m.Reset(dir, "reply")
	if t == '-' {
		m.AddString(AttrStatus, "error")
		w, _, _ := bytes.Cut(text, []byte(" "))
		m.Add("error", capBytes(w, 32))
	} else {
		m.AddString(AttrStatus, "ok")
	}
	emit(m)
}

// Gap: bytes of dir were lost; forget the value in progress and resynchronise on the next
// line that starts a command or reply.
func (p *redisParser) Gap(dir Direction) {
	p.d[dir&1] = redisDir{drop: true}
}
