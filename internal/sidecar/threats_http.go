package sidecar

import (
	"bytes"
)

// maxThreatHead and maxThreatBody bound what one HTTP/1 request keeps for the detectors:
// the header block, and the body prefix (the rest of a longer body is forwarded uninspected).
const (
	maxThreatHead = 64 << 10
	maxThreatBody = 64 << 10
)

// httpFramer cuts an HTTP/1.x client byte stream into requests. It copies each request's
// head and body (up to maxThreatBody) and calls emit when the request is complete or the
// bound is reached, so detectors see whole requests however the bytes were chunked.
// Framing follows RFC 9112: Transfer-Encoding chunked, else Content-Length, else no body. When
// the stream stops being HTTP/1 (an Upgrade or CONNECT, or framing it cannot follow) it
// turns itself off.
type httpFramer struct {
	buf    []byte
	state  framerState
	head   int   // length of the current request's head in buf, once complete
	remain int64 // fixed-length body bytes still to come
	ch     chunkParser
	capped bool // the request was emitted at the bound; its remaining body is skipped
	after  bool // turn off after the current request (upgrade, CONNECT)
	off    bool
	headed bool // the current request's head went to the detectors ahead of its body
}

type framerState uint8

const (
	stHead framerState = iota
	stFixed
	stChunked
)

// feed consumes p; emit gets each request's bytes (valid only during the call) and whether
// the body was cut at the bound.
func (f *httpFramer) feed(p []byte, emit func(raw []byte, truncated bool)) {
	for len(p) > 0 && !f.off {
		switch f.state {
		case stHead:
			if len(f.buf) == 0 {
				// Tolerate the empty lines some clients send between requests.
				for len(p) > 0 && (p[0] == '\r' || p[0] == '\n') {
					p = p[1:]
				}
				if len(p) == 0 {
					return
				}
			}
			take := min(len(p), maxThreatHead-len(f.buf))
			from := max(len(f.buf)-3, 0)
			f.buf = append(f.buf, p[:take]...)
			end, sep := headEnd(f.buf, from)
			if end < 0 {
				p = p[take:]
				if len(f.buf) >= maxThreatHead {
					// No end of head within the bound: let the detectors see it as it is
					// (oversized), then stop: the framing is lost.
					f.buf = append(f.buf, "\r\n\r\n"...)
					emit(f.buf, true)
					f.off = true
				}
				continue
			}
			f.head = end + sep
			// Bytes of p past the head go back to the loop as body or the next request.
			p = p[take-(len(f.buf)-f.head):]
			f.buf = f.buf[:f.head]
			f.startBody()
			if f.off {
				emit(f.buf, false)
				return
			}
		case stFixed:
			n := int(min(int64(len(p)), f.remain))
			f.keep(p[:n])
			f.remain -= int64(n)
			p = p[n:]
		case stChunked:
			n, _, ok := f.ch.feed(p)
			f.keep(p[:n])
			p = p[n:]
			if !ok {
				// Broken chunk framing: the detectors judge what arrived, then framing is lost.
				if !f.capped {
					emit(f.buf, false)
				}
				f.off = true
				return
			}
		}
		if (f.state == stFixed && f.remain == 0) || (f.state == stChunked && f.ch.done) {
			f.complete(emit)
			continue
		}
		if !f.capped && len(f.buf) >= f.head+maxThreatBody {
			f.capped = true
			emit(f.buf, true)
		}
	}
}

// keep appends body bytes up to the bound.
func (f *httpFramer) keep(b []byte) {
	if f.capped {
		return
	}
	if room := f.head + maxThreatBody - len(f.buf); len(b) > room {
		b = b[:room]
	}
	f.buf = append(f.buf, b...)
}

// complete hands over a finished request and resets for the next one.
func (f *httpFramer) complete(emit func([]byte, bool)) {
	if !f.capped {
		emit(f.buf, false)
	}
	f.buf, f.head, f.state, f.capped, f.remain, f.ch, f.headed = f.buf[:0], 0, stHead, false, 0, chunkParser{}, false
	if f.after {
		f.off = true
	}
}

// pendingHead returns, once per request, the head of a request whose body is still to come:
// the chunk carrying the head must not be forwarded before its headers were judged (an attack
// in a header followed by a slow or never-ending body would otherwise reach the app).
func (f *httpFramer) pendingHead() []byte {
	if f.off || f.headed || f.capped || f.head == 0 || f.state == stHead {
		return nil
	}
	f.headed = true
	return f.buf[:f.head]
}

// startBody reads the framing headers of the head in buf and sets the body state.
func (f *httpFramer) startBody() {
	head := f.buf
	line, rest := cutLine(head)
	if bytes.HasPrefix(line, []byte("CONNECT ")) {
		f.after = true
	}
	chunked, coded, length, hasLength, badLength := false, false, int64(0), false, false
	for len(rest) > 0 {
		line, rest = cutLine(rest)
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			continue
		}
		name, val := line[:c], bytes.TrimSpace(line[c+1:])
		switch {
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			// Chunked only when it is the last coding, exactly (RFC 9112 6.1): "xchunked" or
			// "chunked, gzip" leave the length unknown, so the framing is lost.
			coded = true
			codings := bytes.Split(val, []byte(","))
			chunked = bytes.EqualFold(bytes.TrimSpace(codings[len(codings)-1]), []byte("chunked"))
		case bytes.EqualFold(name, []byte("Content-Length")) && !hasLength:
			hasLength = true
			n, ok := parseLength(val)
			length, badLength = n, !ok
		case bytes.EqualFold(name, []byte("Upgrade")):
			f.after = true
		}
	}
	switch {
	case chunked:
		f.state = stChunked
	case coded:
		f.off = true // a transfer coding the framer cannot follow
	case hasLength && badLength:
		f.off = true // cannot know where the next request starts
	case hasLength && length > 0:
		f.state, f.remain = stFixed, length
	default:
		f.state, f.remain = stFixed, 0
	}
}

func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// headEnd finds the empty line ending a head at or after from (CRLF CRLF, or LF LF as
// ParseHTTPRequest also accepts): its index and length.
func headEnd(b []byte, from int) (int, int) {
	s := b[from:]
	end, sep := bytes.Index(s, []byte("\r\n\r\n")), 4
	if e2 := bytes.Index(s, []byte("\n\n")); e2 >= 0 && (end < 0 || e2 < end) {
		end, sep = e2, 2
	}
	if end < 0 {
		return -1, 0
	}
	return from + end, sep
}

func cutLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return bytes.TrimSuffix(b, []byte("\r")), nil
	}
	return bytes.TrimSuffix(b[:i], []byte("\r")), b[i+1:]
}

// chunkParser follows chunked transfer coding to find where a body ends.
type chunkParser struct {
	st   uint8 // 0 size, 1 extension, 2 size LF, 3 data, 4 data CR, 5 data LF, 6 trailer line start, 7 trailer line, 8 final LF
	size int64
	digs int
	done bool
}

// feed consumes bytes of the body; n is how many belong to it, done when its end was reached,
// ok false on a framing error.
func (c *chunkParser) feed(p []byte) (n int, done, ok bool) {
	for n < len(p) {
		b := p[n]
		switch c.st {
		case 0:
			switch {
			case hexVal(b) >= 0:
				if c.digs >= 15 {
					return n, false, false
				}
				c.size = c.size<<4 | int64(hexVal(b))
				c.digs++
			case (b == ';' || b == ' ' || b == '\t') && c.digs > 0:
				c.st = 1
			case b == '\r' && c.digs > 0:
				c.st = 2
			case b == '\n' && c.digs > 0:
				c.endSize()
			default:
				return n, false, false
			}
		case 1:
			if b == '\r' {
				c.st = 2
			} else if b == '\n' {
				c.endSize()
			}
		case 2:
			if b != '\n' {
				return n, false, false
			}
			c.endSize()
		case 3:
			k := int(min(int64(len(p)-n), c.size))
			c.size -= int64(k)
			n += k
			if c.size == 0 {
				c.st = 4
			}
			continue
		case 4:
			switch b {
			case '\r':
				c.st = 5
			case '\n':
				c.st = 0
			default:
				return n, false, false
			}
		case 5:
			if b != '\n' {
				return n, false, false
			}
			c.st = 0
		case 6:
			switch b {
			case '\r':
				c.st = 8
			case '\n':
				c.done = true
				return n + 1, true, true
			default:
				c.st = 7
			}
		case 7:
			if b == '\n' {
				c.st = 6
			}
		case 8:
			if b != '\n' {
				return n, false, false
			}
			c.done = true
			return n + 1, true, true
		}
		n++
	}
	return n, false, true
}

func (c *chunkParser) endSize() {
	if c.size == 0 {
		c.st = 6
	} else {
		c.st = 3
	}
	c.digs = 0
}

func hexVal(b byte) int {
	switch {
	case b >= '0' && b <= '9':
		return int(b - '0')
	case b >= 'a' && b <= 'f':
		return int(b-'a') + 10
	case b >= 'A' && b <= 'F':
		return int(b-'A') + 10
	}
	return -1
}
