package threat

import (
	"bytes"
	"unsafe"

	"github.com/corazawaf/libinjection-go"
)

// view returns b as a string without copying; libinjection only reads its input during the call.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// The value detectors. Each works on one decoded value and returns the offending bytes.

// minInjectionLen skips values too short to carry an injection (libinjection's own minimum is
// similar); short values are the bulk of parameters.
const minInjectionLen = 2

func isSQLi(v []byte) (string, bool) {
	if len(v) < minInjectionLen || !hasSQLChar(v) {
		return "", false
	}
	if stackedQuery(v) {
		return "stacked query", true
	}
	if quoteThenComment(v) {
		return "quote then comment", true
	}
	if tautology(v) {
		return "tautology", true
	}
	// Program code ("if (a && b) { }") tokenizes like SQL operators; SQL has no brace blocks.
	if bytes.IndexByte(v, '{') >= 0 && bytes.IndexByte(v, '}') >= 0 && bytes.IndexByte(v, '\'') < 0 {
		return "", false
	}
	ok, fp := libinjection.IsSQLi(view(v))
	if ok && !strongSQL(v) && (isProse(v) || endsInWords(v)) {
		// libinjection judges the first few tokens; in free text (comments, posts, bios) that
		// is often a sentence that merely mentions SQL.
		return "", false
	}
	if ok && bareExpression(v) {
		// No quote, comment, statement break or SQL keyword: a formula or a phrase with a call
		// ("sin(x) + cos(x)", "sleep(5) vs usleep(5000000)"); it needs a SQL-only marker.
		if _, frag := findSQLFragment(v, false); !frag {
			return "", false
		}
	}
	return fp, ok
}

// SQL keywords an injection without quotes or comments still needs to do anything.
var sqlKeywords = [...]string{"select", "union", "and", "or", "xor", "where", "from", "having", "order", "group", "exec",
	"execute", "waitfor", "insert", "update", "delete", "drop", "like", "case", "when", "limit", "null", "procedure", "into", "rlike", "regexp", "div", "mod", "not", "is"}

// bareExpression: no quote, backtick, comment, ';', '@' or SQL keyword token in v.
func bareExpression(v []byte) bool {
	if bytes.ContainsAny(v, "'\"`;#@") || bytes.Contains(v, []byte("--")) || bytes.Contains(v, []byte("/*")) {
		return false
	}
	for i := 0; i < len(v); {
		for i < len(v) && !('a' <= v[i]|0x20 && v[i]|0x20 <= 'z') {
			i++
		}
		j := i
		for j < len(v) && ('a' <= v[j]|0x20 && v[j]|0x20 <= 'z' || v[j] == '_') {
			j++
		}
		if j > i && (i == 0 || !isIdentByte(v[i-1])) && (j == len(v) || !isIdentByte(v[j])) {
			for _, k := range sqlKeywords {
				if j-i == len(k) && bytes.EqualFold(v[i:j], []byte(k)) {
					return false
				}
			}
		}
		if j == i {
			j++
		}
		i = j
	}
	return true
}

// quoteThenComment: a quote closed and the rest of the query commented out (admin' #,
// x')-- ), the classic authentication bypass; apostrophes in words are followed by letters.
func quoteThenComment(v []byte) bool {
	if !shortLine(v) {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] != '\'' && v[i] != '"' {
			continue
		}
		j := i + 1
		for j < len(v) && (v[j] == ' ' || v[j] == ')' || v[j] == '\t') {
			j++
		}
		r := v[j:]
		if bytes.HasPrefix(r, []byte("--")) || bytes.HasPrefix(r, []byte("/*")) || (len(r) > 0 && r[0] == '#' && len(bytes.TrimSpace(r)) <= 3) {
			return true
		}
	}
	return false
}

// jsContextCall: breaking out of a JavaScript string into a call (';alert(1)//, "-alert(1)-",
// '+eval(x)+').
func jsContextCall(v []byte) bool {
	if !shortLine(v) {
		return false
	}
	for i := 0; i+3 < len(v); i++ {
		if v[i] != '\'' && v[i] != '"' {
			continue
		}
		j := i + 1
		for j < len(v) && v[j] == ' ' {
			j++
		}
		if j >= len(v) || (v[j] != ';' && v[j] != '+' && v[j] != '-' && v[j] != '*' && v[j] != '|' && v[j] != '&') {
			continue
		}
		j++
		for j < len(v) && v[j] == ' ' {
			j++
		}
		k := j
		for k < len(v) && ('a' <= v[k]|0x20 && v[k]|0x20 <= 'z' || v[k] == '.' || v[k] == '_' || (k > j && '0' <= v[k] && v[k] <= '9')) {
			k++
		}
		if k > j+1 && k < len(v) && v[k] == '(' && bytes.IndexByte(v[k:], ')') > 0 {
			return true
		}
	}
	return false
}

// tautology: OR/AND followed by a comparison of two equal operands (or 1=1, || 'a'='a',
// and 2>1 is not included: only equalities that are trivially true).
func tautology(v []byte) bool {
	if !shortLine(v) || bytes.IndexByte(v, '=') < 0 {
		return false
	}
	for i := 0; i < len(v); i++ {
		var rest []byte
		switch {
		case (v[i] == 'o' || v[i] == 'O') && i+1 < len(v) && lower(v[i+1]) == 'r' && (i == 0 || !isIdentByte(v[i-1])):
			rest = v[i+2:]
		case (v[i] == 'a' || v[i] == 'A') && i+2 < len(v) && lower(v[i+1]) == 'n' && lower(v[i+2]) == 'd' && (i == 0 || !isIdentByte(v[i-1])):
			rest = v[i+3:]
		case (v[i] == '|' || v[i] == '&') && i+1 < len(v) && v[i+1] == v[i]:
			rest = v[i+2:]
		default:
			continue
		}
		if len(rest) == 0 || isIdentByte(rest[0]) {
			continue // "order", "android"
		}
		rest = bytes.TrimLeft(rest, " \t(")
		a, n := sqlOperand(rest)
		if n == 0 {
			continue
		}
		r := bytes.TrimLeft(rest[n:], " \t")
		if len(r) == 0 || r[0] != '=' {
			continue
		}
		r = bytes.TrimLeft(r[1:], " \t")
		b, m := sqlOperand(r)
		if m > 0 && bytes.EqualFold(a, b) {
			return true
		}
	}
	return false
}

// sqlOperand reads a number or a quoted string (without its quotes; an unterminated quote ends
// the value, as in the classic ' or 'a'='a).
func sqlOperand(b []byte) ([]byte, int) {
	if len(b) == 0 {
		return nil, 0
	}
	if b[0] == '\'' || b[0] == '"' {
		if j := bytes.IndexByte(b[1:], b[0]); j >= 0 {
			return b[1 : j+1], j + 2
		}
		return b[1:], len(b)
	}
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	return b[:n], n
}

// shortLine: a single-line value of parameter size; multi-line or long values are documents
// (posts, code snippets) where these syntax patterns are ordinary.
func shortLine(v []byte) bool {
	return len(v) <= 512 && bytes.IndexByte(v, '\n') < 0
}

// endsInWords: no quote, comment or comparison, and the value ends in an ordinary word
// ("sleep(8) hours", "char(10) in excel", "1; drop the beat"): a phrase, since an injection
// without a quote has to stay valid SQL up to its end.
func endsInWords(v []byte) bool {
	if bytes.ContainsAny(v, "'\"`#=<>") || bytes.Contains(v, []byte("--")) || bytes.Contains(v, []byte("/*")) {
		return false
	}
	t := bytes.TrimRight(v, " \t.!?")
	i := len(t)
	for i > 0 && ('a' <= t[i-1]|0x20 && t[i-1]|0x20 <= 'z') {
		i--
	}
	w := t[i:]
	if len(w) < 3 || (i > 0 && t[i-1] != ' ') {
		return false
	}
	for _, k := range [...]string{"true", "false", "null", "dual", "all"} {
		if bytes.EqualFold(w, []byte(k)) {
			return false
		}
	}
	return true
}

// isProse: free text of many words with few code characters.
func isProse(v []byte) bool {
	words, code, inWord := 0, 0, false
	for _, c := range v {
		isLetter := 'a' <= c|0x20 && c|0x20 <= 'z' || c >= 0x80
		if isLetter && !inWord {
			words++
		}
		inWord = isLetter
		switch c {
		case '\'', '"', '(', ')', '=', ';', '*', '#', '<', '>', '|', '&', '`':
			code++
		}
	}
	return words >= 10 && code*100 < len(v)*8
}

// Markers of SQL injection that ordinary sentences do not contain.
var strongSQLMarkers = [...]string{"union select", "union all select", "sleep(", "benchmark(", "waitfor delay", "pg_sleep",
	"' or '", "' or 1", "or 1=1", "' and '", "'--", "information_schema", "xp_cmdshell", "load_file(", "into outfile", "@@version"}

func strongSQL(v []byte) bool {
	for _, m := range strongSQLMarkers {
		if containsFold(v, m) {
			return true
		}
	}
	return false
}

// Statement pairs that start a second (stacked) SQL statement after ';'.
var stackedStatements = [...][2]string{{"select", "from"}, {"insert", "into"}, {"update", "set"}, {"delete", "from"},
	{"drop", "table"}, {"drop", "database"}, {"exec", "("}, {"exec", "xp_"}, {"execute", "("}, {"declare", "@"},
	{"waitfor", "delay"}, {"shutdown", ""}, {"create", "table"}, {"alter", "table"}, {"truncate", "table"}, {"select", "("}}

// stackedQuery: "; <statement> ... <its second keyword>" (1;SELECT * FROM users, '; DROP TABLE x);
// after a closing quote or parenthesis the statement keyword alone is enough (';SELECT P).
func stackedQuery(v []byte) bool {
	for i := bytes.IndexByte(v, ';'); i >= 0 && i < len(v); {
		rest := bytes.TrimLeft(v[i+1:], " \t\r\n+")
		b := bytes.TrimRight(v[:i], " ")
		closed := len(b) > 0 && (b[len(b)-1] == '\'' || b[len(b)-1] == '"' || b[len(b)-1] == ')') && shortLine(bytes.TrimSpace(v))
		for _, st := range stackedStatements {
			if !hasPrefixFold(rest, st[0]) {
				continue
			}
			if closed && (len(rest) == len(st[0]) || !isIdentByte(rest[len(st[0])])) {
				return true
			}
			if len(rest) == len(st[0]) {
				continue
			}
			if c := rest[len(st[0])]; c != ' ' && c != '\t' && c != '(' && c != '/' && c != '\n' {
				continue
			}
			if st[1] == "" && len(bytes.TrimSpace(rest[len(st[0]):])) <= 2 {
				return true
			}
			tail := rest[len(st[0]):]
			if len(tail) > 120 {
				tail = tail[:120]
			}
			if st[1] != "" && containsFold(tail, st[1]) {
				return true
			}
		}
		j := bytes.IndexByte(v[i+1:], ';')
		if j < 0 {
			break
		}
		i += j + 1
	}
	return false
}

// hasSQLChar is a cheap pre-filter: every libinjection SQLi fingerprint needs a quote, comment,
// operator, parenthesis or keyword separator; plain words and numbers skip the tokenizer.
func hasSQLChar(v []byte) bool {
	for _, c := range v {
		switch c {
		case '\'', '"', '`', '-', '#', '/', '(', ')', ';', '=', '<', '>', '|', '&', '*', ' ', '+', '%', ',', '@', '\\', '!', '\t', '\n', '\r', '{':
			return true
		}
	}
	return false
}

func isXSS(s *scratch, v []byte, sinks bool) bool {
	// Without '<' an XSS needs an attribute (=), a script URL or a DOM sink.
	if len(v) < minInjectionLen {
		return false
	}
	if bytes.IndexByte(v, '<') < 0 && bytes.IndexByte(v, '=') < 0 && !containsFold(v, "script") && !containsFold(v, "document") && !containsFold(v, "window") {
		return bytes.IndexByte(v, '(') >= 0 && jsContextCall(v) // ';alert(1)// needs no tag
	}
	// An XML declaration or processing instruction (<?xml ...?>) is not HTML; judge what follows.
	for hasPrefixFold(v, "<?xml") {
		end := bytes.Index(v, []byte("?>"))
		if end < 0 {
			return false
		}
		v = bytes.TrimLeft(v[end+2:], " \t\r\n")
	}
	if len(v) == 0 {
		return false
	}
	if libinjection.IsXSS(view(v)) || scriptURL(s, v) || jsContextCall(v) {
		return true
	}
	// Script reaching DOM sinks from a parameter.
	for _, sink := range [...]string{"document.cookie", "document.domain", "document.write(", "document.location", "window.location", ".fromcharcode(", "document.createelement("} {
		if sinks && containsFold(v, sink) {
			return true
		}
	}
	// Nested tags that survive a naive filter: <scr<script>ipt>.
	if i := indexFold(v, "<script"); i >= 0 && i+7 < len(v) && (v[i+7] == '>' || v[i+7] == ' ' || v[i+7] == '/' || v[i+7] == '\t') {
		return true
	}
	return false
}

// scriptURL: a value that is (or, after HTML character references and the control characters
// browsers skip, becomes) a javascript:/vbscript: URL, or one inside an attribute.
func scriptURL(s *scratch, v []byte) bool {
	if !containsFold(v, "script") {
		return false
	}
	s.t = s.t[:0]
	for i := 0; i < len(v) && len(s.t) < 1024; i++ {
		c := v[i]
		if c == '&' && i+2 < len(v) && v[i+1] == '#' {
			if r, n := charRef(v[i+2:]); n > 0 {
				c = r
				i += 1 + n
			}
		} else if c == '&' {
			if r, n := namedRef(v[i+1:]); n > 0 {
				c = r
				i += n
			}
		}
		if c == '\t' || c == '\n' || c == '\r' || c == 0 {
			continue
		}
		s.t = append(s.t, lower(c))
	}
	n := bytes.TrimLeft(s.t, " \x0b\x0c")
	if bytes.HasPrefix(n, []byte("javascript:")) || bytes.HasPrefix(n, []byte("vbscript:")) {
		return true
	}
	for _, attr := range [...]string{"href=", "src=", "action=", "formaction=", "data="} {
		if i := bytes.Index(n, []byte(attr)); i >= 0 {
			a := bytes.TrimLeft(n[i+len(attr):], "\"' ")
			if bytes.HasPrefix(a, []byte("javascript:")) || bytes.HasPrefix(a, []byte("vbscript:")) {
				return true
			}
		}
	}
	return false
}

// namedRef decodes the HTML5 named references used to split "javascript:" (after the '&').
func namedRef(b []byte) (byte, int) {
	for _, e := range [...]struct {
		name string
		c    byte
	}{{"tab;", '\t'}, {"newline;", '\n'}, {"colon;", ':'}, {"lpar;", '('}, {"rpar;", ')'}, {"sol;", '/'}, {"period;", '.'}} {
		if hasPrefixFold(b, e.name) {
			return e.c, len(e.name)
		}
	}
	return 0, 0
}

// charRef decodes a numeric character reference body ("x09;" or "106;") to one ASCII byte.
func charRef(b []byte) (byte, int) {
	hex := len(b) > 0 && (b[0] == 'x' || b[0] == 'X')
	i, v := 0, 0
	if hex {
		i = 1
	}
	start := i
	for ; i < len(b) && i < 10; i++ {
		d, ok := unhex(b[i])
		if !hex && (b[i] < '0' || b[i] > '9') || !ok {
			break
		}
		if hex {
			v = v*16 + int(d)
		} else {
			v = v*10 + int(b[i]-'0')
		}
	}
	if i == start || v > 0x7f {
		return 0, 0
	}
	if i < len(b) && b[i] == ';' {
		i++
	}
	return byte(v), i
}

// containsFold reports whether b contains the lower-case ASCII string s, ignoring ASCII case.
func containsFold(b []byte, s string) bool { return indexFold(b, s) >= 0 }

// indexFold is the index of the first match of the lower-case ASCII string s in b, ignoring
// ASCII case, or -1; an empty s matches at 0. Candidates for the first byte are found with
// bytes.IndexByte (vectorised) for both cases, so long values without the first letter cost
// one or two scans.
func indexFold(b []byte, s string) int {
	if len(s) == 0 {
		return 0
	}
	n := len(b) - len(s) + 1
	if n <= 0 {
		return -1
	}
	// Most markers hold a non-letter ("sleep(", "java.lang.", "$_get"): when b lacks it (one
	// vectorised scan) there is no match, which settles most benign values at once.
	for k := 0; k < len(s); k++ {
		if c := s[k]; c < 'a' || c > 'z' {
			if bytes.IndexByte(b, c) < 0 {
				return -1
			}
			break
		}
	}
	c0 := s[0]
	up := c0
	if 'a' <= c0 && c0 <= 'z' {
		up = c0 - 'a' + 'A'
	}
	nl, nu := -2, -2 // next candidate positions per case (-2: not searched yet, -1: none)
	for i := 0; i < n; {
		if nl != -1 && nl < i {
			if k := bytes.IndexByte(b[i:n], c0); k >= 0 {
				nl = i + k
			} else {
				nl = -1
			}
		}
		if up != c0 && nu != -1 && nu < i {
			if k := bytes.IndexByte(b[i:n], up); k >= 0 {
				nu = i + k
			} else {
				nu = -1
			}
		}
		j := nl
		if up != c0 && nu >= 0 && (j < 0 || nu < j) {
			j = nu
		}
		if j < 0 {
			return -1
		}
		k := 1
		for k < len(s) && lower(b[j+k]) == s[k] {
			k++
		}
		if k == len(s) {
			return j
		}
		i = j + 1
	}
	return -1
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// isShellshock: bash imports a variable as a function only when its value starts with "() {".
func isShellshock(v []byte) bool {
	v = bytes.TrimLeft(v, " \t")
	if len(v) < 4 || v[0] != '(' {
		return false
	}
	v = bytes.TrimLeft(v[1:], " \t")
	if len(v) == 0 || v[0] != ')' {
		return false
	}
	v = bytes.TrimLeft(v[1:], " \t")
	return len(v) > 0 && v[0] == '{'
}

// maxLookupRounds bounds the nested-lookup resolution in findJNDI.
const maxLookupRounds = 64

// findJNDI resolves Log4j lookups the way Log4j does (innermost first: ${lower:j} -> j,
// ${::-j} and ${env:X:-j} -> j, ${date:'j'} -> j, unknown -> empty) and reports a ${jndi:...}
// that appears at any round. This catches ${${lower:j}ndi:...}, ${${::-j}${::-n}di:...} and
// friends without a list of obfuscations.
func findJNDI(s *scratch, v []byte) ([]byte, bool) {
	i := bytes.Index(v, []byte("${"))
	if i < 0 {
		return nil, false
	}
	if len(v) > 8<<10 {
		v = v[:8<<10]
	}
	ev := v[i:]
	s.t = append(s.t[:0], v[i:]...)
	buf := s.t
	for round := 0; round < maxLookupRounds; round++ {
		open := bytes.LastIndex(buf, []byte("${"))
		if open < 0 {
			return nil, false
		}
		closeRel := bytes.IndexByte(buf[open:], '}')
		if closeRel < 0 {
			// Unterminated: judge what is there (payloads are often cut by length limits).
			closeRel = len(buf) - open
		}
		body := buf[open+2 : open+closeRel]
		if hasPrefixFold(bytes.TrimSpace(body), "jndi:") || hasPrefixFold(bytes.TrimSpace(body), "jndi%3a") {
			return ev, true
		}
		repl := resolveLookup(body)
		end := open + closeRel + 1
		if end > len(buf) {
			end = len(buf)
		}
		// Replace buf[open:end] with repl (repl is a sub-slice of body, so copy first).
		var tmp [64]byte
		r := append(tmp[:0], repl...)
		buf = append(buf[:open], append(r, buf[end:]...)...)
	}
	return nil, false
}

// resolveLookup returns what a Log4j lookup body evaluates to, for the obfuscation lookups.
func resolveLookup(body []byte) []byte {
	if i := bytes.Index(body, []byte(":-")); i >= 0 {
		return body[i+2:]
	}
	if c := bytes.IndexByte(body, ':'); c >= 0 {
		name, arg := body[:c], body[c+1:]
		switch {
		case bytes.EqualFold(name, []byte("lower")), bytes.EqualFold(name, []byte("upper")):
			return arg
		case bytes.EqualFold(name, []byte("date")):
			return bytes.Trim(arg, "'")
		}
	}
	return nil
}

// Sensitive OS files that traversal and LFI payloads aim at (lower-case, '/' separators).
var sensitiveFiles = [...]string{
	"etc/passwd", "etc/shadow", "etc/group", "etc/hosts", "etc/issue", "etc/motd", "etc/crontab",
	"proc/self/", "proc/version", "proc/1/", "windows/win.ini", "win.ini", "boot.ini", "system32/",
	"windows/system.ini", "web-inf/web.xml", "meta-inf/", ".htpasswd", ".htaccess", ".ssh/id_", ".ssh/authorized_keys",
	"var/log/", "bash_history", "windows/system32/", "sys/class/", "sys/kernel/", "windows/system.ini", "etc/nginx/", "etc/apache2/", "etc/httpd/", "inetpub/", "autoexec.bat",
}

// Files that only hold secrets (lower-case).
var secretFiles = [...]string{".ssh/id_", ".ssh/authorized_keys", "etc/shadow", "etc/passwd", ".aws/credentials",
	"proc/self/environ", ".git-credentials", ".docker/config.json", ".kube/config", "web-inf/web.xml", ".htpasswd"}

// Path segments a web app never serves: secrets, VCS metadata, server internals.
var restrictedPaths = [...]string{"/.env", "/.git/", "/.svn/", "/.hg/", "/.ssh/", "/.aws/", "/.docker/", "/.kube/",
	"/.htpasswd", "/.htaccess", "/.bash_history", "/.npmrc", "/.pypirc", "/.git-credentials", "/etc/passwd",
	"/etc/shadow", "/proc/self/", "/web-inf/", "/meta-inf/", "/@fs/", "/id_rsa", "/.ds_store", "/sys/class/", "/proc/"}

// hiddenSegment is the index of a path segment that starts with '.' and a letter (a dotfile
// or dot-directory: /.claude/settings.json, /.aiignore), or -1.
func hiddenSegment(p []byte) int {
	for i := 0; i+2 < len(p); i++ {
		if p[i] != '/' || p[i+1] != '.' || !('a' <= p[i+2]|0x20 && p[i+2]|0x20 <= 'z' || p[i+2] == '_') {
			continue
		}
		if hasPrefixFold(p[i:], "/.well-known") || hasPrefixFold(p[i:], "/.netlify/") || hasPrefixFold(p[i:], "/.auth/") {
			continue // public by design: RFC 8615, Netlify functions, Azure App Service auth
		}
		return i
	}
	return -1
}

// restrictedPath: the decoded path asks for one of restrictedPaths.
func restrictedPath(s *scratch, p []byte) []byte {
	if bytes.IndexByte(p, '.') < 0 && !containsFold(p, "/proc/") && !containsFold(p, "/etc/") && !containsFold(p, "/sys/") && !containsFold(p, "/@fs/") && !containsFold(p, "-inf/") {
		return nil
	}
	if i := hiddenSegment(p); i >= 0 {
		return p[i:]
	}
	if i := bytes.LastIndexByte(p, '/'); i >= 0 {
		last := p[i+1:]
		for _, ext := range [...]string{".sql", ".sql.gz", ".sql.zip", ".sql.bz2", ".sql.xz", ".bak", ".swp", ".dump", ".old", ".orig", ".save", "~"} {
			if hasSuffixFold(last, ext) {
				return p[i:] // database dumps and editor/backup copies left in the web root
			}
		}
		if containsFold(p, "/wp-content/") && hasSuffixFold(last, ".log") {
			return p[i:]
		}
	}
	for _, r := range restrictedPaths {
		if i := indexFold(p, r); i >= 0 {
			end := i + len(r)
			// "/.env" must be the whole segment (".env", ".env.local"), not "/.envoy".
			if r == "/.env" && end < len(p) && p[end] != '/' && p[end] != '.' {
				continue
			}
			return p[i:]
		}
	}
	return nil
}

// findTraversal reports ../ sequences that climb out of a directory, NUL bytes in file-like
// values, and absolute paths to well-known sensitive OS files.
func findTraversal(s *scratch, v []byte) ([]byte, bool) {
	hasDot := bytes.Contains(v, []byte(".."))
	hasNul := bytes.IndexByte(v, 0) >= 0
	if !hasDot && !hasNul && bytes.IndexByte(v, '/') < 0 && bytes.IndexByte(v, '\\') < 0 && !containsFold(v, "win.ini") {
		return nil, false
	}
	// Normalise: lower-case, '\' -> '/', collapse "//".
	s.t = s.t[:0]
	for _, c := range v {
		c = lower(c)
		if c == '\\' {
			c = '/'
		}
		if c == '/' && len(s.t) > 0 && s.t[len(s.t)-1] == '/' {
			continue
		}
		// "/./" is "/": /etc/./passwd
		if c == '/' && len(s.t) > 1 && s.t[len(s.t)-1] == '.' && s.t[len(s.t)-2] == '/' {
			s.t = s.t[:len(s.t)-1]
			continue
		}
		s.t = append(s.t, c)
	}
	n := s.t
	// An absolute path to a dotenv file (/var/www/html/.env).
	if len(n) > 5 && n[0] == '/' && bytes.IndexByte(n, ' ') < 0 && (bytes.HasSuffix(n, []byte("/.env")) || bytes.Contains(n, []byte("/.env.")) || bytes.Contains(n, []byte("/.git/config"))) {
		return v, true
	}
	if bytes.Contains(n, []byte("..;/")) {
		n = bytes.ReplaceAll(n, []byte("..;/"), []byte("../"))
	}
	if hasNul && (bytes.IndexByte(n, '/') >= 0 || bytes.IndexByte(n, '.') >= 0) {
		return v, true
	}
	if hasDot {
		ups := bytes.Count(n, []byte("../"))
		if bytes.HasSuffix(n, []byte("/..")) {
			ups++
		}
		if ups >= 2 || (ups == 1 && (bytes.HasPrefix(n, []byte("../")) || bytes.HasPrefix(n, []byte("/../")))) {
			// "a/../b" stays inside; a value that starts by climbing, or climbs twice, does not.
			if ups >= 2 || mentionsSensitive(n) || isFileLike(n) {
				return v, true
			}
		}
	}
	// Names of secret files, anywhere in a path-like value (".ssh/id_rsa", "etc/shadow").
	if bytes.IndexByte(n, ' ') < 0 {
		for _, f := range secretFiles {
			if bytes.Contains(n, []byte(f)) {
				return v, true
			}
		}
	}
	// Absolute or file:// references to sensitive files.
	t := bytes.TrimLeft(n, " ")
	t = bytes.TrimPrefix(t, []byte("file:"))
	t = bytes.TrimLeft(t, "/")
	if len(t) > 2 && t[1] == ':' && t[2] == '/' { // c:/...
		t = t[3:]
	}
	if len(t) < len(n) || bytes.HasPrefix(n, []byte("file:")) { // it was absolute
		for _, f := range sensitiveFiles {
			// A path, not a sentence about one ("/etc/hosts file on windows").
			if bytes.HasPrefix(t, []byte(f)) && bytes.IndexByte(t, ' ') < 0 {
				return v, true
			}
		}
	}
	return nil, false
}

func mentionsSensitive(n []byte) bool {
	for _, f := range sensitiveFiles {
		if bytes.Contains(n, []byte(f)) {
			return true
		}
	}
	return false
}

// isFileLike: "../x.ext" or "../dir/file", the target of a single climb.
func isFileLike(n []byte) bool {
	i := bytes.LastIndexByte(n, '/')
	return i >= 0 && i < len(n)-1 && bytes.IndexByte(n[i:], '.') > 0
}

// rawPathTraversal: a dot-segment in the path as sent. Browsers and HTTP clients resolve them
// before sending, so an escaped or literal ".." segment in the raw path was put there on purpose.
func rawPathTraversal(p []byte) bool {
	if !bytes.Contains(p, []byte("..")) && !containsFold(p, "%2e") && !containsFold(p, "%c0") && !containsFold(p, "%u") {
		return false
	}
	var buf [2048]byte
	d := percentDecode(buf[:0], p[:min(len(p), 1024)], false)
	d = percentDecode(buf[1024:1024], d[:min(len(d), 1024)], false)
	d = foldOverlong(d)
	for i := 0; i+1 < len(d); i++ {
		if d[i] == '.' && d[i+1] == '.' && (i == 0 || d[i-1] == '/' || d[i-1] == '\\') &&
			(i+2 == len(d) || d[i+2] == '/' || d[i+2] == '\\' || d[i+2] == ';') {
			return true
		}
	}
	return false
}

// Commands that injection payloads run (lower-case).
// Commands that injection payloads run (lower-case): see isShellCommand.

// Commands that are not English words, so "; id" at the very end of a value is enough.
var bareCommands = [...]string{"id", "whoami", "uname", "ifconfig", "ipconfig", "ls", "pwd", "hostname", "netstat",
	"ps", "env", "printenv", "systeminfo", "tasklist", "whoami.exe", "ver", "dir", "bash", "sh", "cmd", "cmd.exe"}

// findCmdInjection looks for a shell separator or substitution followed by a known command
// whose argument looks like shell usage (an option, a path, a number, a variable, a redirect,
// another separator), or a non-word command on its own. Quotes, backslashes and carets inside
// the command word are removed first (c'a't, c\at, c^md), as the shell would.
func findCmdInjection(s *scratch, v []byte) ([]byte, bool) {
	if bytes.Contains(v, []byte("```")) {
		return nil, false // Markdown with fenced code: documentation, not a parameter
	}
	if hasPrefixFold(v, "${ifs}") || hasPrefixFold(v, "$ifs") { // ${IFS}id: a command after a field separator
		if cmdAt(s, v, false) {
			return v, true
		}
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		var start int
		switch c {
		case ';':
			if endsEntity(v[:i]) {
				continue // "&amp;" in HTML text
			}
			start = i + 1
		case '|', '&', '\n', '\r':
			start = i + 1
			for start < len(v) && (v[start] == '|' || v[start] == '&') {
				start++
			}
		case '`':
			if len(v) > 256 { // long text with backticks is prose or Markdown, not a parameter
				continue
			}
			start = i + 1
		case '$':
			if i+1 < len(v) && v[i+1] == '(' {
				start = i + 2
				if i+2 < len(v) && v[i+2] == '(' && shortLine(v) {
					return v[i:min(len(v), i+MaxEvidence)], true // $(( arithmetic ))
				}
			} else {
				continue
			}
		case '<', '>':
			if i+1 < len(v) && v[i+1] == '(' { // process substitution <(cmd) >(cmd)
				start = i + 2
			} else {
				continue
			}
		default:
			continue
		}
		if cmdAt(s, v[start:], c == '`' || c == '$' || c == '<' || c == '>') {
			return v[i:min(len(v), i+MaxEvidence)], true
		}
	}
	// Server-side includes: <!--#exec cmd="id" -->, <!--#include virtual="/etc/passwd" -->.
	if i := bytes.Index(v, []byte("<!--#")); i >= 0 {
		r := v[i+5:]
		for _, d := range [...]string{"exec", "include", "echo", "config", "fsize", "flastmod", "printenv", "set"} {
			if hasPrefixFold(r, d) {
				return v[i:], true
			}
		}
	}
	// Value that is itself a substitution-free command with a glob path: /???/c?t /???/p??s??
	if i := bytes.Index(v, []byte("/???/")); i >= 0 {
		return v[i:], true
	}
	// A globbed binary path on its own: /bi[n]/bash, /usr/[a-z]in/bash.
	if t := bytes.TrimSpace(v); len(t) > 0 && t[0] == '/' && bytes.IndexByte(t, ' ') < 0 && bytes.IndexByte(t, '[') > 0 && binPath(t) {
		return v, true
	}
	// A value that starts with a command that is not a word, then a separator: whoami;x, id|x.
	if t := bytes.TrimLeft(v, " \t"); len(t) > 0 {
		k := 0
		for k < len(t) && k < 16 && (isIdentByte(t[k]) || t[k] == '.') {
			k++
		}
		if k > 1 && k < len(t) && (t[k] == ';' || t[k] == '|' || t[k] == '&' && k+1 < len(t) && t[k+1] == '&') {
			s.t = append(s.t[:0], t[:k]...)
			for j := range s.t {
				s.t[j] = lower(s.t[j])
			}
			// Not the short ones: "id;name;email" is a column list, "env;prod" a setting.
			if isBareCommand(s.t) && len(s.t) > 3 {
				return v, true
			}
		}
	}
	// A value that is a whole command line ("cat /etc/passwd", "nohup sh -c whoami"): a known
	// command, then a path or option argument, in a short value (not a sentence about commands).
	if words := bytes.Count(bytes.TrimSpace(v), []byte(" ")) + 1; words >= 2 && words <= 5 && len(v) <= 128 && startCommand(s, v) {
		return v, true
	}
	return nil, false
}

// Commands that run the command after them.
var wrapperCommands = [...]string{"nohup", "time", "sudo", "env", "timeout", "nice", "xargs", "exec", "busybox", "cpulimit", "stdbuf", "setsid", "strace"}

func startCommand(s *scratch, v []byte) bool {
	v = skipBlanks(v)
	for depth := 0; depth < 3; depth++ {
		end := 0
		for end < len(v) && v[end] != ' ' && v[end] != '\t' {
			end++
		}
		s.t = s.t[:0]
		for _, c := range v[:end] {
			if c != '\'' && c != '"' && c != '\\' {
				s.t = append(s.t, lower(c))
			}
		}
		word := s.t
		rest := skipBlanks(v[end:])
		if len(word) == 0 || len(rest) == 0 {
			return false
		}
		if binPath(word) {
			return true
		}
		if k := bytes.LastIndexByte(word, '/'); k >= 0 {
			return false
		}
		if isWrapper(word) && !bytes.Equal(word, []byte("time")) && len(bytes.Fields(rest)) == 1 {
			// nohup ifconfig, strace id: a wrapper running a non-word command
			w := bytes.TrimSpace(rest)
			s.t = append(s.t[:0], w...)
			for j := range s.t {
				s.t[j] = lower(s.t[j])
			}
			if isBareCommand(s.t) && !bytes.Equal(s.t, []byte("dir")) && !bytes.Equal(s.t, []byte("ver")) {
				return true
			}
		}
		if isWrapper(word) {
			for len(rest) > 0 && rest[0] == '-' { // wrapper options: timeout -s 9, cpulimit -l 100 -f
				e := bytes.IndexByte(rest, ' ')
				if e < 0 {
					return false
				}
				rest = skipBlanks(rest[e:])
				if len(rest) > 0 && rest[0] >= '0' && rest[0] <= '9' {
					if e = bytes.IndexByte(rest, ' '); e < 0 {
						return false
					}
					rest = skipBlanks(rest[e:])
				}
			}
			v = rest
			continue
		}
		if !isShellCommand(word) {
			return false
		}
		// Every argument must be shell usage (options, paths, numbers, redirects), not words:
		// "cat /etc/passwd" is a command, "cat /var/log/app.log explained" a sentence.
		if !shellArgs(rest) {
			return false
		}
		if rest[0] == '/' || rest[0] == '~' || rest[0] == '>' || rest[0] == '<' {
			return true
		}
		if len(rest) > 2 && rest[1] == ':' && rest[2] == '\\' { // powershell C:\windows\...
			return true
		}
		if isShellInterpreter(word) && (hasPrefixFold(rest, "-c ") || hasPrefixFold(rest, "/c ") || hasPrefixFold(rest, "-command ")) {
			return true // sh -c "...", cmd /c, powershell -Command
		}
		return rest[0] == '-' && bytes.IndexByte(rest, ' ') > 0 && (bytes.IndexByte(rest, '/') >= 0 || depth > 0)
	}
	return false
}

// shellArgs: each space-separated token is an option, path, number, variable or redirect, or a
// short token (a command name like "sh", "id").
func shellArgs(b []byte) bool {
	for _, tok := range bytes.Fields(b) {
		switch c := tok[0]; {
		case c == '-', c == '/', c == '~', c == '$', c == '>', c == '<', c == '|', c == '&', c == '.', '0' <= c && c <= '9':
		case bytes.ContainsAny(tok, "/=.:"):
		case len(tok) <= 6:
		default:
			return false
		}
	}
	return true
}

// binPath: an absolute path into a system binary directory (/bin/x, /usr/bin/x, /sbin/x),
// also globbed (/bi[n]/bash, /???/c?t).
func binPath(w []byte) bool {
	if len(w) < 5 || w[0] != '/' {
		return false
	}
	for _, d := range [...]string{"/bin/", "/usr/bin/", "/sbin/", "/usr/sbin/", "/usr/local/bin/"} {
		if bytes.HasPrefix(w, []byte(d)) && len(w) > len(d) {
			return true
		}
	}
	return bytes.IndexAny(w, "?*[") > 0 && bytes.Count(w, []byte("/")) >= 2
}

// isShellInterpreter: programs that run the command string after -c (or /c).
func isShellInterpreter(w []byte) bool {
	switch string(w) {
	case "sh", "bash", "zsh", "ksh", "dash", "busybox", "cmd", "cmd.exe", "powershell", "powershell.exe", "pwsh", "$shell", "${shell}":
		return true
	}
	return false
}

func isWrapper(w []byte) bool {
	for _, c := range wrapperCommands {
		if string(w) == c {
			return true
		}
	}
	return false
}

// cmdAt reports whether b starts (after blanks and ${IFS}) with a known command in shell usage.
func cmdAt(s *scratch, b []byte, substitution bool) bool {
	b = skipBlanks(b)
	brace := false
	if len(b) > 0 && (b[0] == '{' || b[0] == '(') { // {cat,/etc/passwd} and (id)
		brace = b[0] == '{'
		b = b[1:]
	}
	// Read the word, dropping shell quoting inside it.
	s.t = s.t[:0]
	j := 0
	for ; j < len(b) && j < 64; j++ {
		c := b[j]
		if c == '\'' || c == '"' || c == '\\' || c == '^' {
			continue
		}
		if c == ' ' || c == '\t' || c == ';' || c == '|' || c == '&' || c == '`' || c == ')' || c == '<' || c == '>' || c == '$' || c == ',' || c == '\n' || c == '}' {
			break
		}
		s.t = append(s.t, lower(c))
	}
	word := s.t
	if len(word) == 0 {
		return false
	}
	if binPath(word) {
		return true // /bin/sh, /usr/bin/id, /???/c?t, /bi[n]/bash
	}
	if k := bytes.LastIndexByte(word, '/'); k >= 0 {
		if word[0] != '/' { // only absolute paths to binaries (/bin/sh, /usr/bin/id)
			return false
		}
		word = word[k+1:]
	}
	if !isShellCommand(word) {
		return false
	}
	rest := b[j:]
	if len(bytes.TrimSpace(rest)) == 0 || rest[0] == '`' || rest[0] == ')' || rest[0] == ';' || rest[0] == '|' || rest[0] == '&' || rest[0] == '}' {
		// Command alone: only non-words, or inside a substitution.
		return substitution || isBareCommand(word)
	}
	if rest[0] == '$' || rest[0] == '<' || rest[0] == '>' || (rest[0] == ',' && brace) {
		return true // ${IFS}, $IFS$9, redirects, brace expansion
	}
	rest = skipBlanks(rest)
	if len(rest) == 0 {
		return substitution || isBareCommand(word)
	}
	switch a := rest[0]; {
	case a == '-', a == '/', a == '$', a == '`', a == '.', a == '~', a == '<', a == '>', a == '\'', a == '"', a == '|', a == '&', a == ';':
		return true
	case '0' <= a && a <= '9':
		return true
	case len(rest) > 2 && rest[1] == ':' && (rest[2] == '\\' || rest[2] == '/'): // c:\
		return true
	case hasPrefixFold(rest, "http://"), hasPrefixFold(rest, "https://"), hasPrefixFold(rest, "ftp://"), hasPrefixFold(rest, "tftp://"):
		return true // wget http://..., curl https://...
	case string(word) == "net" && (hasPrefixFold(rest, "user") || hasPrefixFold(rest, "localgroup") || hasPrefixFold(rest, "group") ||
		hasPrefixFold(rest, "share") || hasPrefixFold(rest, "view") || hasPrefixFold(rest, "use ") || hasPrefixFold(rest, "session")):
		return true // & net user, | net localgroup administrators
	}
	return substitution && isShellCommand(word)
}

// endsEntity: b ends with an HTML character reference name ("&amp", "&#39").
func endsEntity(b []byte) bool {
	for k := len(b) - 1; k >= 0 && k >= len(b)-10; k-- {
		c := b[k]
		if c == '&' {
			return k < len(b)-1
		}
		if !('a' <= c|0x20 && c|0x20 <= 'z' || '0' <= c && c <= '9' || c == '#') {
			return false
		}
	}
	return false
}

func skipBlanks(b []byte) []byte {
	for {
		switch {
		case len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '+'):
			b = b[1:]
		case hasPrefixFold(b, "${ifs}"):
			b = b[6:]
		case hasPrefixFold(b, "$ifs"):
			b = b[4:]
		default:
			return b
		}
	}
}

func isShellCommand(w []byte) bool {
	if len(w) < 2 || len(w) > 14 {
		return false
	}
	if len(w) > 7 && string(w[:7]) == "python3" && w[7] == '.' { // python3.10
		return true
	}
	switch string(w) { // a switch on a []byte conversion does not allocate
	case "cat", "ls", "id", "whoami", "uname", "wget", "curl", "nc", "ncat", "netcat", "bash", "sh", "zsh", "ksh", "dash", "python", "python2", "python3", "perl", "ruby", "php", "ping", "nslookup", "dig", "host", "sleep", "echo", "rm", "chmod", "chown", "touch", "mkfifo", "telnet", "ifconfig", "ipconfig", "netstat", "ps", "kill", "env", "printenv", "pwd", "hostname", "head", "tail", "more", "less", "find", "grep", "awk", "sed", "base64", "xxd", "tftp", "ftp", "scp", "ssh", "socat", "busybox", "powershell", "pwsh", "cmd", "certutil", "net", "systeminfo", "tasklist", "reg", "wmic", "nohup", "timeout", "expr", "passwd", "useradd", "crontab", "dir", "type", "ver", "whoami.exe", "cmd.exe", "powershell.exe", "bitsadmin", "mshta", "rundll32", "nmap", "tee", "cp", "mv", "sudo", "su", "exec", "eval", "system", "xterm", "lynx", "fetch",
		"gunzip", "zcat", "zstdcat", "bzcat", "xzcat", "bsdtar", "tar", "base32", "tac", "cd", "regedit", "bcdboot", "bcdedit", "iwmi", "gwmi",
		"schtasks", "vssadmin", "wevtutil", "icacls", "takeown", "netsh", "wscript", "cscript", "msiexec", "regsvr32", "$shell", "${shell}":
		return true
	}
	return false
}

func isBareCommand(w []byte) bool {
	for _, c := range bareCommands {
		if string(w) == c {
			return true
		}
	}
	return false
}
