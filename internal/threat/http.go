package threat

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
)

// Header is one request header exactly as received: Name is the raw bytes before the colon
// (not trimmed, so malformed names stay visible), Value has optional whitespace trimmed.
type Header struct {
	Name, Value []byte
}

// HTTPRequest is what the HTTP detectors and sensors inspect: one request, its fields viewing
// the caller's bytes. The sidecar builds it from the bytes it forwarded (ParseHTTPRequest) or
// from an HTTP/2 stream's pseudo-headers and DATA frames.
type HTTPRequest struct {
	Method      []byte
	URI         []byte // request-target as sent: path and query, still encoded
	Proto       []byte // "HTTP/1.1", "HTTP/2"...
	Headers     []Header
	ContentType []byte // optional; looked up in Headers when empty
	Body        []byte // as received (chunked framing included when Transfer-Encoding is chunked)
	// BodyTruncated says Body is a prefix of a longer body (the caller capped it).
	BodyTruncated bool
	// LineErr is set by ParseHTTPRequest for a request line that is not "METHOD SP URI SP PROTO".
	LineErr bool
}

// Header returns the first value of the named header (case-insensitive), or nil.
func (r *HTTPRequest) Header(name string) []byte {
	for i := range r.Headers {
		if len(r.Headers[i].Name) == len(name) && bytes.EqualFold(r.Headers[i].Name, []byte(name)) {
			return r.Headers[i].Value
		}
	}
	return nil
}

// Path returns the URI without its query.
func (r *HTTPRequest) Path() []byte {
	if i := bytes.IndexByte(r.URI, '?'); i >= 0 {
		return r.URI[:i]
	}
	return r.URI
}

// Query returns the raw query string (after '?', before '#'), or nil.
func (r *HTTPRequest) Query() []byte {
	i := bytes.IndexByte(r.URI, '?')
	if i < 0 {
		return nil
	}
	q := r.URI[i+1:]
	if j := bytes.IndexByte(q, '#'); j >= 0 {
		q = q[:j]
	}
	return q
}

// DecodedBody appends to dst the body as the application receives it (chunked framing
// removed), at most limit bytes.
func (r *HTTPRequest) DecodedBody(dst []byte, limit int) []byte {
	if isChunked(r) {
		return dechunk(dst, r.Body, limit)
	}
	b := r.Body
	if len(b) > limit {
		b = b[:limit]
	}
	return append(dst, b...)
}

func (r *HTTPRequest) contentType() []byte {
	if len(r.ContentType) > 0 {
		return r.ContentType
	}
	return r.Header("Content-Type")
}

// MaxHeaderLines bounds the header lines ParseHTTPRequest keeps (the rest are counted only).
const MaxHeaderLines = 256

// ErrIncomplete means the bytes end before the header block does.
var ErrIncomplete = errors.New("http request: header block incomplete (no empty line)")

// ParseHTTPRequest splits one raw HTTP/1.x request (request line, headers, empty line, body)
// into an HTTPRequest that views raw. It is lenient on purpose: malformed lines are kept so the
// detectors can report them. Everything after the header block is the body.
func ParseHTTPRequest(raw []byte) (HTTPRequest, error) {
	var r HTTPRequest
	end, sep := bytes.Index(raw, []byte("\r\n\r\n")), 4
	if e2 := bytes.Index(raw, []byte("\n\n")); e2 >= 0 && (end < 0 || e2 < end) {
		end, sep = e2, 2
	}
	if end < 0 {
		return r, ErrIncomplete
	}
	head := raw[:end]
	r.Body = raw[end+sep:]
	line, rest := nextLine(head)
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp1 <= 0 || sp2 <= sp1 {
		return r, fmt.Errorf("http request: request line %q is not METHOD URI VERSION", CapEvidence(line))
	}
	r.Method, r.URI, r.Proto = line[:sp1], line[sp1+1:sp2], line[sp2+1:]
	r.LineErr = bytes.IndexByte(r.URI, ' ') >= 0 || bytes.IndexByte(r.URI, '\t') >= 0
	r.Headers = make([]Header, 0, 16)
	for len(rest) > 0 && len(r.Headers) < MaxHeaderLines {
		line, rest = nextLine(rest)
		c := bytes.IndexByte(line, ':')
		if c < 0 {
			r.Headers = append(r.Headers, Header{Name: line})
			continue
		}
		r.Headers = append(r.Headers, Header{Name: line[:c], Value: bytes.Trim(line[c+1:], " \t")})
	}
	return r, nil
}

func nextLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return bytes.TrimSuffix(b, []byte("\r")), nil
	}
	return bytes.TrimSuffix(b[:i], []byte("\r")), b[i+1:]
}

// HTTPConfig tunes the HTTP detectors. Zero fields take the defaults shown.
type HTTPConfig struct {
	MaxBody        int      // body bytes inspected: 64 KiB
	MaxURI         int      // request-target length before oversized-header: 8 KiB
	MaxHeaderValue int      // one header value: 8 KiB
	MaxHeaderBytes int      // all header lines together: 32 KiB
	MaxHeaders     int      // header lines: 100
	Disabled       []string // detector names to skip
}

func (c HTTPConfig) withDefaults() (HTTPConfig, error) {
	def := func(v *int, d int, field string) error {
		if *v < 0 {
			return fmt.Errorf("threat: http %s must not be negative, got %d", field, *v)
		}
		if *v == 0 {
			*v = d
		}
		return nil
	}
	for _, f := range []struct {
		v     *int
		d     int
		field string
	}{{&c.MaxBody, 64 << 10, "maxBody"}, {&c.MaxURI, 8 << 10, "maxURI"}, {&c.MaxHeaderValue, 8 << 10, "maxHeaderValue"},
		{&c.MaxHeaderBytes, 32 << 10, "maxHeaderBytes"}, {&c.MaxHeaders, 100, "maxHeaders"}} {
		if err := def(f.v, f.d, f.field); err != nil {
			return c, err
		}
	}
	for _, d := range c.Disabled {
		if _, ok := Lookup(d); !ok {
			return c, fmt.Errorf("threat: disabled detector %q is not registered (see threat.DefaultDetectors)", d)
		}
	}
	return c, nil
}

// HTTPDetectors runs the built-in HTTP detectors. It is stateless after construction and safe
// for concurrent use.
type HTTPDetectors struct {
	cfg HTTPConfig
	on  detMask
	// seed hashes the JSON strings already found clean in a body; random per process, so a
	// client cannot choose a payload whose hash collides with a clean string's.
	seed maphash.Seed
	pool sync.Pool // *scratch
}

// scratch holds per-call decode buffers so inspection does not allocate per value.
type scratch struct {
	a, b, j, n, l, t []byte
	found            detMask
	out              []Finding
	// ctorKey: the previous JSON key was "constructor" ({"constructor":{"prototype":...}}).
	ctorKey bool
	// clean holds the hashes of this body's JSON strings (keys complemented) already checked
	// without a finding: documents repeat their keys and many values, and a string clean
	// under the detectors still wanted is clean again (the wanted set only shrinks).
	clean map[uint64]struct{}
}

// maxCleanJSON bounds scratch.clean: past it, strings are simply checked again.
const maxCleanJSON = 4096

// NewHTTP builds the HTTP detectors.
func NewHTTP(cfg HTTPConfig) (*HTTPDetectors, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &HTTPDetectors{cfg: cfg, on: maskAll, seed: maphash.MakeSeed()}
	for _, d := range cfg.Disabled {
		h.on &^= maskOf(d)
	}
	h.pool.New = func() any { return &scratch{a: make([]byte, 0, 1024), b: make([]byte, 0, 1024)} }
	return h, nil
}

// detMask is a set of HTTP detectors.
type detMask uint32

const (
	mSQLi detMask = 1 << iota
	mXSS
	mCmd
	mTraversal
	mLog4Shell
	mShellshock
	mSmuggling
	mMalformed
	mOversized
	mXXE
	mSSTI
	mSSRF
	mPHP
	mNoSQL
	mLDAP
	mCRLF
	mJava
	mNode
	mUpload
	maskAll = mSQLi | mXSS | mCmd | mTraversal | mLog4Shell | mShellshock | mSmuggling | mMalformed | mOversized |
		mXXE | mSSTI | mSSRF | mPHP | mNoSQL | mLDAP | mCRLF | mJava | mNode | mUpload
)

func maskOf(name string) detMask {
	switch name {
	case SQLi:
		return mSQLi
	case XSS:
		return mXSS
	case CmdInjection:
		return mCmd
	case PathTraversal:
		return mTraversal
	case Log4Shell:
		return mLog4Shell
	case Shellshock:
		return mShellshock
	case HTTPSmuggling:
		return mSmuggling
	case MalformedHeader:
		return mMalformed
	case OversizedHeader:
		return mOversized
	case XXE:
		return mXXE
	case SSTI:
		return mSSTI
	case SSRF:
		return mSSRF
	case PHPInjection:
		return mPHP
	case NoSQLInjection:
		return mNoSQL
	case LDAPInjection:
		return mLDAP
	case CRLFInjection:
		return mCRLF
	case JavaInjection:
		return mJava
	case NodeInjection:
		return mNode
	case ScriptUpload:
		return mUpload
	}
	return 0
}

// Which detectors look at which part of a request (following where each attack is delivered
// and what a server interprets; see docs/threats.md).
const (
	argChecks    = mSQLi | mXSS | mCmd | mTraversal | mLog4Shell | mShellshock | mXXE | mSSTI | mSSRF | mPHP | mLDAP | mJava | mNode | mNoSQL
	cookieChecks = mSQLi | mXSS | mCmd | mTraversal | mLog4Shell | mShellshock | mSSTI | mPHP | mCRLF | mJava | mNode | mNoSQL
	// Names are attacker-chosen too (CRS ARGS_NAMES).
	nameChecks = mSQLi | mXSS | mLog4Shell | mJava | mNode | mPHP
	// Only where a value can reach a response header (redirect targets, cookies); bodies carry
	// multi-line text legitimately.
	queryChecks = argChecks | mCRLF
	pathChecks  = mXSS | mTraversal | mLog4Shell
	// Headers a web app commonly logs or reflects.
	appHeaderChecks = mSQLi | mXSS | mLog4Shell | mShellshock | mCmd | mJava
	anyHeaderChecks = mLog4Shell | mShellshock | mJava
	fileNameChecks  = mXSS | mTraversal | mCmd | mLog4Shell
	bodyTextChecks  = mLog4Shell | mXXE | mJava
)

// Inspect appends the findings for r to dst (at most one per detector) and returns it.
func (h *HTTPDetectors) Inspect(r *HTTPRequest, dst []Finding) []Finding {
	s := h.pool.Get().(*scratch)
	s.found, s.out, s.ctorKey = 0, dst, false
	h.inspect(s, r)
	out := s.out
	s.out = nil
	h.pool.Put(s)
	return out
}

func (h *HTTPDetectors) want(s *scratch, m detMask) detMask { return m & h.on &^ s.found }

func (h *HTTPDetectors) report(s *scratch, m detMask, name, kind string, key []byte, ev []byte, msg string) {
	if s.found&m != 0 {
		return
	}
	s.found |= m
	loc := kind
	if len(key) > 0 {
		k := key
		if len(k) > 64 {
			k = k[:64]
		}
		loc = kind + ":" + string(k)
	}
	s.out = append(s.out, NewFinding(name, loc, ev, msg))
}

func (h *HTTPDetectors) inspect(s *scratch, r *HTTPRequest) {
	h.checkHeaders(s, r)

	// Path: decoded as a server maps it to a file.
	path := r.Path()
	if m := h.want(s, pathChecks); m != 0 {
		if m&mTraversal != 0 && rawPathTraversal(path) {
			h.report(s, mTraversal, PathTraversal, "path", nil, path, "")
		}
		// Decoded once (into s.a or s.b, or path itself): restrictedPath, checkValue and
		// findSQLFragment only read it, and nothing they call decodes (only fullDecode
		// writes s.a and s.b; the detectors' own copies go to s.t).
		dp := fullDecode(s, path, false)
		if m&mTraversal != 0 {
			if ev := restrictedPath(s, dp); ev != nil {
				h.report(s, mTraversal, PathTraversal, "path", nil, ev, "restricted file")
			}
		}
		h.checkValue(s, m, "path", nil, dp)
		if h.want(s, mSQLi) != 0 {
			if ev, ok := findSQLFragment(dp, true); ok {
				h.report(s, mSQLi, SQLi, "path", nil, ev, "SQL function in the path")
			}
		}
	}
	// Query arguments (names and values).
	walkPairs(r.Query(), func(name, value []byte) { h.checkArg(s, queryChecks, "query", name, value, true) })

	// Cookies and headers.
	for i := range r.Headers {
		hd := &r.Headers[i]
		switch {
		case bytes.EqualFold(hd.Name, []byte("cookie")):
			walkCookies(hd.Value, func(name, value []byte) { h.checkArg(s, cookieChecks, "cookie", name, value, false) })
		case isAppHeader(hd.Name):
			h.checkValue(s, h.want(s, appHeaderChecks), "header", hd.Name, fullDecode(s, hd.Value, false))
		default:
			if h.want(s, mUpload) != 0 && isUploadNameHeader(hd.Name) && isScriptUpload(hd.Value) {
				h.report(s, mUpload, ScriptUpload, "header", hd.Name, hd.Value, "")
			}
			m := h.want(s, anyHeaderChecks)
			if bytes.IndexByte(hd.Value, '<') >= 0 {
				m |= h.want(s, mXSS) // markup in any header a page may echo
			}
			h.checkValue(s, m, "header", hd.Name, hd.Value)
		}
	}

	h.checkBody(s, r)
}

func isAppHeader(name []byte) bool { return equalFoldAny(name, appHeaders[:]) }

var appHeaders = [...]string{"user-agent", "referer", "x-forwarded-for", "x-forwarded-host", "x-real-ip",
	"x-api-version", "origin", "true-client-ip", "client-ip", "x-client-ip"}

// checkArg decodes and checks one name=value argument.
func (h *HTTPDetectors) checkArg(s *scratch, checks detMask, kind string, name, value []byte, plus bool) {
	m := h.want(s, checks)
	if m == 0 {
		return
	}
	if len(name) > 0 {
		// Argument names are attacker-chosen too (CRS ARGS_NAMES); keep a decoded copy for the key.
		s.n = append(s.n[:0], fullDecode(s, name, plus)...)
		if h.want(s, mNoSQL) != 0 && mongoOperatorInName(s.n) {
			h.report(s, mNoSQL, NoSQLInjection, kind, s.n, s.n, "query operator in a parameter name")
		}
		if h.want(s, mNode) != 0 && isProtoKey(s.n) {
			h.report(s, mNode, NodeInjection, kind, s.n, s.n, "prototype pollution in a parameter name")
		}
		h.checkValue(s, m&nameChecks, kind, s.n, s.n)
		m = h.want(s, checks)
		name = s.n
	}
	h.checkValue(s, m, kind, name, fullDecode(s, value, plus))
}

// checkValue runs the value detectors in m on a decoded value.
func (h *HTTPDetectors) checkValue(s *scratch, m detMask, kind string, key, v []byte) {
	if m == 0 || len(v) == 0 {
		return
	}
	// Letters and digits only (ids, words, hex tokens): none of the fragment detectors below
	// can match, so the common case skips them.
	plain := plainAlnum(v)
	if m&mLog4Shell != 0 {
		if ev, ok := findJNDI(s, v); ok {
			h.report(s, mLog4Shell, Log4Shell, kind, key, ev, "")
		}
	}
	if m&mShellshock != 0 && isShellshock(v) {
		h.report(s, mShellshock, Shellshock, kind, key, v, "")
	}
	if m&mTraversal != 0 {
		if ev, ok := findTraversal(s, v); ok {
			h.report(s, mTraversal, PathTraversal, kind, key, ev, "")
		}
	}
	if m&mCmd != 0 {
		if ev, ok := findCmdInjection(s, v); ok {
			h.report(s, mCmd, CmdInjection, kind, key, ev, "")
		} else if ev, ok := unlessPlain(plain, v, findWindowsCmd); ok {
			h.report(s, mCmd, CmdInjection, kind, key, ev, "Windows cmd/PowerShell")
		}
	}
	if m&mCRLF != 0 {
		if ev, ok := findCRLF(v); ok {
			h.report(s, mCRLF, CRLFInjection, kind, key, ev, "")
		}
	}
	if m&mLDAP != 0 && isLDAPInjection(v) {
		h.report(s, mLDAP, LDAPInjection, kind, key, v, "")
	}
	if m&mXXE != 0 && isXXE(v) {
		h.report(s, mXXE, XXE, kind, key, v, "")
	}
	if m&mSSTI != 0 {
		if ev, ok := findSSTI(v); ok {
			h.report(s, mSSTI, SSTI, kind, key, ev, "")
		}
	}
	if m&mSSRF != 0 {
		if ev, ok := findSSRF(v); ok {
			h.report(s, mSSRF, SSRF, kind, key, ev, "")
		}
	}
	if m&mPHP != 0 {
		if ev, ok := findPHP(v); ok {
			h.report(s, mPHP, PHPInjection, kind, key, ev, "")
		} else if ev, ok := unlessPlain(plain, v, findPHPMore); ok {
			h.report(s, mPHP, PHPInjection, kind, key, ev, "")
		}
	}
	if m&mJava != 0 {
		if ev, ok := findJava(v); ok {
			h.report(s, mJava, JavaInjection, kind, key, ev, "")
		}
	}
	if m&mNode != 0 {
		if ev, ok := findNode(v); ok {
			h.report(s, mNode, NodeInjection, kind, key, ev, "")
		}
	}
	if m&mSQLi != 0 {
		if fp, ok := isSQLi(v); ok {
			h.report(s, mSQLi, SQLi, kind, key, v, "libinjection fingerprint "+fp)
		} else if ev, ok := unlessPlain(plain, v, findSQLFragmentAny); ok {
			h.report(s, mSQLi, SQLi, kind, key, ev, "SQL-only function or catalog")
		}
	}
	if m&mXSS != 0 {
		if isXSS(s, v, kind != "path") {
			h.report(s, mXSS, XSS, kind, key, v, "")
		} else if kind != "path" {
			if ev, ok := unlessPlain(plain, v, s.findXSSMore); ok {
				h.report(s, mXSS, XSS, kind, key, ev, "")
			}
		}
	}
	if m&mNoSQL != 0 && !plain && (mongoOperatorJSON(v) || whereJSInjection(v)) {
		h.report(s, mNoSQL, NoSQLInjection, kind, key, v, "query operator or $where break-out in a parameter")
	}
}

// maxFileInspect is how much of an uploaded file's content is inspected (for JNDI strings only:
// file contents are data, not parameters).
const maxFileInspect = 4 << 10

func (h *HTTPDetectors) checkBody(s *scratch, r *HTTPRequest) {
	body := r.Body
	if len(body) == 0 {
		return
	}
	if isChunked(r) {
		s.l = dechunk(s.l[:0], body, h.cfg.MaxBody)
		body = s.l
	}
	if len(body) > h.cfg.MaxBody {
		body = body[:h.cfg.MaxBody]
	}
	ct := r.contentType()
	switch {
	case hasPrefixFold(ct, "application/x-www-form-urlencoded"):
		walkPairs(body, func(name, value []byte) { h.checkArg(s, argChecks, "body", name, value, true) })
	case hasPrefixFold(ct, "multipart/form-data"):
		walkMultipart(body, headerParam(ct, "boundary"), func(p *multipartPart) {
			if len(p.filename) > 0 {
				if h.want(s, mUpload) != 0 && isScriptUpload(p.filename) {
					h.report(s, mUpload, ScriptUpload, "filename", p.name, p.filename, "")
				}
				h.checkValue(s, h.want(s, fileNameChecks), "filename", p.name, p.filename)
				v := p.value
				if len(v) > maxFileInspect {
					v = v[:maxFileInspect]
				}
				h.checkValue(s, h.want(s, bodyTextChecks), "file", p.name, v)
				return
			}
			h.checkArg(s, argChecks, "body", p.name, p.value, false)
		})
	case isJSON(ct) || (len(ct) == 0 && looksJSON(body)):
		if s.clean == nil {
			s.clean = make(map[uint64]struct{}, 256)
		}
		clear(s.clean)
		walkJSON(s, body, func(key, value []byte, isKey bool) {
			hk := maphash.Bytes(h.seed, value)
			if isKey {
				hk = ^hk // keys get other checks than values: their own namespace
				if h.want(s, mNoSQL) != 0 && mongoCodeOperator(value) {
					h.report(s, mNoSQL, NoSQLInjection, "json", value, value, "server-side JavaScript operator")
				}
				if h.want(s, mNode) != 0 && (isProtoKey(value) || s.ctorKey && bytes.Equal(value, []byte("prototype"))) {
					h.report(s, mNode, NodeInjection, "json", value, value, "prototype pollution key")
				}
				s.ctorKey = bytes.Equal(value, []byte("constructor"))
			}
			if _, ok := s.clean[hk]; ok {
				return
			}
			n := len(s.out)
			if isKey {
				h.checkValue(s, h.want(s, nameChecks), "json", value, fullDecode(s, value, false))
			} else {
				h.checkValue(s, h.want(s, argChecks), "json", key, fullDecode(s, value, false))
			}
			if len(s.out) == n && len(s.clean) < maxCleanJSON {
				s.clean[hk] = struct{}{}
			}
		})
	case isXMLType(ct) || (len(ct) == 0 && bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("<"))):
		h.checkValue(s, h.want(s, bodyTextChecks|mSSRF), "body", nil, body)
	default:
		// Text and unknown bodies: only strings no application data legitimately holds.
		h.checkValue(s, h.want(s, bodyTextChecks), "body", nil, body)
	}
}

// unlessPlain runs find on v unless v is plain (letters and digits only).
func unlessPlain(plain bool, v []byte, find func([]byte) ([]byte, bool)) ([]byte, bool) {
	if plain {
		return nil, false
	}
	return find(v)
}

// plainAlnum: v is only ASCII letters and digits.
func plainAlnum(v []byte) bool {
	for _, c := range v {
		if !('a' <= c|0x20 && c|0x20 <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func isXMLType(ct []byte) bool {
	return containsFold(ct, "xml")
}

func isJSON(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = bytes.TrimSpace(ct)
	return hasPrefixFold(ct, "application/json") || (len(ct) > 5 && bytes.EqualFold(ct[len(ct)-5:], []byte("+json")))
}

func looksJSON(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && (b[0] == '{' || b[0] == '[')
}

// hasPrefixFold: b starts with the lower-case ASCII string p, ignoring ASCII case.
func hasPrefixFold(b []byte, p string) bool {
	if len(b) < len(p) {
		return false
	}
	for i := 0; i < len(p); i++ {
		if lower(b[i]) != p[i] {
			return false
		}
	}
	return true
}
