// Package threat detects attacks inside allowed traffic: injections and protocol abuse in HTTP
// requests, DNS tunnelling and zone transfers, dangerous Redis/SQL commands from unexpected
// sources, protocol/port mismatches and floods.
//
// Every detector is named, documented (docs/threats.md) and listed once in DefaultDetectors.
// Detectors are cheap and always on; the heavier opt-in sensors live in the waf and dlp
// subpackages. A detection is a Finding that carries the detector's name, severity and
// category, where in the message it matched and the offending bytes (capped at MaxEvidence).
package threat

import (
	"fmt"
	"strings"
)

// Severity of a finding, ordered: a response rule matching "high" also matches "critical".
type Severity uint8

const (
	Low Severity = iota + 1
	Medium
	High
	Critical
)

func (s Severity) String() string {
	switch s {
	case Low:
		return "low"
	case Medium:
		return "medium"
	case High:
		return "high"
	case Critical:
		return "critical"
	}
	return "unknown"
}

// ParseSeverity reads "low", "medium", "high" or "critical".
func ParseSeverity(s string) (Severity, error) {
	for v := Low; v <= Critical; v++ {
		if strings.EqualFold(s, v.String()) {
			return v, nil
		}
	}
	return 0, fmt.Errorf("severity %q is not one of low, medium, high, critical", s)
}

// Category groups detectors by the kind of harm.
type Category string

const (
	CatInjection    Category = "injection"    // SQL, command, expression/JNDI injection
	CatXSS          Category = "xss"          // script injection into pages
	CatTraversal    Category = "traversal"    // reading files outside the web root
	CatProtocol     Category = "protocol"     // smuggling, malformed/oversized messages, mismatch
	CatExfiltration Category = "exfiltration" // DNS tunnels, zone transfers, data leaks
	CatAbuse        Category = "abuse"        // dangerous administrative commands
	CatDoS          Category = "dos"          // floods
	CatWAF          Category = "waf"          // OWASP CRS anomaly (the waf sensor)
	CatDataLeak     Category = "data-leak"    // sensitive data (the dlp sensor)
)

// Detector describes one named threat detector.
type Detector struct {
	Name        string
	Severity    Severity
	Category    Category
	Description string // one line: what it catches
}

// Detector names, used in events, response rules and docs/threats.md.
const (
	SQLi                  = "sqli"
	XSS                   = "xss"
	CmdInjection          = "cmd-injection"
	PathTraversal         = "path-traversal"
	Log4Shell             = "log4shell"
	Shellshock            = "shellshock"
	HTTPSmuggling         = "http-smuggling"
	MalformedHeader       = "malformed-header"
	OversizedHeader       = "oversized-header"
	DNSTunnel             = "dns-tunnel"
	DNSZoneTransfer       = "dns-zone-transfer"
	ProtocolMismatch      = "protocol-mismatch"
	RedisDangerousCommand = "redis-dangerous-command"
	SQLDangerousStatement = "sql-dangerous-statement"
	ConnectionFlood       = "connection-flood"
	RequestFlood          = "request-flood"
	XXE                   = "xxe"
	SSTI                  = "ssti"
	SSRF                  = "ssrf"
	PHPInjection          = "php-injection"
	NoSQLInjection        = "nosql-injection"
	LDAPInjection         = "ldap-injection"
	CRLFInjection         = "crlf-injection"
	JavaInjection         = "java-injection"
	NodeInjection         = "nodejs-injection"
	ScriptUpload          = "script-upload"
	WAFAnomaly            = "waf"
	DLPMatch              = "dlp"
)

// DefaultDetectors is the registry: every detector meshguard runs, in documentation order.
func DefaultDetectors() []Detector {
	return []Detector{
		{SQLi, High, CatInjection, "SQL injection in HTTP parameters, JSON, cookies and selected headers (libinjection)"},
		{XSS, High, CatXSS, "script injection in HTTP parameters, path, cookies and selected headers (libinjection)"},
		{CmdInjection, Critical, CatInjection, "shell command injection: a separator or substitution followed by a command"},
		{PathTraversal, High, CatTraversal, "../ sequences (any encoding), null bytes and sensitive OS file paths"},
		{Log4Shell, Critical, CatInjection, "Log4j JNDI lookups ${jndi:...} including nested and obfuscated forms"},
		{Shellshock, Critical, CatInjection, "bash function definitions () { in headers and parameters (CVE-2014-6271)"},
		{XXE, High, CatInjection, "XML external entities: a DOCTYPE declaring a SYSTEM/PUBLIC entity in a body or parameter"},
		{SSTI, High, CatInjection, "server-side template expressions evaluating arithmetic or reaching objects ({{7*7}}, ${...}, <%= %>)"},
		{SSRF, High, CatInjection, "parameters pointing the server at cloud metadata endpoints or gopher/dict/ldap URLs"},
		{PHPInjection, High, CatInjection, "PHP code in parameters: <?php tags, system/passthru/eval/assert calls, php:// wrappers"},
		{NoSQLInjection, High, CatInjection, "MongoDB query operators smuggled into parameters (user[$ne]=, $where)"},
		{LDAPInjection, High, CatInjection, "LDAP filter break-outs in parameters: *)(uid=*))(|(uid=*"},
		{JavaInjection, Critical, CatInjection, "Java code/deserialization payloads: Runtime/ProcessBuilder, gadget classes, OGNL, serialized objects (rO0AB)"},
		{NodeInjection, High, CatInjection, "Node.js code injection and prototype pollution: __proto__ / constructor.prototype, child_process, _$$ND_FUNC$$_"},
		{ScriptUpload, High, CatInjection, "uploads a server would execute or obey: .php/.phtml/.jsp/.jspx/.asp(x) file names, .htaccess, .user.ini"},
		{CRLFInjection, High, CatProtocol, "CR/LF followed by a header line in URL parameters or cookies (response splitting)"},
		{HTTPSmuggling, Critical, CatProtocol, "conflicting or obfuscated Content-Length/Transfer-Encoding, bad chunking"},
		{MalformedHeader, Medium, CatProtocol, "header lines a strict server rejects: no colon, spaces in names, control bytes"},
		{OversizedHeader, Medium, CatProtocol, "request line, header value, header count or total header size beyond limits"},
		{DNSTunnel, High, CatExfiltration, "data carried in DNS names: long/high-entropy labels, TXT/NULL volume, many unique names"},
		{DNSZoneTransfer, Medium, CatExfiltration, "AXFR/IXFR zone transfer requests"},
		{ProtocolMismatch, Medium, CatProtocol, "a protocol on another protocol's port, or non-DNS bytes on port 53"},
		{RedisDangerousCommand, High, CatAbuse, "Redis CONFIG/SLAVEOF/REPLICAOF/MODULE/DEBUG/MIGRATE... from a source not allowed"},
		{SQLDangerousStatement, High, CatAbuse, "SQL DROP/TRUNCATE/COPY PROGRAM/INTO OUTFILE/LOAD_FILE/xp_cmdshell from a source not allowed"},
		{ConnectionFlood, High, CatDoS, "connection attempts per source above a rate (SYN/connection flood at the sidecar)"},
		{RequestFlood, Medium, CatDoS, "requests per source above a rate"},
		{WAFAnomaly, High, CatWAF, "OWASP Core Rule Set inbound anomaly score at or above the threshold (waf sensor)"},
		{DLPMatch, High, CatDataLeak, "credit cards, national ids, cloud keys, private keys, custom patterns (dlp sensor)"},
	}
}

// Lookup returns the registered detector with that name.
func Lookup(name string) (Detector, bool) {
	for _, d := range DefaultDetectors() {
		if d.Name == name {
			return d, true
		}
	}
	return Detector{}, false
}

// MaxEvidence caps the offending bytes a finding keeps.
const MaxEvidence = 256

// Finding is one detection.
type Finding struct {
	Detector string
	Severity Severity
	Category Category
	Location string // "query:id", "body:name", "json:user.name", "header:User-Agent", "cookie:sid", "path", "dns:example.com"...
	Evidence []byte // offending bytes (a copy, at most MaxEvidence)
	Message  string // optional detail (libinjection fingerprint, CRS rule message...)
	RuleID   int    // CRS rule id for waf findings
}

func (f Finding) String() string {
	return fmt.Sprintf("%s (%s, %s) at %s: %q %s", f.Detector, f.Severity, f.Category, f.Location, f.Evidence, f.Message)
}

// NewFinding builds a finding for a registered detector, copying at most MaxEvidence bytes.
func NewFinding(detector, location string, evidence []byte, msg string) Finding {
	d, _ := Lookup(detector)
	return Finding{Detector: detector, Severity: d.Severity, Category: d.Category, Location: location,
		Evidence: CapEvidence(evidence), Message: msg}
}

// CapEvidence copies at most MaxEvidence bytes.
func CapEvidence(b []byte) []byte {
	if len(b) > MaxEvidence {
		b = b[:MaxEvidence]
	}
	return append([]byte(nil), b...)
}
