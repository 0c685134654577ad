package threat

import (
	"bytes"
	"unicode/utf8"
)

// Decoding as a server would: percent-escapes (also %uXXXX and double encoding), '+' in forms,
// and the overlong UTF-8 / Unicode look-alikes of '.', '/' and '\' that path parsers have been
// fooled by. Every function appends to dst and never reads past its input.

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// percentDecode appends src with %XX and %uXXXX decoded (and '+' as space when plus); malformed
// escapes are kept literally, as most servers do.
func percentDecode(dst, src []byte, plus bool) []byte {
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '+' && plus:
			dst = append(dst, ' ')
		case c == '%' && i+2 < len(src):
			if (src[i+1] == 'u' || src[i+1] == 'U') && i+5 < len(src) {
				var r rune
				ok := true
				for _, h := range src[i+2 : i+6] {
					v, good := unhex(h)
					ok = ok && good
					r = r<<4 | rune(v)
				}
				if ok {
					dst = appendRune(dst, r)
					i += 5
					continue
				}
			}
			hi, ok1 := unhex(src[i+1])
			lo, ok2 := unhex(src[i+2])
			if ok1 && ok2 {
				dst = append(dst, hi<<4|lo)
				i += 2
				continue
			}
			dst = append(dst, c)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// appendRune appends r, folding the Unicode look-alikes of path separators and dots to ASCII
// (IIS-style %u decoding) so traversal checks see what a lenient server sees.
func appendRune(dst []byte, r rune) []byte {
	switch r {
	case 0x2215, 0x2044, 0xff0f:
		return append(dst, '/')
	case 0x2216, 0xff3c:
		return append(dst, '\\')
	}
	if r >= 0xff01 && r <= 0xff5e { // fullwidth ASCII (IIS "best fit" maps it to ASCII)
		return append(dst, byte(r-0xfee0))
	}
	if r < utf8.RuneSelf {
		return append(dst, byte(r))
	}
	return utf8.AppendRune(dst, r)
}

// foldOverlong rewrites overlong UTF-8 encodings of '.', '/' and '\' (%c0%ae, %c0%af, %e0%80%ae,
// %c1%9c...) to ASCII in place and returns the shortened slice.
func foldOverlong(b []byte) []byte {
	if bytes.IndexByte(b, 0xc0) < 0 && bytes.IndexByte(b, 0xc1) < 0 && bytes.IndexByte(b, 0xe0) < 0 && bytes.IndexByte(b, 0xef) < 0 {
		return b
	}
	w := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		if (c == 0xc0 || c == 0xc1) && i+1 < len(b) && b[i+1]&0xc0 == 0x80 {
			if r := rune(c&0x1f)<<6 | rune(b[i+1]&0x3f); r < 0x80 {
				b[w] = byte(r)
				w++
				i++
				continue
			}
		}
		if c == 0xe0 && i+2 < len(b) && b[i+1]&0xe0 == 0x80 && b[i+2]&0xc0 == 0x80 {
			if r := rune(b[i+1]&0x3f)<<6 | rune(b[i+2]&0x3f); r < 0x80 {
				b[w] = byte(r)
				w++
				i += 2
				continue
			}
		}
		// Fullwidth ASCII U+FF01..U+FF5E: EF BC 81..BF, EF BD 80..9E.
		if c == 0xef && i+2 < len(b) && (b[i+1] == 0xbc && b[i+2] >= 0x81 && b[i+2] <= 0xbf || b[i+1] == 0xbd && b[i+2] >= 0x80 && b[i+2] <= 0x9e) {
			r := (rune(b[i+1]&0x3f)<<6 | rune(b[i+2]&0x3f)) + 0xf000 - 0xfee0
			b[w] = byte(r)
			w++
			i += 2
			continue
		}
		b[w] = c
		w++
	}
	return b[:w]
}

// maxDecodePasses bounds repeated decoding (double/triple encoding).
const maxDecodePasses = 3

// fullDecode percent-decodes src repeatedly (up to maxDecodePasses, while escapes remain) into
// scratch buffers and folds overlong encodings. It returns a view of one of the buffers.
func fullDecode(s *scratch, src []byte, plus bool) []byte {
	if bytes.IndexByte(src, '%') < 0 && (!plus || bytes.IndexByte(src, '+') < 0) {
		if bytes.IndexByte(src, 0xef) >= 0 && bytes.Contains(src, []byte{0xef}) && hasFullwidth(src) {
			s.a = foldOverlong(append(s.a[:0], src...))
			return s.a
		}
		return src
	}
	cur := src
	changed := false
	bufs := [2]*[]byte{&s.a, &s.b}
	for pass := 0; pass < maxDecodePasses; pass++ {
		buf := bufs[pass&1]
		*buf = percentDecode((*buf)[:0], cur, plus && pass == 0)
		if bytes.Equal(*buf, cur) {
			break
		}
		cur, changed = *buf, true
		if bytes.IndexByte(cur, '%') < 0 {
			break
		}
	}
	if !changed { // never fold the caller's bytes in place
		return src
	}
	return foldOverlong(cur)
}

// walkPairs calls fn for each name=value pair of a query string or form body (separated by
// '&'), raw (still encoded).
func walkPairs(b []byte, fn func(name, value []byte)) {
	for len(b) > 0 {
		var pair []byte
		if i := bytes.IndexByte(b, '&'); i >= 0 {
			pair, b = b[:i], b[i+1:]
		} else {
			pair, b = b, nil
		}
		if len(pair) == 0 {
			continue
		}
		if i := bytes.IndexByte(pair, '='); i >= 0 {
			fn(pair[:i], pair[i+1:])
		} else {
			fn(nil, pair)
		}
	}
}

// walkCookies calls fn for each name=value of a Cookie header.
func walkCookies(b []byte, fn func(name, value []byte)) {
	for len(b) > 0 {
		var c []byte
		if i := bytes.IndexByte(b, ';'); i >= 0 {
			c, b = b[:i], b[i+1:]
		} else {
			c, b = b, nil
		}
		c = bytes.TrimSpace(c)
		if len(c) == 0 {
			continue
		}
		if i := bytes.IndexByte(c, '='); i >= 0 {
			v := c[i+1:]
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			fn(bytes.TrimSpace(c[:i]), v)
		} else {
			fn(nil, c)
		}
	}
}

// walkJSON calls fn for every string in a JSON document with the most recent object key (key is
// nil for the keys themselves). It is a tolerant scanner, not a validator: on broken JSON it
// still reports the strings it can find, and it needs no recursion, so depth is no risk.
func walkJSON(s *scratch, b []byte, fn func(key, value []byte, isKey bool)) {
	var key []byte
	for i := 0; i < len(b); i++ {
		if b[i] != '"' {
			continue
		}
		start := i + 1
		j := start
		esc := false
		for ; j < len(b); j++ {
			if b[j] == '\\' {
				esc = true
				j++
				continue
			}
			if b[j] == '"' {
				break
			}
		}
		if j > len(b) {
			j = len(b)
		}
		raw := b[start:j]
		val := raw
		if esc {
			s.j = jsonUnescape(s.j[:0], raw)
			val = s.j
		}
		// A key is a string followed by ':'.
		k := j + 1
		for k < len(b) && (b[k] == ' ' || b[k] == '\t' || b[k] == '\r' || b[k] == '\n') {
			k++
		}
		if k < len(b) && b[k] == ':' {
			key = raw
			fn(nil, val, true)
		} else {
			fn(key, val, false)
		}
		i = j
	}
}

func jsonUnescape(dst, src []byte) []byte {
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c != '\\' || i+1 >= len(src) {
			dst = append(dst, c)
			continue
		}
		i++
		switch src[i] {
		case 'n':
			dst = append(dst, '\n')
		case 't':
			dst = append(dst, '\t')
		case 'r':
			dst = append(dst, '\r')
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'u':
			if i+4 < len(src) {
				var r rune
				ok := true
				for _, h := range src[i+1 : i+5] {
					v, good := unhex(h)
					ok = ok && good
					r = r<<4 | rune(v)
				}
				if ok {
					dst = appendRune(dst, r)
					i += 4
					continue
				}
			}
			dst = append(dst, 'u')
		default:
			dst = append(dst, src[i])
		}
	}
	return dst
}

// multipartPart is one part of a multipart/form-data body.
type multipartPart struct {
	name, filename, ctype, value []byte
}

// maxParts bounds the parts inspected in one multipart body.
const maxParts = 256

// walkMultipart calls fn for each part of a multipart body with the given boundary. value is
// the part's content (for file parts the caller decides how much to look at).
func walkMultipart(body, boundary []byte, fn func(p *multipartPart)) {
	if len(boundary) == 0 || len(boundary) > 200 {
		return
	}
	var delim [204]byte
	d := append(append(delim[:0], "--"...), boundary...)
	i := bytes.Index(body, d)
	for n := 0; i >= 0 && n < maxParts; n++ {
		rest := body[i+len(d):]
		if bytes.HasPrefix(rest, []byte("--")) {
			return
		}
		end := bytes.Index(rest, d)
		part := rest
		if end >= 0 {
			part = rest[:end]
		}
		var p multipartPart
		hdrEnd := bytes.Index(part, []byte("\r\n\r\n"))
		sep := 4
		if hdrEnd < 0 {
			hdrEnd, sep = bytes.Index(part, []byte("\n\n")), 2
		}
		if hdrEnd >= 0 {
			hdrs := part[:hdrEnd]
			p.value = bytes.TrimSuffix(bytes.TrimSuffix(part[hdrEnd+sep:], []byte("\n")), []byte("\r"))
			for len(hdrs) > 0 {
				var line []byte
				if k := bytes.IndexByte(hdrs, '\n'); k >= 0 {
					line, hdrs = hdrs[:k], hdrs[k+1:]
				} else {
					line, hdrs = hdrs, nil
				}
				line = bytes.TrimSpace(line)
				c := bytes.IndexByte(line, ':')
				if c < 0 {
					continue
				}
				hn, hv := bytes.TrimSpace(line[:c]), bytes.TrimSpace(line[c+1:])
				switch {
				case bytes.EqualFold(hn, []byte("content-disposition")):
					p.name = headerParam(hv, "name")
					p.filename = headerParam(hv, "filename")
				case bytes.EqualFold(hn, []byte("content-type")):
					p.ctype = hv
				}
			}
			fn(&p)
		}
		if end < 0 {
			return
		}
		i = i + len(d) + end
	}
}

// headerParam returns the value of param in a header value like `form-data; name="x"`.
func headerParam(v []byte, param string) []byte {
	for len(v) > 0 {
		var seg []byte
		if i := bytes.IndexByte(v, ';'); i >= 0 {
			seg, v = v[:i], v[i+1:]
		} else {
			seg, v = v, nil
		}
		seg = bytes.TrimSpace(seg)
		eq := bytes.IndexByte(seg, '=')
		if eq < 0 || !bytes.EqualFold(bytes.TrimSpace(seg[:eq]), []byte(param)) {
			continue
		}
		val := bytes.TrimSpace(seg[eq+1:])
		if len(val) >= 2 && val[0] == '"' {
			if k := bytes.IndexByte(val[1:], '"'); k >= 0 {
				return val[1 : k+1]
			}
			return val[1:]
		}
		return val
	}
	return nil
}

func hasFullwidth(b []byte) bool {
	for i := bytes.IndexByte(b, 0xef); i >= 0 && i+2 < len(b); {
		if b[i+1] == 0xbc || b[i+1] == 0xbd {
			return true
		}
		j := bytes.IndexByte(b[i+1:], 0xef)
		if j < 0 {
			return false
		}
		i += j + 1
	}
	return false
}
