package policy

import (
	"fmt"
	"strings"

	"github.com/meshguard/meshguard/internal/dpi"
)

// Compiled L7 sections. Matching works on the dpi.Message byte views without copying.
//
// Semantics per section, for a request:
//   - http, grpc, dns select requests: every non-empty list must contain the request's value.
//     An allow rule allows the selected requests; a deny rule denies them.
//   - redis, sql filter requests: a request is permitted when it is in allowCommands/verbs (if
//     given) and not in denyCommands/denyVerbs. An allow rule allows permitted requests; a deny
//     rule denies the others (so `deny` + `denyCommands: [FLUSHALL]` denies FLUSHALL).
type cl7 struct {
	has   uint8 // l7Has* bits; zero means the rule has no l7 section
	http  chttp
	grpc  cgrpc
	dns   plist // names
	redis cfilter
	sql   cfilter
}

const (
	l7HasHTTP uint8 = 1 << iota
	l7HasGRPC
	l7HasDNS
	l7HasRedis
	l7HasSQL
)

type chttp struct {
	methods plist // upper-case
	paths   plist
	hosts   plist // names
}

type cgrpc struct {
	services plist
	methods  plist // "svc/Method" or "Method"
}

type cfilter struct{ allow, deny plist } // upper-case

// plist is a packed list of strings: each item is a two-byte big-endian length and the
// bytes. All lists of one rule are views into one string, so matching a request touches the
// rule and one small block of memory. Name lists hold lower-case names without a trailing
// dot; a "*.example.com" wildcard is stored as ".example.com" (no name starts with a dot).
type plist string

// maxL7Item bounds one l7 list item (Validate enforces it; plist lengths are 16-bit).
const maxL7Item = 4096

// next returns the item at byte offset i and the offset of the following one.
func (l plist) next(i int) (string, int) {
	n := int(l[i])<<8 | int(l[i+1])
	return string(l[i+2 : i+2+n]), i + 2 + n
}

// items unpacks the list (explanations only: allocates).
func (l plist) items() []string {
	var out []string
	for i := 0; i < len(l); {
		var s string
		s, i = l.next(i)
		out = append(out, s)
	}
	return out
}

// compileL7 lays every string of a rule's l7 section out in one string.
func compileL7(l *L7) (*cl7, error) {
	c := &cl7{}
	var b strings.Builder
	type span struct{ a, b int }
	var tooLong error
	add := func(ss []string, f func(string) string) span {
		sp := span{a: b.Len()}
		for _, x := range ss {
			x = f(x)
			if len(x) > maxL7Item {
				tooLong = fmt.Errorf("l7 value longer than %d bytes", maxL7Item)
				continue
			}
			b.WriteByte(byte(len(x) >> 8))
			b.WriteByte(byte(len(x)))
			b.WriteString(x)
		}
		sp.b = b.Len()
		return sp
	}
	id := func(x string) string { return x }
	name := func(x string) string {
		x = strings.TrimSuffix(strings.ToLower(x), ".")
		return strings.TrimPrefix(x, "*") // "*.x" -> ".x"
	}
	var hm, hp, hh, gs, gm, dn, ra, rd, sa, sd span
	if h := l.HTTP; h != nil {
		c.has |= l7HasHTTP
		hm, hp, hh = add(h.Methods, strings.ToUpper), add(h.Paths, id), add(h.Hosts, name)
	}
	if g := l.GRPC; g != nil {
		c.has |= l7HasGRPC
		gs, gm = add(g.Services, id), add(g.Methods, id)
	}
	if d := l.DNS; d != nil {
		c.has |= l7HasDNS
		dn = add(d.Names, name)
	}
	if r := l.Redis; r != nil {
		c.has |= l7HasRedis
		ra, rd = add(r.AllowCommands, strings.ToUpper), add(r.DenyCommands, strings.ToUpper)
	}
	if q := l.SQL; q != nil {
		c.has |= l7HasSQL
		sa, sd = add(q.Verbs, strings.ToUpper), add(q.DenyVerbs, strings.ToUpper)
	}
	if tooLong != nil {
		return nil, tooLong
	}
	blob := b.String()
	sl := func(sp span) plist { return plist(blob[sp.a:sp.b]) }
	c.http = chttp{methods: sl(hm), paths: sl(hp), hosts: sl(hh)}
	c.grpc = cgrpc{services: sl(gs), methods: sl(gm)}
	c.dns = sl(dn)
	c.redis = cfilter{allow: sl(ra), deny: sl(rd)}
	c.sql = cfilter{allow: sl(sa), deny: sl(sd)}
	return c, nil
}

func isHTTP(app string) bool { return app == "http" || app == "http2" || app == "grpc" }
func isGRPC(app string) bool { return app == "grpc" || app == "http2" }
func isSQL(app string) bool {
	return app == "postgres" || app == "postgresql" || app == "mysql" || app == "mariadb"
}

// appliesTo reports whether any section is about app (else the rule is not about this traffic).
func (c *cl7) appliesTo(app string) bool {
	return (c.has&l7HasHTTP != 0 && isHTTP(app)) || (c.has&l7HasGRPC != 0 && isGRPC(app)) ||
		(c.has&l7HasDNS != 0 && app == "dns") || (c.has&l7HasRedis != 0 && app == "redis") || (c.has&l7HasSQL != 0 && isSQL(app))
}

// match reports whether the request satisfies every section that applies to app.
func (c *cl7) match(app string, m *dpi.Message, allow bool) bool {
	if c.has&l7HasHTTP != 0 && isHTTP(app) && !c.http.match(m, allow) {
		return false
	}
	if c.has&l7HasGRPC != 0 && isGRPC(app) && !c.grpc.match(m) {
		return false
	}
	if c.has&l7HasDNS != 0 && app == "dns" && !matchNames(c.dns, m.Get(dpi.AttrName)) {
		return false
	}
	if c.has&l7HasRedis != 0 && app == "redis" && !c.redis.match(m.Get(dpi.AttrCommand), allow) {
		return false
	}
	if c.has&l7HasSQL != 0 && isSQL(app) && !c.sql.match(m.Get(dpi.AttrVerb), allow) {
		return false
	}
	return true
}

func (h *chttp) match(m *dpi.Message, allow bool) bool {
	if len(h.methods) > 0 && !inFold(h.methods, m.Get(dpi.AttrMethod)) {
		return false
	}
	if len(h.paths) > 0 {
		path := m.Get(dpi.AttrPath)
		if path == nil {
			return false
		}
		path = pathPart(path)
		if ambiguousPath(path) {
			// Encoded or dot/double-slash paths may resolve elsewhere on the server: fail
			// closed (an allow rule does not match, a deny rule does).
			return !allow
		}
		ok := false
		for i := 0; i < len(h.paths) && !ok; {
			var p string
			p, i = h.paths.next(i)
			ok = hasPrefix(path, p)
		}
		if !ok {
			return false
		}
	}
	if len(h.hosts) > 0 && !matchNames(h.hosts, stripPort(m.Get(dpi.AttrHost))) {
		return false
	}
	return true
}

func (g *cgrpc) match(m *dpi.Message) bool {
	svc, rpc := m.Get(dpi.AttrService), m.Get(dpi.AttrRPC)
	if svc == nil || rpc == nil {
		// Fall back to the HTTP/2 path "/pkg.Service/Method".
		p := m.Get(dpi.AttrPath)
		if len(p) < 2 || p[0] != '/' {
			return false
		}
		p = p[1:]
		i := indexByte(p, '/')
		if i <= 0 {
			return false
		}
		svc, rpc = p[:i], p[i+1:]
	}
	if len(g.services) > 0 {
		ok := false
		for i := 0; i < len(g.services) && !ok; {
			var s string
			s, i = g.services.next(i)
			ok = string(svc) == s
		}
		if !ok {
			return false
		}
	}
	if len(g.methods) > 0 {
		ok := false
		for j := 0; j < len(g.methods); {
			var s string
			s, j = g.methods.next(j)
			if i := strings.IndexByte(s, '/'); i >= 0 {
				if string(svc) == s[:i] && string(rpc) == s[i+1:] {
					ok = true
				}
			} else if string(rpc) == s {
				ok = true
			}
			if ok {
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (f *cfilter) match(v []byte, allow bool) bool {
	if v == nil {
		return false
	}
	permitted := (len(f.allow) == 0 || inFold(f.allow, v)) && !inFold(f.deny, v)
	return permitted == allow
}

func matchNames(pats plist, name []byte) bool {
	if name == nil {
		return len(pats) == 0
	}
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
	}
	if len(pats) == 0 {
		return true
	}
	for i := 0; i < len(pats); {
		var p string
		p, i = pats.next(i)
		if len(p) > 0 && p[0] == '.' { // "*.suffix"
			if len(name) > len(p) && equalFold(name[len(name)-len(p):], p) {
				return true
			}
		} else if equalFold(name, p) {
			return true
		}
	}
	return false
}

func inFold(list plist, v []byte) bool {
	for i := 0; i < len(list); {
		var s string
		s, i = list.next(i)
		if equalFold(v, s) {
			return true
		}
	}
	return false
}

// equalFold is ASCII case-insensitive equality without allocation.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func hasPrefix(b []byte, s string) bool { return len(b) >= len(s) && string(b[:len(s)]) == s }

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func pathPart(p []byte) []byte {
	for i, c := range p {
		if c == '?' || c == '#' {
			return p[:i]
		}
	}
	return p
}

// ambiguousPath reports paths a server may normalise to something else: percent-encoding,
// backslashes, empty, "." and ".." segments.
func ambiguousPath(p []byte) bool {
	for i, c := range p {
		switch c {
		case '%', '\\':
			return true
		case '/':
			if i+1 < len(p) && p[i+1] == '/' {
				return true
			}
			if i+1 < len(p) && p[i+1] == '.' {
				rest := p[i+2:]
				if len(rest) == 0 || rest[0] == '/' || (rest[0] == '.' && (len(rest) == 1 || rest[1] == '/')) {
					return true
				}
			}
		}
	}
	return false
}

// stripPort removes ":port" from a host ("[::1]:80" -> "[::1]", "a:80" -> "a").
func stripPort(h []byte) []byte {
	i := len(h) - 1
	for i >= 0 && h[i] >= '0' && h[i] <= '9' {
		i--
	}
	if i < 0 || i == len(h)-1 || h[i] != ':' {
		return h
	}
	if len(h) > 0 && h[0] == '[' && (i == 0 || h[i-1] != ']') {
		return h // a bare IPv6 literal
	}
	return h[:i]
}
