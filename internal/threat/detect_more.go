package threat

import (
	"bytes"
	"math/bits"
	"strings"
)

// Detectors for payload families the libinjection-based ones miss: Java class and
// deserialization payloads, Node.js code and prototype pollution, server-executable uploads,
// and sharper PHP, SQL, PowerShell and Windows cmd patterns. Each works on one decoded value
// and allocates nothing.

// Java gadget classes and OGNL/EL idioms that mean object or code injection wherever they
// appear, multi-line values included (XStream and XMLDecoder bodies are multi-line XML).
var javaGadgets = [...]string{"java.beans.xmldecoder", "com.sun.rowset", "com.sun.org.apache.xalan", "com.sun.jndi",
	"#_memberaccess", "@java.lang.", "t(java.", "getruntime().exec", "class.module.classloader", "ognlcontext", "ognlutil",
	"org.apache.commons.collections", "org.apache.commons.beanutils", "org.codehaus.groovy.runtime", "bsh.interpreter",
	"com.mchange.v2.c3p0", "freemarker.template.utility", "org.springframework.context.support", "invokertransformer",
	"chainedtransformer", "constanttransformer", "instantiatetransformer", "instantiatefactory", "clonetransformer",
	"prototypeclonefactory", "prototypeserializationfactory", "whileclosure", "forclosure", "templatesimpl", "jdbcrowsetimpl",
	"<java.lang.processbuilder", "<java.lang.runtime", "class=\"java.lang.processbuilder", "class=\"java.lang.runtime"}

// Java classes whose name in a single-line parameter means code or object injection
// (expression languages, Jackson/fastjson polymorphic typing); in multi-line text they are
// ordinary frames of a stack trace or lines of a code snippet. Matched case-insensitively at a
// token start; names ending in Exception or Error are skipped.
var javaStrong = [...]string{"java.lang.runtime", "java.lang.processbuilder", "java.lang.process", "java.lang.reflect",
	"java.lang.system", "java.lang.class", "java.lang.classloader", "javax.naming.initialcontext",
	"javax.script.scriptenginemanager", "javax.management.", "java.io.objectinputstream", "java.io.objectoutputstream",
	"java.net.urlclassloader", "com.sun.org.apache", "sun.misc.unsafe", "sun.reflect", "com.opensymphony.xwork2",
	"org.apache.xalan", "groovy.lang.", "javassist", "getruntime()", "processbuilder", "propertyutilsbean",
	"org.omg.corba", "java.rmi.", "sun.rmi."}

// Java packages and classes that count only as the whole token of a short parameter (a class
// name sent where data belongs); a trailing '.' matches any class in the package.
var javaWeak = [...]string{"java.io.", "java.lang.", "java.net.", "java.nio.file", "javax.xml.", "javax.naming", "javax.script",
	"org.apache.commons", "org.apache.struts", "org.apache.struts2", "freemarker.core", "freemarker.template", "freemarker.ext.rhino",
	"org.dom4j.io.saxreader", "org.jdom2.input.saxbuilder", "org.xml.sax", "classloader", "declaredclass"}

// findJava reports Java class/gadget names and serialized Java objects (binary, base64 "rO0AB"
// or hex "aced0005") in v.
func findJava(v []byte) ([]byte, bool) {
	if i := serializedJava(v); i >= 0 {
		return v[i:], true
	}
	if len(v) < 8 {
		return nil, false // shorter than any marker
	}
	// One pass over the three lists (javaSet: gadgets, then strong, then weak markers).
	multiLine := !shortLine(v) && (len(v) > 4<<10 || bytes.IndexByte(v, '\n') >= 0)
	words, prose := false, false
	if !multiLine {
		words, prose = wordy(v), isProse(v)
	}
	i := javaSet.scanK(v, func(i, k int) bool {
		m := javaSet.list[k]
		switch {
		case k < len(javaGadgets):
			return javaTokenAt(v, i, m, false)
		case multiLine:
			return false
		case k < len(javaGadgets)+len(javaStrong):
			// "ProcessBuilder vs Runtime.exec in Java": a question about the class, unless
			// the marker is code by its punctuation.
			return (!words || javaCodeMarker(m)) && javaTokenAt(v, i, m, false)
		default:
			return !words && !prose && javaTokenAt(v, i, m, m[len(m)-1] != '.')
		}
	})
	if i >= 0 {
		return v[i:], true
	}
	return nil, false
}

// javaCodeMarker: markers that are code by their punctuation, whatever surrounds them.
func javaCodeMarker(m string) bool {
	return strings.ContainsAny(m, "()#@")
}

// wordy: a phrase — at least three space-separated tokens, most of them plain words — as
// typed into a search box or a message ("java.lang.String to int", "if exist in batch
// scripts"), not code.
func wordy(v []byte) bool {
	tokens, plain := 0, 0
	for i := 0; i < len(v); {
		for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == '\n' || v[i] == '\r') {
			i++
		}
		if i == len(v) {
			break
		}
		j := i
		for j < len(v) && v[j] != ' ' && v[j] != '\t' && v[j] != '\n' && v[j] != '\r' {
			j++
		}
		t := v[i:j]
		for len(t) > 0 && (t[len(t)-1] == '?' || t[len(t)-1] == '!' || t[len(t)-1] == '.' || t[len(t)-1] == ',' || t[len(t)-1] == ':') {
			t = t[:len(t)-1]
		}
		tokens++
		ok := len(t) > 0
		for _, c := range t {
			if !('a' <= c|0x20 && c|0x20 <= 'z' || c >= 0x80) {
				ok = false
				break
			}
		}
		if ok {
			plain++
		}
		i = j
	}
	return tokens >= 3 && plain*2 > tokens
}

// javaTokenAt: marker m found at v[i] starts a token (not preceded by a letter, digit or dot)
// and does not name an exception or error class. exact: the class name must end with m
// (org.apache.commons, not org.apache.commons.lang3.StringUtils).
func javaTokenAt(v []byte, i int, m string, exact bool) bool {
	if i > 0 && (isIdentByte(v[i-1]) && m[0] != '@' && m[0] != '#' && !isGadgetWord(m) || v[i-1] == '.' && m[len(m)-1] == '.') {
		return false
	}
	end := i + len(m)
	for end < len(v) && (isIdentByte(v[end]) || v[end] == '.' || v[end] == '$') {
		end++
	}
	if exact && end != i+len(m) {
		return false
	}
	cls := v[i:end]
	return !hasSuffixFold(cls, "exception") && !hasSuffixFold(cls, "error") && !containsFold(cls, "exception.")
}

// isGadgetWord: markers that are class simple names, matched inside longer identifiers too
// (ProcessBuilder.evil.clonetransformer, org...functors.InvokerTransformer).
func isGadgetWord(m string) bool { return strings.IndexByte(m, '.') < 0 }

func hasSuffixFold(b []byte, s string) bool {
	return len(b) >= len(s) && bytes.EqualFold(b[len(b)-len(s):], []byte(s))
}

// serializedJava is the index of a Java serialization stream header in v, or -1: the magic
// AC ED 00 05 raw, base64 ("rO0AB") or hex ("aced0005") at the start of a token.
func serializedJava(v []byte) int {
	if bytes.HasPrefix(v, []byte{0xac, 0xed, 0x00, 0x05}) {
		return 0
	}
	for _, m := range [...]string{"rO0AB", "aced0005", "ACED0005"} {
		for from := 0; from < len(v); {
			i := bytes.Index(v[from:], []byte(m))
			if i < 0 {
				break
			}
			i += from
			from = i + 1
			if i == 0 || !isIdentByte(v[i-1]) && v[i-1] != '+' && v[i-1] != '/' {
				return i
			}
		}
	}
	return -1
}

// findNode reports Node.js code injection and prototype pollution: node-serialize function
// markers, child_process, require('...'), process.mainModule/binding, and __proto__ or
// constructor.prototype paths.
func findNode(v []byte) ([]byte, bool) {
	if bytes.IndexByte(v, '_') < 0 && bytes.IndexByte(v, '.') < 0 && bytes.IndexByte(v, '(') < 0 && bytes.IndexByte(v, '[') < 0 && bytes.IndexByte(v, '{') < 0 {
		return nil, false
	}
	if i := nodeAlwaysSet.scan(v, func(int, string) bool { return true }); i >= 0 {
		return v[i:], true
	}
	// node-serialize's marker in base64 (_$$ND_FUNC$$_ -> XyQkTkRfRlVOQyQk).
	if i := bytes.Index(v, []byte("XyQkTkRfRlVOQyQk")); i >= 0 {
		return v[i:], true
	}
	// The rest only in a single-line parameter: a code snippet posted to a developer API uses
	// require('child_process') and module.exports legitimately.
	if !shortLine(v) || isProse(v) {
		return nil, false
	}
	if t := bytes.TrimSpace(v); hasPrefixFold(t, "while(") && !wordy(t) && !falseCondition(t[6:]) {
		return t, true // while(true); an event-loop DoS handed to eval
	}
	if t := bytes.TrimSpace(v); bytes.EqualFold(t, []byte("process.env")) {
		return t, true
	}
	if i := nodeShortSet.scan(v, func(i int, m string) bool {
		if m == "require(" && (i+8 >= len(v) || (v[i+8] != '\'' && v[i+8] != '"' && v[i+8] != '`')) {
			return false
		}
		return m != "__proto__" || protoUse(v, i)
	}); i >= 0 {
		return v[i:], true
	}
	return nil, false
}

// falseCondition: a loop condition that is constant false (the loop never runs).
func falseCondition(r []byte) bool {
	e := bytes.IndexByte(r, ')')
	if e < 0 {
		return false
	}
	switch string(bytes.TrimSpace(r[:e])) {
	case "!true", "false", "0", "!1", "null", "undefined", "''", "\"\"", "``", "NaN", "-0", "+0":
		return true
	}
	return false
}

// protoUse: __proto__ used as a property path or key (__proto__[x], __proto__.x, a name that
// is exactly __proto__), not mentioned among words.
func protoUse(v []byte, i int) bool {
	end := i + len("__proto__")
	if i == 0 && end == len(v) {
		return true
	}
	return end < len(v) && (v[end] == '[' || v[end] == '.' || v[end] == '"' || v[end] == '\'' || v[end] == ']') ||
		i > 0 && (v[i-1] == '.' || v[i-1] == '[')
}

// isProtoKey: a JSON key or parameter name that pollutes Object.prototype when merged.
func isProtoKey(k []byte) bool {
	return bytes.Equal(k, []byte("__proto__")) || bytes.Contains(k, []byte("__proto__[")) || bytes.Contains(k, []byte("__proto__.")) ||
		bytes.Contains(k, []byte("[__proto__]")) || containsFold(k, "constructor[prototype]") || containsFold(k, "constructor.prototype") ||
		containsFold(k, "[constructor][prototype]")
}

// Extensions a server executes when an uploaded file lands in the web root.
var scriptExtensions = [...]string{".php", ".phtml", ".php3", ".php4", ".php5", ".php7", ".php8", ".phar", ".pht", ".phps",
	".jsp", ".jspx", ".jspf", ".asp", ".aspx", ".ashx", ".asmx", ".cer", ".shtml", ".cgi"}

// Files that reconfigure the server when uploaded.
var serverConfigFiles = [...]string{".htaccess", ".user.ini", "web.config", ".htpasswd"}

// isScriptUpload: an upload file name a web server would execute (shell.php, a.jspx,
// x.php5..., photo.php.), or a server configuration file. Trailing dots and spaces are
// dropped, as Windows does.
func isScriptUpload(name []byte) bool {
	n := bytes.TrimRight(name, ". \t\x00")
	if i := bytes.LastIndexAny(n, "/\\"); i >= 0 {
		n = n[i+1:]
	}
	if equalFoldAny(n, serverConfigFiles[:]) {
		return true
	}
	// A PHP session file (sess_<id>): uploading one forges a session.
	if hasPrefixFold(n, "sess_") && len(n) >= 20 {
		return true
	}
	dot := bytes.LastIndexByte(n, '.')
	if dot <= 0 {
		return false
	}
	ext := bytes.TrimLeft(n[dot+1:], " ") // "photo. php"
	for _, e := range scriptExtensions {
		if len(ext) == len(e)-1 && bytes.EqualFold(ext, []byte(e[1:])) {
			return true
		}
	}
	// php907, phpt: any extension that starts with php and a digit or t
	return hasPrefixFold(ext, "php") && len(ext) > 3 && (('0' <= ext[3] && ext[3] <= '9') || ext[3]|0x20 == 't')
}

// isUploadNameHeader: headers upload endpoints (XHR uploaders) carry the file name in.
func isUploadNameHeader(name []byte) bool {
	return equalFoldAny(name, uploadNameHeaders[:])
}

var uploadNameHeaders = [...]string{"x-filename", "x_filename", "x.filename", "x-file-name"}

// equalFoldAny says whether b is one of names, ignoring case.
func equalFoldAny(b []byte, names []string) bool {
	for _, n := range names {
		if len(b) == len(n) && bytes.EqualFold(b, []byte(n)) {
			return true
		}
	}
	return false
}

// PHP-only function names (underscored or unmistakable), matched as a call: name, optional
// blanks or comments, "(".
var phpOnlyFunctions = [...]string{"base64_decode", "gzinflate", "gzuncompress", "gzdecode", "str_rot13", "zlib_decode",
	"call_user_func", "call_user_func_array", "create_function", "shell_exec", "proc_open", "pcntl_exec", "passthru",
	"phpinfo", "php_uname", "posix_getpwuid", "posix_getuid", "posix_geteuid", "posix_getegid", "posix_kill", "posix_setuid",
	"file_get_contents", "file_put_contents", "fsockopen", "pfsockopen", "move_uploaded_file", "highlight_file", "show_source",
	"assert_options", "ini_set", "ini_get_all", "preg_replace", "mb_ereg_replace", "escapeshellcmd", "escapeshellarg",
	"array_map", "array_filter", "usort", "register_shutdown_function", "register_tick_function", "get_defined_vars",
	"getenv", "putenv", "set_include_path", "readfile", "fpassthru", "popen", "unserialize", "var_dump", "print_r",
	"str_replace", "chr", "ord", "gzcompress", "hex2bin", "bin2hex", "convert_uudecode", "extract", "parse_str", "unpack",
	"intval", "strrev", "base64_encode", "serialize", "symlink", "chmod", "chown", "fwrite", "fputs", "curl_exec", "dl"}

// Names from phpOnlyFunctions that are ordinary words or short tokens too: they need a
// literal, variable or call argument, not "()" or a word.
func phpWordy(f string) bool {
	switch f {
	case "chr", "ord", "extract", "unpack", "popen", "readfile", "symlink", "chmod", "chown", "fwrite", "fputs", "dl", "usort", "getenv", "putenv", "intval", "strrev", "serialize":
		return true
	}
	return false
}

// findPHPMore: PHP short tags and BBCode/Smarty PHP blocks, superglobals, serialized objects,
// variable-function calls ($a(1), $_['x'](5)), calls of PHP-only functions, dangerous
// ini settings and the ssh2/glob stream wrappers, in single-line values.
func findPHPMore(v []byte) ([]byte, bool) {
	v = bytes.TrimSpace(v)
	if len(v) > 512 {
		return nil, false
	}
	// <? followed by code: "<? exec(", "<?\nphp echo", "<? echo 'x'; ?>", "<?xml :echo" (a fake
	// XML declaration); "<?=" and "<?php" are in findPHP. Short values only, line breaks allowed.
	if i := bytes.Index(v, []byte("<?")); i >= 0 {
		r := v[i+2:]
		if len(r) == 0 {
			return v[i:], true // "test<?": an opening tag at the end
		}
		if hasPrefixFold(r, "xml") {
			r = bytes.TrimLeft(r[3:], " \t\r\n")
			if len(r) > 0 && r[0] == ':' {
				return v[i:], true
			}
		} else if r[0] == ' ' || r[0] == '\t' || r[0] == '\n' || r[0] == '\r' {
			t := bytes.TrimLeft(r, " \t\r\n")
			if hasPrefixFold(t, "php") || bytes.IndexByte(t, '(') > 0 || bytes.IndexByte(t, ';') > 0 || bytes.Contains(t, []byte("?>")) {
				return v[i:], true
			}
		}
	}
	if i := phpCallable(v); i >= 0 {
		return v[i:], true
	}
	if !shortLine(v) {
		return nil, false
	}
	if i := phpMarkerSet.scan(v, func(int, string) bool { return true }); i >= 0 {
		return v[i:], true
	}
	if bytes.IndexByte(v, '$') >= 0 {
		for _, g := range [...]string{"$_get", "$_post", "$_server", "$_cookie", "$_request", "$_files", "$_env", "$_session", "$globals", "$http_raw_post_data", "$http_get_vars"} {
			// Used as code: $_GET['c'], system($_POST), $_SERVER; not "$_GET and $_POST in php".
			if i := indexFold(v, g); i >= 0 && (i+len(g) == len(v) || bytes.IndexByte([]byte("[);}.,"), v[i+len(g)]) >= 0) {
				return v[i:], true
			}
		}
		if i := variableCall(v); i >= 0 {
			return v[i:], true
		}
	}
	if i := phpSerializedObject(v); i >= 0 {
		return v[i:], true
	}
	if bytes.IndexByte(v, '(') < 0 || isProse(v) {
		return nil, false
	}
	words := wordy(v)
	if i := phpOnlySet.scan(v, func(i int, f string) bool {
		if words && strings.IndexByte(f, '_') < 0 {
			return false // "ord('a') in python": a question about a function
		}
		if i > 0 && isIdentByte(v[i-1]) && (len(f) < 8 || strings.IndexByte(f, '_') < 0) {
			return false // "ord" in "words(", but FOOcall_user_func( still counts
		}
		if i+len(f) < len(v) && isIdentByte(v[i+len(f)]) {
			return false
		}
		j := skipPHPBlanks(v[i+len(f):])
		if len(j) == 0 || j[0] != '(' {
			return false
		}
		if phpWordy(f) || strings.IndexByte(f, '_') < 0 && len(f) < 8 {
			a := bytes.TrimLeft(j[1:], " ")
			if len(a) == 0 || !(a[0] == '\'' || a[0] == '"' || a[0] == '$' || isIdentByte(a[0]) && bytes.IndexByte(a, '(') > 0) {
				return false
			}
		}
		return true
	}); i >= 0 {
		return v[i:], true
	}
	return nil, false
}

// Functions that run commands or code, for the call-obfuscation checks of phpCallable.
var phpExecFunctions = [...]string{"system", "exec", "shell_exec", "passthru", "eval", "assert", "popen", "proc_open", "pcntl_exec", "phpinfo"}

// phpCallable is the index of a command/code function called in a way only PHP code does, or
// -1: with a comment or line break before "(" (exec/*x*/(, eval\r($x)), with "@" error
// suppression (@exec('x')), as a quoted, parenthesized or bracketed callable ("system"(ls),
// (system)('id'), [system][0](ls)), or as the whole value (system(whoami)).
func phpCallable(v []byte) int {
	if bytes.IndexByte(v, '(') < 0 {
		return -1
	}
	return phpExecSet.scan(v, func(i int, f string) bool {
		from := i + len(f)
		if i > 0 && isIdentByte(v[i-1]) || from < len(v) && isIdentByte(v[from]) {
			return false
		}
		r := v[from:]
		b := skipPHPBlanks(r)
		if len(b) > 0 && b[0] == '(' {
			between := r[:len(r)-len(b)]
			if bytes.Contains(between, []byte("/*")) || bytes.Contains(between, []byte("//")) || bytes.IndexByte(between, '#') >= 0 ||
				bytes.IndexAny(between, "\r\n") >= 0 || i > 0 && v[i-1] == '@' {
				return true
			}
			// The whole value is one call: system(whoami), eval($x);
			if i == 0 || i == 1 && v[0] == '@' {
				e := bytes.LastIndexByte(b, ')')
				return e > 0 && len(bytes.TrimRight(b[e+1:], " ;")) == 0 && bytes.IndexByte(b[1:e], ' ') < 0
			}
			return false
		}
		// (system)(...), ("system")(...), [system][0](...), "system"(...)
		k := 0
		closed := false
		for k < len(r) && k < 24 {
			c := r[k]
			if c == ')' || c == ']' || c == '"' || c == '\'' {
				closed = true
			} else if !(c == ' ' || c == '[' || ('0' <= c && c <= '9') || c == '{' || c == '}') {
				break
			}
			k++
		}
		return closed && k < len(r) && r[k] == '(' && i > 0 && bytes.IndexAny(v[max(0, i-4):i], "(['\"") >= 0
	})
}

// skipPHPBlanks skips whitespace and /* */, //, # comments the way PHP's lexer does before "(".
func skipPHPBlanks(b []byte) []byte {
	for n := 0; n < 16 && len(b) > 0; n++ {
		switch {
		case b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n':
			b = b[1:]
		case bytes.HasPrefix(b, []byte("/*")):
			e := bytes.Index(b[2:], []byte("*/"))
			if e < 0 {
				return nil
			}
			b = b[e+4:]
		case bytes.HasPrefix(b, []byte("//")) || b[0] == '#':
			e := bytes.IndexByte(b, '\n')
			if e < 0 {
				return nil
			}
			b = b[e+1:]
		default:
			return b
		}
	}
	return b
}

// variableCall is the index of a PHP variable-function call ($f(1), $_['o'](5), ${$x}['y'](1),
// $obj->$name()), or -1.
func variableCall(v []byte) int {
	for i := 0; i < len(v); i++ {
		if v[i] != '$' {
			continue
		}
		j := i + 1
		if j < len(v) && v[j] == '{' { // ${$s20}
			e := bytes.IndexByte(v[j:], '}')
			if e < 0 {
				continue
			}
			j += e + 1
		} else {
			k := j
			for k < len(v) && (isIdentByte(v[k]) || v[k] >= 0x80) {
				k++
			}
			if k == j || '0' <= v[j] && v[j] <= '9' {
				continue
			}
			j = k
		}
		// Array subscripts: ['o'], [5], [@!+_].
		for n := 0; n < 4; n++ {
			r := skipPHPBlanks(v[j:])
			if len(r) == 0 || r[0] != '[' {
				break
			}
			e := bytes.IndexByte(r, ']')
			if e < 0 || e > 32 {
				break
			}
			j = len(v) - len(r) + e + 1
		}
		r := skipPHPBlanks(v[j:])
		if len(r) > 0 && r[0] == '(' && (len(v)-len(r) == j || v[j] != ' ' || bytes.ContainsAny(v[:i], "@;")) {
			return i
		}
	}
	return -1
}

// phpSerializedObject is the index of a serialized PHP object (O:8:"stdClass":1:{), or -1.
func phpSerializedObject(v []byte) int {
	for i := 0; i+5 < len(v); i++ {
		if c := v[i] | 0x20; (c != 'o' && c != 'c') || v[i+1] != ':' || (i > 0 && isIdentByte(v[i-1])) {
			continue
		}
		j := i + 2
		for j < len(v) && '0' <= v[j] && v[j] <= '9' {
			j++
		}
		if j == i+2 || j+1 >= len(v) || v[j] != ':' || v[j+1] != '"' {
			continue
		}
		e := bytes.IndexByte(v[j+2:], '"')
		if e < 0 {
			continue
		}
		r := v[j+2+e+1:]
		if len(r) > 2 && r[0] == ':' && '0' <= r[1] && r[1] <= '9' {
			return i
		}
	}
	return -1
}

// SQL functions, catalogs and procedures that exist only in SQL dialects; a fragment naming one
// is an injection probe (benchmark(, information_schema, xp_cmdshell).
var sqlOnlyMarkers = [...]string{"benchmark(", "pg_sleep(", "waitfor delay", "extractvalue(", "updatexml(", "load_file(",
	"name_const(", "group_concat(", "concat_ws(", "information_schema", "pg_catalog", "pg_shadow", "sqlite_master",
	"sqlite_compileoption", "sysobjects", "syscolumns", "xp_cmdshell", "sp_executesql", "sp_oacreate", "mysql.user", "mysql.db",
	"db_name(", "schema_name(", "utl_http", "utl_inaddr", "dbms_pipe", "dbms_xmlgen", "dbms_lock", "lo_import(", "lo_export(",
	"@@version", "@@datadir", "@@hostname", "into outfile", "into dumpfile", "sleep(", "is_srvrolemember", "msysobjects", "pg_read_file", "current_user()", "session_user()", "system_user()",
	"unhex(", "make_set(", "elt(", "ascii(substr", "/*!", "jsonb_", "::jsonb", "::json", "::bool", "::int",
	"::text", "pg_user", "current_setting(", "exp(~"}

// findSQLFragmentAny is findSQLFragment for parameters (all markers).
func findSQLFragmentAny(v []byte) ([]byte, bool) { return findSQLFragment(v, false) }

// findSQLFragment (callsOnly: the function-call markers only, for paths) reports SQL-only markers, and UNION SELECT with comments or junk between the
// keywords (union/**/select, union all select, /*!50000union*/), in short single-line values.
func findSQLFragment(v []byte, callsOnly bool) ([]byte, bool) {
	v = bytes.TrimSpace(v) // fragments often end in a line break
	if !shortLine(v) || len(v) < 4 {
		return nil, false
	}
	words := wordy(v)
	if i := sqlOnlySet.scan(v, func(i int, m string) bool {
		switch {
		case callsOnly && m[len(m)-1] != '(' && m != "::json" && m != "::jsonb":
			return false // in a path only function calls and JSON casts: /docs/information_schema is a page
		case i > 0 && isIdentByte(v[i-1]) && m[0] != '@' && m[0] != ':' && m[0] != '/':
			return false
		case m == "sleep(" && !sleepCall(v[i+6:]):
			return false // "sleep(8) hours": a number then words
		case m[len(m)-1] == '(' && i+len(m) < len(v) && v[i+len(m)] == ')':
			return false // concat_ws(): a name in a sentence, no arguments to inject
		case words && !sqlStrongInPhrase(m):
			return false // "database() call failed", "pg_catalog docs": a phrase naming it
		case m[0] == ':' && i+len(m) < len(v) && isIdentByte(v[i+len(m)]):
			return false // ::integer, ::textarea
		}
		return true
	}); i >= 0 {
		return v[i:], true
	}
	if callsOnly {
		return nil, false
	}
	// ORDER BY <n> then a comment: the column-count probe (ORDER BY 1--, order by 3#).
	if i := indexFold(v, "order by"); i >= 0 {
		r := bytes.TrimLeft(v[i+8:], " \t+")
		k := 0
		for k < len(r) && '0' <= r[k] && r[k] <= '9' {
			k++
		}
		if t := bytes.TrimLeft(r[k:], " \t+"); k > 0 && (bytes.HasPrefix(t, []byte("--")) || bytes.HasPrefix(t, []byte("#")) || bytes.HasPrefix(t, []byte("/*"))) {
			return v[i:], true
		}
	}

	if i := indexFold(v, "union"); i >= 0 && unionSelect(v[i+5:]) && !isProse(v) &&
		!(words && v[i+5] == ' ' && hasPrefixFold(bytes.TrimLeft(v[i+5:], " "), "select") && !containsFold(v[i:], " from")) {
		return v[i:], true
	}
	if words {
		return nil, false
	}
	if i := sqlMiscSet.scan(v, func(i int, m string) bool {
		if i > 0 && isIdentByte(v[i-1]) {
			return false
		}
		return m[len(m)-1] != '@' || declareVar(v[i+len(m):]) // not "declare @var in t-sql"
	}); i >= 0 {
		return v[i:], true
	}
	if i := danglingSQLCall(v); i >= 0 {
		return v[i:], true
	}
	if i := selectCall(v); i >= 0 {
		return v[i:], true
	}
	// A lone quote closed by ';' at the end: admin@example.com'; (statement terminated).
	if t := bytes.TrimRight(v, " ;"); len(t) < len(v) && len(t) > 0 && (t[len(t)-1] == '\'' || t[len(t)-1] == '"' || t[len(t)-1] == '`') &&
		bytes.Count(v, t[len(t)-1:]) == 1 {
		return v, true
	}
	return nil, false
}

// declareVar: after "DECLARE @", a variable then the end, a type, '=' or ';'.
func declareVar(r []byte) bool {
	k := 0
	for k < len(r) && isIdentByte(r[k]) {
		k++
	}
	t := bytes.TrimLeft(r[k:], " \t")
	if len(t) == 0 || t[0] == '=' || t[0] == ';' || t[0] == ',' {
		return true
	}
	for _, ty := range [...]string{"int", "bigint", "varchar", "nvarchar", "char", "nchar", "table", "sysname", "cursor", "as ", "datetime", "bit", "varbinary"} {
		if hasPrefixFold(t, ty) {
			return true
		}
	}
	return false
}

// sqlStrongInPhrase: markers that are SQL even inside a phrase.
func sqlStrongInPhrase(m string) bool {
	switch m {
	case "waitfor delay", "into outfile", "into dumpfile", "benchmark(", "pg_sleep(", "xp_cmdshell", "extractvalue(", "updatexml(", "@@version":
		return true
	}
	return false
}

// SQL functions that injection probes open and leave dangling ("hex(", "SUBSTRING (").
var sqlFunctions = [...]string{"ascii", "benchmark", "char", "coalesce", "compress", "concat", "concat_ws", "cos", "current_user",
	"database", "db_name", "decode", "encode", "extractvalue", "hex", "ifnull", "insert", "instr", "length", "load_file", "lower",
	"ltrim", "md5", "mid", "name_const", "ord", "pow", "rand", "rtrim", "schema_name", "sha1", "sin", "sleep", "strcmp",
	"substr", "substring", "sysdate", "trim", "uncompress", "unhex", "updatexml", "upper", "user", "version", "xmltype", "elt",
	"make_set", "group_concat", "now", "count", "if", "iif", "cast", "convert", "floor", "exp", "polygon", "geometrycollection"}

// danglingSQLCall: the value ends with a SQL function name and an open parenthesis (a probe
// cut right after the call opens: "pay=hex(", "SUBSTRING (").
func danglingSQLCall(v []byte) int {
	t := bytes.TrimRight(v, " \t\\")
	if len(t) < 3 || t[len(t)-1] != '(' {
		return -1
	}
	t = bytes.TrimRight(t[:len(t)-1], " \t\\")
	k := len(t)
	for k > 0 && (isIdentByte(t[k-1])) {
		k--
	}
	if equalFoldAny(t[k:], sqlFunctions[:]) {
		return k
	}
	return -1
}

// selectCall: SELECT followed (after blanks or comments) by a function call, *, @@ or NULL
// ("select if(x", "SELECT CHAR(", "select(user(", "select pg_sleep").
func selectCall(v []byte) int {
	for from := 0; from < len(v); {
		i := indexFold(v[from:], "select")
		if i < 0 {
			return -1
		}
		i += from
		from = i + 6
		if i > 0 && isIdentByte(v[i-1]) {
			continue
		}
		r := v[i+6:]
		if len(r) > 0 && isIdentByte(r[0]) {
			continue
		}
		r = skipPHPBlanks(bytes.TrimLeft(r, "+"))
		if len(r) > 0 && (r[0] == '(' || r[0] == '*' || r[0] == '@') {
			return i
		}
		k := 0
		for k < len(r) && isIdentByte(r[k]) {
			k++
		}
		w := r[:k]
		if bytes.EqualFold(w, []byte("null")) || bytes.EqualFold(w, []byte("pg_sleep")) || bytes.EqualFold(w, []byte("sleep")) {
			return i
		}
		if k > 0 && k < len(r) && bytes.TrimLeft(r[k:], " ")[0] == '(' && equalFoldAny(w, sqlFunctions[:]) {
			return i
		}
	}
	return -1
}

// unionSelect: after "union", blanks, '+', '(', comments and ALL/DISTINCT, then SELECT as a
// word. A versioned comment (/*!50000select*/) counts as its content.
func unionSelect(r []byte) bool {
	if len(r) == 0 || 'a' <= r[0]|0x20 && r[0]|0x20 <= 'z' {
		return false // "unions", "unionselect"
	}
	for n := 0; n < 12 && len(r) > 0; n++ {
		switch {
		case r[0] == ' ' || r[0] == '\t' || r[0] == '\r' || r[0] == '\n' || r[0] == '+' || r[0] == '(':
			r = r[1:]
		case bytes.HasPrefix(r, []byte("/*!")):
			r = bytes.TrimLeft(r[3:], "0123456789")
		case bytes.HasPrefix(r, []byte("/*")):
			e := bytes.Index(r[2:], []byte("*/"))
			if e < 0 {
				return false
			}
			r = r[e+4:]
		case hasPrefixFold(r, "all") && len(r) > 3 && !isIdentByte(r[3]):
			r = r[3:]
		case hasPrefixFold(r, "distinct") && len(r) > 8 && !isIdentByte(r[8]):
			r = r[8:]
		case hasPrefixFold(r, "select"):
			return len(r) == 6 || !('a' <= r[6]|0x20 && r[6]|0x20 <= 'z')
		default:
			return false
		}
	}
	return false
}

// sleepCall: after "sleep(", a number then ")" and no more words (a query, not a sentence).
func sleepCall(r []byte) bool {
	k := 0
	for k < len(r) && ('0' <= r[k] && r[k] <= '9' || r[k] == ' ') {
		k++
	}
	if k == 0 || k >= len(r) || r[k] != ')' {
		return bytes.IndexByte(r, '(') >= 0 || bytes.IndexByte(r, '\'') >= 0 // sleep((select...)), sleep('5')
	}
	rest := bytes.TrimSpace(r[k+1:])
	return len(rest) == 0 || !('a' <= rest[0]|0x20 && rest[0]|0x20 <= 'z') || hasPrefixFold(rest, "and") || hasPrefixFold(rest, "or ") || hasPrefixFold(rest, "from")
}

// PowerShell cmdlets and idioms used to download and run code.
var powershellMarkers = [...]string{"powershell -e", "powershell -nop", "powershell -w", "powershell -c", "powershell -ep", "powershell.exe -",
	"pwsh -e", "pwsh -c", "pwsh -nop", "invoke-webrequest", "invoke-expression", "invoke-restmethod", "invoke-command", "start-process",
	"new-object net.webclient", "new-object system.net.webclient", "net.webclient", ".downloadstring(", ".downloadfile(",
	"[system.convert]::frombase64string", "frombase64string(", "-encodedcommand", "-executionpolicy bypass", "-exec bypass",
	"set-executionpolicy", "invoke-mimikatz", "iex(", "iex (", "[scriptblock]::create", "start-bitstransfer", "get-wmiobject"}

// findWindowsCmd reports PowerShell download-and-run idioms, iwr/iex/irm after a separator,
// and cmd.exe control flow (for /f ... %i in (...) do, if exist/errorlevel/not exist).
func findWindowsCmd(v []byte) ([]byte, bool) {
	if !shortLine(v) && len(v) > 4096 {
		return nil, false
	}
	if i := powershellSet.scan(v, func(i int, m string) bool {
		if i > 0 && isIdentByte(v[i-1]) {
			return false
		}
		if strings.IndexByte(m, '-') >= 0 && strings.IndexByte(m, ' ') < 0 && m[0] != '-' {
			// A cmdlet needs PowerShell arguments: Invoke-WebRequest -Uri, iex $x, ("..."), a URL;
			// "Invoke-WebRequest returns 403" is a question about it.
			a := bytes.TrimLeft(v[i+len(m):], " \t")
			return len(a) > 0 && (a[0] == '-' || a[0] == '$' || a[0] == '(' || a[0] == '"' || a[0] == '\'' || a[0] == '{' || a[0] == '|' || hasPrefixFold(a, "http"))
		}
		return true
	}); i >= 0 {
		return v[i:], true
	}
	if !shortLine(v) {
		return nil, false
	}
	if i := winCmdSet.scan(v, func(i int, c string) bool {
		if i > 0 && v[i-1] != ';' && v[i-1] != '|' && v[i-1] != '&' && v[i-1] != ' ' && v[i-1] != '(' && v[i-1] != '`' && v[i-1] != '\'' && v[i-1] != '"' {
			return false
		}
		if i > 0 && v[i-1] == ' ' && !sepBefore(v[:i]) {
			return false
		}
		a := skipBlanks(v[i+len(c):])
		return len(a) > 0 && (a[0] == '-' || a[0] == '/' || a[0] == '(' || a[0] == '$' || hasPrefixFold(a, "http"))
	}); i >= 0 {
		return v[i:], true
	}
	t := bytes.TrimLeft(v, " \t;|&")
	if hasPrefixFold(t, "for ") || hasPrefixFold(t, "for/") {
		if k := bytes.IndexByte(t, '%'); k > 0 {
			r := t[k:]
			if j := indexFold(r, " in "); j > 0 && j < 32 {
				if rr := bytes.TrimLeft(r[j+4:], " "); len(rr) > 0 && rr[0] == '(' && containsFold(rr, ") do") || containsFold(rr, ")do") {
					return t, true
				}
			}
			if j := indexFold(r, " in("); j > 0 && j < 32 && containsFold(r, ")do") {
				return t, true
			}
		}
	}
	if hasPrefixFold(t, "if ") || hasPrefixFold(t, "if/") {
		r := bytes.TrimLeft(t[2:], " ")
		for _, k := range [...]string{"exist ", "not exist ", "errorlevel ", "/i ", "defined ", "not defined ", "%errorlevel%"} {
			// With batch syntax after it: a block, a variable, a quoted name, a path, a comparison.
			if hasPrefixFold(r, k) && (bytes.ContainsAny(r[len(k):], "(%\"\\") || bytes.Contains(r, []byte("==")) || !wordy(t)) {
				return t, true
			}
		}
		// if %a% equ %b% / if "%x%"=="y"
		if len(r) > 0 && (r[0] == '%' || r[0] == '"' && len(r) > 1 && r[1] == '%') && (containsFold(r, " equ ") || containsFold(r, " neq ") ||
			containsFold(r, " gtr ") || containsFold(r, " lss ") || containsFold(r, " geq ") || bytes.Contains(r, []byte("=="))) {
			return t, true
		}
	}
	return nil, false
}

// sepBefore: the last non-blank byte before the end of b is a shell separator.
func sepBefore(b []byte) bool {
	b = bytes.TrimRight(b, " \t")
	return len(b) > 0 && (b[len(b)-1] == ';' || b[len(b)-1] == '|' || b[len(b)-1] == '&')
}

// findXSSMore reports script payloads libinjection's HTML tokenizer does not see: a value that
// is one call of a dialog or eval-like function (alert(1), prompt`1`), tagged-template calls
// ([].sort.call`${alert}1`), JSFuck ((![]+[])[+!+[]]), DOM sinks reached through comments or
// bracket notation (document/**/.cookie, window["alert"](...), self["$"]), attribute
// break-outs (`"onzoom=`, `'formaction=`, `<x onend=`) and VML frames (<v:vmlframe).
func (s *scratch) findXSSMore(v []byte) ([]byte, bool) {
	v = bytes.TrimSpace(v)
	if len(v) < 4 || !shortLine(v) {
		return nil, false
	}
	if t := bytes.TrimRight(v, " ;/"); len(t) > 0 && t[len(t)-1] == ')' && !wordy(v) {
		for _, f := range [...]string{"alert(", "prompt(", "confirm(", "eval(", "settimeout(", "setinterval(", "atob(", "btoa(", "function(", "import("} {
			if hasPrefixFold(t, f) && bytes.Count(t, []byte("(")) <= 3 && len(t) <= 64 {
				return v, true
			}
		}
	}
	// Not inline code in Markdown: "`alert` | `block`" names a word between backticks.
	if i := xssMarkerSet.scan(v, func(i int, m string) bool {
		return m[len(m)-1] != '`' || i == 0 || v[i-1] != '`' && v[i-1] != '$' && (m[0] == '.' || !isIdentByte(v[i-1]))
	}); i >= 0 {
		return v[i:], true
	}
	// Attribute break-out: a quote (or "<tag ") then an event handler or formaction.
	for i := 0; i+4 < len(v); i++ {
		c := v[i]
		// Not '/': base64 signatures and tokens end in ".../onXyz=".
		if c != '"' && c != '\'' && c != '<' {
			continue
		}
		j := i + 1
		if c == '<' { // <x onend=
			for j < len(v) && isIdentByte(v[j]) {
				j++
			}
			if j == i+1 || j >= len(v) || v[j] != ' ' && v[j] != '\t' && v[j] != '/' {
				continue
			}
		}
		for j < len(v) && (v[j] == ' ' || v[j] == '\t' || v[j] == '/') {
			j++
		}
		r := v[j:]
		k := 0
		if hasPrefixFold(r, "on") {
			k = 2
			for k < len(r) && 'a' <= r[k]|0x20 && r[k]|0x20 <= 'z' {
				k++
			}
			if k < 5 {
				continue
			}
		} else if hasPrefixFold(r, "formaction") {
			k = 10
		} else {
			continue
		}
		r = bytes.TrimLeft(r[k:], " \t")
		if len(r) > 0 && r[0] == '=' {
			return v[i:], true
		}
	}
	// DOM sinks behind comments, spaces and bracket notation: normalise and look again.
	if bytes.IndexByte(v, '.') < 0 && bytes.IndexByte(v, '[') < 0 {
		return nil, false
	}
	if !containsFold(v, "document") && !containsFold(v, "window") && !containsFold(v, "self") && !containsFold(v, "top") && !containsFold(v, "parent") {
		return nil, false
	}
	s.t = s.t[:0]
	for i := 0; i < len(v) && len(s.t) < 512; i++ {
		c := v[i]
		switch {
		case c == ' ' || c == '\t' || c == '(' || c == ')':
			continue
		case c == '/' && i+1 < len(v) && v[i+1] == '*':
			e := bytes.Index(v[i+2:], []byte("*/"))
			if e < 0 {
				i = len(v)
				continue
			}
			i += e + 3
			continue
		case c == '[' && i+1 < len(v) && (v[i+1] == '"' || v[i+1] == '\''):
			s.t = append(s.t, '.')
			i++
			continue
		case (c == '"' || c == '\'') && i+1 < len(v) && v[i+1] == ']':
			i++
			continue
		}
		s.t = append(s.t, lower(c))
	}
	for _, m := range [...]string{"document.cookie", "document.domain", "window.alert", "self.alert", "top.alert", "parent.alert",
		"window.eval", "self.eval", "top.eval", "self.$", "self.\\x24", "globaleval", "window.location=", "document.location=",
		"document.write", "document.queryselector", ".innerhtml=", ".textcontent=", "window.document"} {
		if bytes.Contains(s.t, []byte(m)) {
			return v, true
		}
	}
	return nil, false
}

// whereJSInjection: breaking out of a string inside a MongoDB $where JavaScript expression
// ('; return true; var x=', "|| this.password.match(/.*/)//).
func whereJSInjection(v []byte) bool {
	for i := 0; i+8 < len(v); i++ {
		if v[i] != '\'' && v[i] != '"' {
			continue
		}
		r := bytes.TrimLeft(v[i+1:], " ")
		if len(r) > 0 && r[0] == ';' {
			r = bytes.TrimLeft(r[1:], " ")
			if hasPrefixFold(r, "return ") || hasPrefixFold(r, "while(") || hasPrefixFold(r, "sleep(") {
				return true
			}
		}
		if bytes.HasPrefix(r, []byte("||")) && containsFold(r, "this.") {
			return true
		}
	}
	return false
}

// mongoOperatorJSON: a parameter holding a JSON object with a MongoDB query operator
// ({"$ne": null}, {"$gt":""}), for applications that JSON.parse a parameter into a filter.
func mongoOperatorJSON(v []byte) bool {
	for from := 0; from < len(v); {
		i := bytes.IndexByte(v[from:], '{')
		if i < 0 {
			return false
		}
		i += from
		from = i + 1
		r := bytes.TrimLeft(v[i+1:], " \t\r\n")
		if len(r) < 3 || (r[0] != '"' && r[0] != '\'') || r[1] != '$' {
			continue
		}
		e := bytes.IndexByte(r[2:], r[0])
		if e < 0 || e > 12 {
			continue
		}
		if op := r[2 : 2+e]; mongoOperator(op) || string(op) == "text" {
			return true
		}
	}
	return false
}

// markerSet finds many case-insensitive markers in one pass over a value: a table from a
// value byte to the markers that start with it (lists of up to 128), built once from the
// marker lists above and read-only afterwards.
type markerSet struct {
	list   []string
	first  [256][2]uint64 // markers by first byte (both cases)
	second [256][2]uint64 // markers by second byte (both cases; markers of one byte: all)
	any    [256]bool      // some marker starts with this byte
}

func newMarkerSet(list []string) *markerSet {
	if len(list) > 128 {
		panic("threat: marker list longer than 128") // a programming error caught by the tests
	}
	ms := &markerSet{list: list}
	set := func(t *[256][2]uint64, c byte, k int) {
		t[c][k/64] |= 1 << (k % 64)
		if 'a' <= c && c <= 'z' {
			t[c-'a'+'A'][k/64] |= 1 << (k % 64)
		}
	}
	for k, m := range list {
		set(&ms.first, m[0], k)
		ms.any[m[0]] = true
		if 'a' <= m[0] && m[0] <= 'z' {
			ms.any[m[0]-'a'+'A'] = true
		}
		if len(m) > 1 {
			set(&ms.second, m[1], k)
		} else {
			for c := 0; c < 256; c++ {
				ms.second[c][k/64] |= 1 << (k % 64)
			}
		}
	}
	return ms
}

// scanK calls ok for each marker occurrence in v (by position, then list order) with the
// marker's index until ok accepts one, and returns its position, or -1.
func (ms *markerSet) scanK(v []byte, ok func(i, k int) bool) int {
	for i := 0; i < len(v); i++ {
		if !ms.any[v[i]] {
			continue
		}
		var nx byte
		if i+1 < len(v) {
			nx = v[i+1]
		}
		f, sc := ms.first[v[i]], ms.second[nx]
		for w := 0; w < 2; w++ {
			for bits := f[w] & sc[w]; bits != 0; bits &= bits - 1 {
				k := w*64 + bits64TrailingZeros(bits)
				m := ms.list[k]
				if len(v)-i >= len(m) && hasPrefixFold(v[i:], m) && ok(i, k) {
					return i
				}
			}
		}
	}
	return -1
}

// scan is scanK with the marker itself.
func (ms *markerSet) scan(v []byte, ok func(i int, m string) bool) int {
	return ms.scanK(v, func(i, k int) bool { return ok(i, ms.list[k]) })
}

// bits64TrailingZeros is bits.TrailingZeros64, callable where a local named bits shadows the package.
func bits64TrailingZeros(x uint64) int { return bits.TrailingZeros64(x) }

var (
	javaSet       = newMarkerSet(append(append(javaGadgets[:len(javaGadgets):len(javaGadgets)], javaStrong[:]...), javaWeak[:]...))
	sqlOnlySet    = newMarkerSet(sqlOnlyMarkers[:])
	phpOnlySet    = newMarkerSet(phpOnlyFunctions[:])
	powershellSet = newMarkerSet(powershellMarkers[:])
	nodeAlwaysSet = newMarkerSet(nodeAlways[:])
	nodeShortSet  = newMarkerSet(nodeShort[:])
	phpMarkerSet  = newMarkerSet(phpMarkers[:])
	sqlMiscSet    = newMarkerSet(sqlMisc[:])
	xssMarkerSet  = newMarkerSet(xssMarkers[:])
	winCmdSet     = newMarkerSet(winCmds[:])
	phpExecSet    = newMarkerSet(phpExecFunctions[:])
	phpFuncSet    = newMarkerSet(phpFunctions[:])
	ssrfSet       = newMarkerSet(ssrfMarkers[:])
	ssrfHostSet   = newMarkerSet(ssrfHosts[:])
)

var nodeAlways = [...]string{"_$$nd_func$$_", "process.mainmodule", "process.binding(", "global.process.", "this.constructor.constructor",
	"constructor.constructor(", "process.dlopen", "__js_function", "require.main.", "constructor._load(", ":constructor:constructor",
	":module:prototype", ":__proto__:"}

var nodeShort = [...]string{"constructor\":{\"prototype", "constructor\": {\"prototype", "child_process", "process[", "require[", "process.spawn(", ".execsync(", ".spawnsync(", "new function(",
	"new function (", "eval(string.fromcharcode", "[constructor][prototype]", "__proto__", "constructor.prototype", "constructor[prototype]", "constructor[\"prototype\"]",
	"constructor['prototype']", "require(", "module.exports=", "module.exports =", "process.env[", "process[\"env\"]", "process['env']"}

var phpMarkers = [...]string{"[php]", "{php}", "[/php]", "{/php}", "[\\php]", "ssh2.shell://", "ssh2.exec://", "ssh2.sftp://", "ssh2.scp://",
	"ssh2.tunnel://", "compress.zlib://", "compress.bzip2://", "glob://", "rar://", "ogg://", "allow_url_include", "auto_prepend_file",
	"auto_append_file", "disable_functions", "open_basedir"}

var sqlMisc = [...]string{"procedure analyse", "execute immediate", "exec master.", "exec(@", "exec (@", "declare @", "declare/**/@",
	"mysql.db", "msysaccessobjects", "northwind", "tempdb", "msdb.", "schema_name"}

var xssMarkers = [...]string{"alert`", "prompt`", "confirm`", "eval`", ".call`", ".apply`", "function`", "![]+", "+!![]", "!+[]", "[]+[]",
	"<v:vmlframe", ":vmlframe", "<x:script", "javascript&colon;"}

// Windows download/run commands after a separator (iwr/iex/irm are PowerShell aliases).
var winCmds = [...]string{"iwr ", "iex ", "irm ", "iwr(", "curl.exe ", "certutil ", "certutil.exe ", "bitsadmin ", "mshta ", "regsvr32 ", "rundll32 "}
