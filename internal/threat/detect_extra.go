package threat

import (
	"bytes"
)

// isXXE: a document type declaration that declares an external entity (or a parameter entity,
// the out-of-band variant). Ordinary XML carries no DOCTYPE entities.
func isXXE(v []byte) bool {
	if containsFold(v, "<xi:include") || containsFold(v, "xmlns:xi=") && containsFold(v, ":include") {
		return true // XInclude pulls an external document into an XML parameter or body
	}
	i := indexFold(v, "<!doctype")
	if i < 0 {
		i = indexFold(v, "<!entity")
		if i < 0 {
			return false
		}
	}
	rest := v[i:]
	e := indexFold(rest, "<!entity")
	if e < 0 {
		return false
	}
	decl := rest[e:]
	if end := bytes.IndexByte(decl, '>'); end > 0 {
		decl = decl[:end]
	}
	return containsFold(decl, "system") || containsFold(decl, "public") || bytes.Contains(decl, []byte("% "))
}

// findSSTI: a template expression ({{ }}, ${ }, #{ }, <%= %>, {% %}) whose body computes
// (digit operator digit), walks object internals (__class__, .getClass(), self., config.) or
// calls into the runtime. Placeholders like {{name}} or ${user.id} are left alone.
func findSSTI(v []byte) ([]byte, bool) {
	for _, d := range [...][2]string{{"{{", "}}"}, {"${", "}"}, {"#{", "}"}, {"<%=", "%>"}, {"{%", "%}"}, {"*{", "}"}, {"@(", ")"}, {"<#", ">"}} {
		from := 0
		for n := 0; n < 16; n++ {
			i := bytes.Index(v[from:], []byte(d[0]))
			if i < 0 {
				break
			}
			i += from
			body := v[i+len(d[0]):]
			j := bytes.Index(body, []byte(d[1]))
			if j < 0 {
				j = min(len(body), 256)
			}
			body = body[:j]
			if templateCode(body) {
				return v[i:min(len(v), i+len(d[0])+j+len(d[1]))], true
			}
			from = i + len(d[0])
		}
	}
	return nil, false
}

func templateCode(b []byte) bool {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || len(b) > 512 {
		return false
	}
	// Arithmetic between numbers: {{7*7}}, ${7*'7'}, #{3+3}.
	for i := 1; i+1 < len(b); i++ {
		if (b[i] == '*' || b[i] == '+' || b[i] == '/' || b[i] == '-') && isDigitish(b[:i], true) && isDigitish(b[i+1:], false) {
			return true
		}
	}
	for _, m := range [...]string{"__class__", "__globals__", "__builtins__", "__subclasses__", "__import__", "__init__", "__mro__",
		".getclass(", "getruntime", "processbuilder", "self.", "config.", "config}", "config|", "request.application", "lipsum", "cycler",
		"popen", "os.system", "exec(", "eval(", "t(java.lang", "new java.", "freemarker.template", "?new(", "import os", "range(", "constructor.constructor"} {
		if containsFold(b, m) {
			return true
		}
	}
	return false
}

// isDigitish: the end (left) or start (right) of b, past spaces and quotes, is a digit.
func isDigitish(b []byte, left bool) bool {
	b = bytes.Trim(b, " '\"")
	if len(b) == 0 {
		return false
	}
	c := b[0]
	if left {
		c = b[len(b)-1]
		// The left operand must be a whole number token ("7", not "v2" or "2024-06").
		for k := len(b) - 1; k >= 0 && b[k] >= '0' && b[k] <= '9'; k-- {
			if k == 0 || b[k-1] == ' ' || b[k-1] == '(' || b[k-1] == '\'' || b[k-1] == '"' {
				return c >= '0' && c <= '9'
			}
		}
		return false
	}
	return c >= '0' && c <= '9'
}

// findSSRF: URLs aimed at cloud metadata services or using schemes that turn an HTTP fetcher
// into a raw-socket client.
func findSSRF(v []byte) ([]byte, bool) {
	hasTemplate := bytes.Contains(v, []byte("${"))
	if i := ssrfSet.scan(v, func(i int, m string) bool {
		return m != "ldap://" || !hasTemplate // log4shell reports ${jndi:ldap://...}
	}); i >= 0 {
		return v[max(0, i-8):min(len(v), i+64)], true
	}
	// Host names that always mean this machine, its container host or the cluster API, sent
	// as a URL or host parameter (not named in a sentence).
	if !shortLine(v) || wordy(v) {
		return nil, false
	}
	if i := ssrfHostSet.scan(v, func(i int, _ string) bool { return i == 0 || !isIdentByte(v[i-1]) }); i >= 0 {
		return v[max(0, i-8):min(len(v), i+64)], true
	}
	return nil, false
}

// Cloud metadata endpoints, loopback in numeric forms, and URL schemes that turn an HTTP
// fetcher into a raw-socket client.
var ssrfMarkers = [...]string{"169.254.169.254", "metadata.google.internal", "metadata.azure.com", "100.100.100.200",
	"fd00:ec2::254", "169.254.170.2", "instance-data/latest", "gopher://", "dict://", "ldap://", "jar:http", "netdoc://", "0x7f000001", "2130706433",
	"metadata.packet.net", "192.0.0.192", "metadata.tencentyun.com"}

// Names that always mean this machine, its container host or the cluster API.
var ssrfHosts = [...]string{"host.docker.internal", "gateway.docker.internal", "kubernetes.docker.internal", "host.containers.internal",
	"kubernetes.default.svc", "localtest.me", "lvh.me", "ip6-loopback", "ipv6-localhost", "localhost4", "localhost.localdomain"}

// Dangerous PHP functions, matched as a call: name followed by "(".
var phpFunctions = [...]string{"system", "passthru", "shell_exec", "exec", "popen", "proc_open", "pcntl_exec", "eval",
	"assert", "base64_decode", "phpinfo", "file_get_contents", "file_put_contents", "fopen", "include", "require",
	"create_function", "call_user_func", "preg_replace", "unserialize", "highlight_file", "show_source"}

// findPHP: PHP opening tags, php:// and phar:// stream wrappers, and calls of the functions
// above with a literal or variable argument, in short single-line values (not code posts).
func findPHP(v []byte) ([]byte, bool) {
	for _, m := range [...]string{"<?php", "<?=", "php://", "phar://", "expect://", "zip://", "data://text/plain;base64"} {
		if i := indexFold(v, m); i >= 0 {
			if m[0] == '<' && wordy(v) && !bytes.ContainsAny(v, "();$`") {
				continue // "<?php tags in wordpress themes": a phrase about the tag
			}
			if m[0] == '<' && !shortLine(v) && !phpDangerousCall(v) {
				continue // a multi-line code snippet posted to a developer API
			}
			return v[i:], true
		}
	}
	if !shortLine(v) || bytes.IndexByte(v, '(') < 0 {
		return nil, false
	}
	if i := phpFuncSet.scan(v, func(i int, f string) bool {
		if i > 0 && isIdentByte(v[i-1]) {
			return false
		}
		j := i + len(f)
		for j < len(v) && v[j] == ' ' {
			j++
		}
		if f == "phpinfo" && bytes.HasPrefix(v[j:], []byte("()")) {
			return true
		}
		if j+1 < len(v) && v[j] == '(' {
			a := v[j+1]
			// A literal, variable or nested call argument: system('id'), eval($_POST[x]), assert(base64_decode(...)),
			// with some PHP-ish context around: a statement separator or a preceding quote/paren.
			if a == '\'' || a == '"' || a == '$' || a == '`' || (isIdentByte(a) && bytes.IndexByte(v[j+1:], '(') > 0) {
				return i == 0 || bytes.ContainsAny(v[:i], ";'\")|&")
			}
		}
		return false
	}); i >= 0 {
		return v[i:], true
	}
	return nil, false
}

// phpDangerousCall: a multi-line PHP text that runs commands or code.
func phpDangerousCall(v []byte) bool {
	for _, f := range [...]string{"system", "passthru", "shell_exec", "exec", "eval", "assert", "popen", "proc_open", "pcntl_exec", "create_function"} {
		for from := 0; from < len(v); {
			i := indexFold(v[from:], f)
			if i < 0 {
				break
			}
			i += from
			from = i + len(f)
			if (i == 0 || !isIdentByte(v[i-1])) && len(skipPHPBlanks(v[from:])) > 0 && skipPHPBlanks(v[from:])[0] == '(' {
				return true
			}
		}
	}
	return bytes.IndexByte(v, '`') >= 0
}

func isIdentByte(c byte) bool {
	return c == '_' || 'a' <= c|0x20 && c|0x20 <= 'z' || '0' <= c && c <= '9'
}

// mongoOperatorInName: a bracketed MongoDB operator in a query/form name (user[$ne]=x), which
// PHP/Express turn into an operator object.
func mongoOperatorInName(n []byte) bool {
	i := bytes.Index(n, []byte("[$"))
	// Only directly on a top-level field (password[$ne]); query-builder APIs nest operators
	// under a filter object (filters[price][$gt]) on purpose.
	if i <= 0 || bytes.IndexByte(n[:i], '[') >= 0 {
		return false
	}
	op := n[i+2:]
	if j := bytes.IndexByte(op, ']'); j >= 0 {
		op = op[:j]
	}
	return mongoOperator(op)
}

// mongoOperator says whether op (without its $) is a MongoDB query operator.
func mongoOperator(op []byte) bool {
	switch string(op) {
	case "ne", "eq", "gt", "gte", "lt", "lte", "in", "nin", "regex", "where", "exists", "or", "and", "not", "nor", "expr", "function", "elemMatch":
		return true
	}
	return false
}

// mongoCodeOperator: JSON keys that run server-side JavaScript.
func mongoCodeOperator(k []byte) bool {
	switch string(k) {
	case "$where", "$function", "$accumulator":
		return true
	}
	return false
}

// findCRLF: a line break followed by a header line ("\r\nSet-Cookie: x", "%0aLocation:"), the
// response-splitting payload.
func findCRLF(v []byte) ([]byte, bool) {
	for i := 0; i < len(v); i++ {
		if v[i] != '\n' && v[i] != '\r' {
			continue
		}
		j := i + 1
		for j < len(v) && (v[j] == '\r' || v[j] == '\n') {
			j++
		}
		k := j
		for k < len(v) && k-j < 40 && isTokenChar(v[k]) {
			k++
		}
		if k > j+1 && k < len(v) && v[k] == ':' {
			return v[i:min(len(v), k+64)], true
		}
		// An injected body after an empty line: "\r\n\r\n<html>".
		if j < len(v) && v[j] == '<' && (bytes.Contains(v[i:j], []byte("\n\r\n")) || bytes.Contains(v[i:j], []byte("\n\n"))) {
			return v[i:min(len(v), j+64)], true
		}
		i = j - 1
	}
	return nil, false
}

// isLDAPInjection: a value that closes an LDAP filter and opens another: ")(" followed by an
// attribute assertion or a wildcard (*)(uid=*))(|(uid=*, admin)(&)), or starts one (*)(.
func isLDAPInjection(v []byte) bool {
	i := bytes.Index(v, []byte(")("))
	if i < 0 {
		return false
	}
	rest := v[i+2:]
	// (|(  (&(  (!(  or attr=  or attr=*
	if len(rest) > 0 && (rest[0] == '|' || rest[0] == '&' || rest[0] == '!') {
		return true
	}
	k := 0
	for k < len(rest) && k < 64 && (isIdentByte(rest[k]) || rest[k] == '-' || rest[k] == '.') {
		k++
	}
	if k > 0 && k < len(rest) && (rest[k] == '=' || rest[k] == '~' || rest[k] == '>' || rest[k] == '<') {
		// Require LDAP syntax around it: a wildcard or more parentheses.
		return bytes.IndexByte(v, '*') >= 0 || bytes.Count(v, []byte("(")) >= 2 && bytes.Count(v, []byte(")")) >= 2
	}
	return false
}
