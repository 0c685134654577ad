package threat

import (
	"bytes"
)

// Protocol-level HTTP checks: smuggling, malformed and oversized headers.

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !isTokenChar(c) {
			return false
		}
	}
	return true
}

// badValueByte: control bytes other than HTAB (a bare CR or NUL splits headers on some servers).
func badValueByte(v []byte) int {
	for i, c := range v {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return i
		}
	}
	return -1
}

func (h *HTTPDetectors) checkHeaders(s *scratch, r *HTTPRequest) {
	m := h.on & (mSmuggling | mMalformed | mOversized)
	if m == 0 {
		return
	}
	if m&mOversized != 0 && len(r.URI) > h.cfg.MaxURI {
		h.report(s, mOversized, OversizedHeader, "uri", nil, r.URI[:64], "request-target longer than the limit")
	}
	if m&mMalformed != 0 && (r.LineErr || !isToken(r.Method) || !bytes.HasPrefix(r.Proto, []byte("HTTP/"))) {
		h.report(s, mMalformed, MalformedHeader, "request-line", nil, r.Method, "request line is not METHOD URI HTTP/x")
	}
	var (
		total, nCL, nTE, nHost int
		cl                     []byte
		te                     *Header
		prev                   *Header
	)
	if len(r.Headers) > h.cfg.MaxHeaders && m&mOversized != 0 {
		h.report(s, mOversized, OversizedHeader, "headers", nil, nil, "too many header lines")
	}
	for i := range r.Headers {
		hd := &r.Headers[i]
		total += len(hd.Name) + len(hd.Value) + 4
		name := hd.Name
		if len(hd.Value) > h.cfg.MaxHeaderValue {
			h.report(s, mOversized, OversizedHeader, "header", name, hd.Value[:64], "header value longer than the limit")
		}
		if !isToken(name) {
			trimmed := bytes.Trim(name, " \t")
			switch {
			case len(name) > 0 && (name[0] == ' ' || name[0] == '\t'):
				// obs-fold continuation line: deprecated, and how smugglers hide a second TE/CL.
				if isFramingHeader(bytes.TrimSpace(name)) || (prev != nil && isFramingHeader(prev.Name)) {
					h.report(s, mSmuggling, HTTPSmuggling, "header", trimmed, name, "folded framing header")
				}
				h.report(s, mMalformed, MalformedHeader, "header", trimmed, name, "obsolete line folding")
			case isFramingHeader(trimmed):
				h.report(s, mSmuggling, HTTPSmuggling, "header", trimmed, name, "whitespace in a framing header name")
			case len(hd.Value) == 0 && bytes.IndexByte(name, ':') < 0 && len(name) > 0 && !isToken(trimmed):
				h.report(s, mMalformed, MalformedHeader, "header", nil, name, "header line without a colon")
			default:
				h.report(s, mMalformed, MalformedHeader, "header", nil, name, "invalid header name")
			}
			prev = hd
			continue
		}
		if k := badValueByte(hd.Value); k >= 0 {
			h.report(s, mMalformed, MalformedHeader, "header", name, hd.Value, "control byte in header value")
		}
		switch {
		case bytes.EqualFold(name, []byte("content-length")):
			nCL++
			v := hd.Value
			if !allDigits(v) {
				// "5, 5" is tolerated by RFC 9110 when all equal; anything else is an attack.
				if !sameList(v) {
					h.report(s, mSmuggling, HTTPSmuggling, "header", name, v, "invalid Content-Length")
				}
				if c := bytes.IndexByte(v, ','); c > 0 {
					v = bytes.TrimSpace(v[:c])
				}
			}
			if cl != nil && !bytes.Equal(cl, v) {
				h.report(s, mSmuggling, HTTPSmuggling, "header", name, v, "conflicting Content-Length headers")
			}
			cl = v
		case bytes.EqualFold(name, []byte("transfer-encoding")):
			nTE++
			te = hd
			if !validTE(hd.Value) {
				h.report(s, mSmuggling, HTTPSmuggling, "header", name, hd.Value, "obfuscated Transfer-Encoding")
			}
		case bytes.EqualFold(name, []byte("host")):
			nHost++
		}
		prev = hd
	}
	if total > h.cfg.MaxHeaderBytes {
		h.report(s, mOversized, OversizedHeader, "headers", nil, nil, "header block larger than the limit")
	}
	if nHost > 1 {
		h.report(s, mMalformed, MalformedHeader, "header", []byte("Host"), nil, "several Host headers")
	}
	if te != nil {
		switch {
		case nCL > 0:
			h.report(s, mSmuggling, HTTPSmuggling, "header", te.Name, te.Value, "both Content-Length and Transfer-Encoding")
		case nTE > 1:
			h.report(s, mSmuggling, HTTPSmuggling, "header", te.Name, te.Value, "several Transfer-Encoding headers")
		case bytes.Equal(r.Proto, []byte("HTTP/1.0")):
			h.report(s, mSmuggling, HTTPSmuggling, "header", te.Name, te.Value, "Transfer-Encoding in HTTP/1.0")
		}
		if isChunked(r) && m&mSmuggling != 0 {
			if msg := checkChunks(r.Body, r.BodyTruncated); msg != "" {
				h.report(s, mSmuggling, HTTPSmuggling, "body", nil, r.Body, msg)
			}
		}
	}
}

func isFramingHeader(n []byte) bool {
	return bytes.EqualFold(n, []byte("transfer-encoding")) || bytes.EqualFold(n, []byte("content-length"))
}

func allDigits(b []byte) bool {
	if len(b) == 0 || len(b) > 18 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func sameList(v []byte) bool {
	var first []byte
	for len(v) > 0 {
		var e []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			e, v = v[:i], v[i+1:]
		} else {
			e, v = v, nil
		}
		e = bytes.TrimSpace(e)
		if !allDigits(e) || (first != nil && !bytes.Equal(first, e)) {
			return false
		}
		first = e
	}
	return first != nil
}

// validTE: a list of known codings, chunked last if present, no odd whitespace.
func validTE(v []byte) bool {
	if len(v) == 0 || bytes.IndexAny(v, "\t\v\f\r") >= 0 {
		return false
	}
	chunkedSeen := false
	for len(v) > 0 {
		var e []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			e, v = v[:i], v[i+1:]
		} else {
			e, v = v, nil
		}
		e = bytes.Trim(e, " ")
		if chunkedSeen {
			return false // chunked must be the final coding
		}
		switch {
		case bytes.EqualFold(e, []byte("chunked")):
			chunkedSeen = true
		case bytes.EqualFold(e, []byte("gzip")), bytes.EqualFold(e, []byte("deflate")),
			bytes.EqualFold(e, []byte("compress")), bytes.EqualFold(e, []byte("identity")), bytes.EqualFold(e, []byte("x-gzip")):
		default:
			return false
		}
	}
	return true
}

// isChunked: the request's last transfer coding is chunked.
func isChunked(r *HTTPRequest) bool {
	te := r.Header("Transfer-Encoding")
	return len(te) >= 7 && bytes.EqualFold(bytes.TrimSpace(te[len(te)-7:]), []byte("chunked"))
}

// checkChunks validates chunked framing; it returns a reason when the framing is one two
// parsers could disagree on (non-hex or oversized sizes, missing CRLF, data after the last chunk
// that starts another request).
func checkChunks(b []byte, truncated bool) string {
	for n := 0; n < 10000; n++ {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if truncated || len(b) == 0 {
				return ""
			}
			return "chunk size line without end"
		}
		line := bytes.TrimSuffix(b[:i], []byte("\r"))
		if j := bytes.IndexByte(line, ';'); j >= 0 {
			line = line[:j]
		}
		line = bytes.TrimRight(line, " \t")
		if len(line) == 0 || len(line) > 8 {
			return "invalid chunk size"
		}
		var size int
		for _, c := range line {
			v, ok := unhex(c)
			if !ok {
				return "invalid chunk size"
			}
			size = size<<4 | int(v)
		}
		b = b[i+1:]
		if size == 0 {
			// Trailers then an empty line; a request after that is smuggled.
			for k := 0; k < 64; k++ {
				j := bytes.IndexByte(b, '\n')
				if j < 0 {
					return ""
				}
				tl := bytes.TrimSuffix(b[:j], []byte("\r"))
				b = b[j+1:]
				if len(tl) == 0 {
					break
				}
			}
			if rest := bytes.TrimLeft(b, "\r\n"); len(rest) > 0 && startsLikeRequest(rest) {
				return "request smuggled after the last chunk"
			}
			return ""
		}
		if size > len(b) {
			return "" // body continues beyond what we have
		}
		b = b[size:]
		if bytes.HasPrefix(b, []byte("\r\n")) {
			b = b[2:]
		} else if bytes.HasPrefix(b, []byte("\n")) {
			b = b[1:]
		} else if len(b) > 0 {
			return "chunk data longer than its size"
		}
	}
	return ""
}

func startsLikeRequest(b []byte) bool {
	sp := bytes.IndexByte(b, ' ')
	if sp < 3 || sp > 15 {
		return false
	}
	for _, c := range b[:sp] {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

// dechunk appends the decoded chunked body to dst (bounded by limit); broken framing ends it.
func dechunk(dst, b []byte, limit int) []byte {
	for n := 0; n < 10000 && len(dst) < limit; n++ {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return dst
		}
		line := bytes.TrimSuffix(b[:i], []byte("\r"))
		if j := bytes.IndexByte(line, ';'); j >= 0 {
			line = line[:j]
		}
		line = bytes.TrimSpace(line)
		var size int
		if len(line) == 0 || len(line) > 8 {
			return dst
		}
		for _, c := range line {
			v, ok := unhex(c)
			if !ok {
				return dst
			}
			size = size<<4 | int(v)
		}
		b = b[i+1:]
		if size == 0 {
			return dst
		}
		if size > len(b) {
			size = len(b)
		}
		dst = append(dst, b[:size]...)
		b = bytes.TrimPrefix(bytes.TrimPrefix(b[size:], []byte("\r")), []byte("\n"))
	}
	return dst
}
