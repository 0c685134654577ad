package dpi

import (
	"bytes"
	"strconv"
)

// Shared helpers of the batch-B parsers (cassandra, zookeeper, nats, ldap, sip, rtsp, syslog,
// openvpn, stun...): reassembly of length-framed and line-framed TCP streams, bounded by
// MaxBuffer, plus small allocation-free formatting helpers.

// frameSizer reports the total size of the message starting at b[0]: 0 when more bytes are
// needed to know it, -1 when b does not start a valid message (the parser gives up).
type frameSizer func(b []byte) int

// lenReasm reassembles one direction of a length-framed stream. Messages that fit in the
// bytes handed to Feed are parsed in place (no copy); others are buffered up to MaxBuffer.
// Messages larger than MaxBuffer are handed over truncated (their first MaxBuffer bytes at
// most, never less than what has arrived) and the rest is skipped without buffering.
type lenReasm struct {
	buf  []byte
	skip int
}

// feed consumes data, calling handle(msg, whole) per message; whole is false for a truncated
// message. It returns false when size reports garbage.
func (r *lenReasm) feed(data []byte, size frameSizer, handle func(msg []byte, whole bool)) bool {
	for len(data) > 0 {
		if r.skip > 0 {
			if len(data) <= r.skip {
				r.skip -= len(data)
				return true
			}
			data = data[r.skip:]
			r.skip = 0
			continue
		}
		if len(r.buf) == 0 {
			n := size(data)
			switch {
			case n < 0:
				return false
			case n > 0 && n <= len(data):
				handle(data[:n], true)
				data = data[n:]
			case n > 0 && len(data) >= MaxBuffer:
				handle(data, false) // a view: nothing is buffered
				r.skip = n - len(data)
				return true
			case len(data) >= MaxBuffer: // header still incomplete after MaxBuffer bytes
				return false
			default:
				r.buf = append(r.buf[:0], data...)
				return true
			}
			continue
		}
		n := size(r.buf)
		if n < 0 {
			return false
		}
		target := n
		if n == 0 {
			if len(r.buf) >= MaxBuffer {
				return false
			}
			target = len(r.buf) + 1
		}
		if target > MaxBuffer {
			target = MaxBuffer
		}
		take := target - len(r.buf)
		if take > len(data) {
			take = len(data)
		}
		r.buf = append(r.buf, data[:take]...)
		data = data[take:]
		if n == 0 {
			if n = size(r.buf); n < 0 {
				return false
			}
		}
		if n > 0 && (len(r.buf) >= n || len(r.buf) >= MaxBuffer) {
			whole := len(r.buf) >= n
			handle(r.buf, whole)
			if !whole {
				r.skip = n - len(r.buf)
			}
			r.buf = r.buf[:0]
		}
	}
	return true
}

// lineReasm splits one direction of a line-oriented stream at '\n'. Lines longer than max are
// dropped up to their end (the parser resynchronises on the next line). skipBytes lets a
// parser skip a payload of known size (NATS PUB, SIP bodies) without buffering it.
type lineReasm struct {
	buf      []byte
	skip     int
	dropping bool
	stop     bool // set by a line callback: return the bytes after this line unconsumed
}

// feed calls line(l) for every complete line without its "\r\n" or "\n". line returns how
// many bytes to skip after it (a payload) or -1 to stop parsing. When line sets r.stop, feed
// returns the bytes after that line as rest.
func (r *lineReasm) feed(data []byte, max int, line func(l []byte) int) (rest []byte, ok bool) {
	for len(data) > 0 {
		if r.skip > 0 {
			if len(data) <= r.skip {
				r.skip -= len(data)
				return nil, true
			}
			data = data[r.skip:]
			r.skip = 0
			continue
		}
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if r.dropping {
				return nil, true
			}
			if len(r.buf)+len(data) > max {
				r.buf = r.buf[:0]
				r.dropping = true
				return nil, true
			}
			r.buf = append(r.buf, data...)
			return nil, true
		}
		var l []byte
		if r.dropping {
			r.dropping = false
			data = data[i+1:]
			continue
		}
		if len(r.buf) > 0 {
			if len(r.buf)+i > max {
				r.buf = r.buf[:0]
				data = data[i+1:]
				continue
			}
			r.buf = append(r.buf, data[:i]...)
			l = r.buf
			r.buf = r.buf[:0]
		} else {
			if i > max {
				data = data[i+1:]
				continue
			}
			l = data[:i]
		}
		data = data[i+1:]
		l = bytes.TrimSuffix(l, []byte{'\r'})
		n := line(l)
		if n < 0 {
			return nil, false
		}
		r.skip = n
		if r.stop {
			r.stop = false
			return data, true
		}
	}
	return nil, true
}

// capBytes limits a view to n bytes (free text such as queries and URIs).
func capBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// scratch is a per-parser buffer for formatted attribute values (numbers, hex, OIDs). It is
// reset per message; earlier views stay valid even if an append reallocates.
type scratch struct {
	arr [512]byte // first backing store: typical messages format without allocating
	b   []byte
}

func (s *scratch) reset() {
	if cap(s.b) == 0 {
		s.b = s.arr[:0]
	}
	s.b = s.b[:0]
}

func (s *scratch) uint(v uint64) []byte {
	start := len(s.b)
	s.b = strconv.AppendUint(s.b, v, 10)
	return s.b[start:len(s.b):len(s.b)]
}

func (s *scratch) int(v int64) []byte {
	start := len(s.b)
	s.b = strconv.AppendInt(s.b, v, 10)
	return s.b[start:len(s.b):len(s.b)]
}

// hex formats b as lowercase hex, sep between bytes when sep != 0.
func (s *scratch) hex(b []byte, sep byte) []byte {
	const digits = "0123456789abcdef"
	start := len(s.b)
	for i, c := range b {
		if i > 0 && sep != 0 {
			s.b = append(s.b, sep)
		}
		s.b = append(s.b, digits[c>>4], digits[c&15])
	}
	return s.b[start:len(s.b):len(s.b)]
}

func (s *scratch) ipv4(b []byte) []byte {
	start := len(s.b)
	for i := 0; i < 4 && i < len(b); i++ {
		if i > 0 {
			s.b = append(s.b, '.')
		}
		s.b = strconv.AppendUint(s.b, uint64(b[i]), 10)
	}
	return s.b[start:len(s.b):len(s.b)]
}

// firstWordVerb returns the uppercased leading keyword of a query-like text as a constant from
// known (so no allocation), or nil. Leading whitespace, parentheses and comments are skipped.
func firstWordVerb(q []byte, known []string) string {
	for {
		q = bytes.TrimLeft(q, " \t\r\n(")
		if bytes.HasPrefix(q, []byte("--")) || bytes.HasPrefix(q, []byte("//")) {
			i := bytes.IndexByte(q, '\n')
			if i < 0 {
				return ""
			}
			q = q[i+1:]
			continue
		}
		if bytes.HasPrefix(q, []byte("/*")) {
			i := bytes.Index(q[2:], []byte("*/"))
			if i < 0 {
				return ""
			}
			q = q[i+4:]
			continue
		}
		break
	}
	end := 0
	for end < len(q) && (q[end]|0x20 >= 'a' && q[end]|0x20 <= 'z') {
		end++
	}
	w := q[:end]
	for _, k := range known {
		if bytes.EqualFold(w, []byte(k)) {
			return k
		}
	}
	return ""
}

// isTokenChar reports whether c may appear in an RFC 7230-style token.
func isTokenChar(c byte) bool {
	return c > 32 && c < 127 && !bytes.ContainsRune([]byte("()<>@,;:\\\"/[]?={}"), rune(c))
}

// streamError says a flow can no longer be parsed as the named protocol.
type streamError struct{ proto string }

func (e streamError) Error() string {
	return e.proto + ": bytes no longer parse as " + e.proto + "; stop feeding this flow"
}

func errNotThisProtocol(proto string) error { return streamError{proto} }
