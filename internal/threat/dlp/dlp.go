// Package dlp is the opt-in data-loss-prevention sensor: it scans request and response bodies
// (capped) for credit card numbers (Luhn-checked), national ids, cloud and SaaS credentials,
// private keys and custom RE2 patterns. Evidence is masked: a finding never holds a full card
// number or secret, only its last four characters.
package dlp

import (
	"bytes"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/threat"
)

// DefaultMaxScan is how many bytes of one body are scanned.
const DefaultMaxScan = 256 << 10

// Config of one scanner.
type Config struct {
	Patterns []string               // built-in pattern names (Patterns())
	Custom   []policy.CustomPattern // name + RE2 regular expression
	Action   policy.SensorAction    // alert|block; empty: the group's mode decides
	MaxScan  int                    // bytes scanned per body; 0: DefaultMaxScan
}

// FromPolicy converts a Group's spec.sensors.dlp.
func FromPolicy(s *policy.DLPSensor) Config {
	return Config{Patterns: s.Patterns, Custom: s.Custom, Action: s.Action}
}

// pattern is one detector of sensitive data.
type pattern struct {
	name    string
	hint    []string       // cheap pre-filter: at least one must occur (case-sensitive); nil: always run
	re      *regexp.Regexp // candidates
	group   int            // submatch holding the secret (0: whole match)
	valid   func([]byte) bool
	special func(b []byte) []byte // non-regex scanner returning the first match (credit cards)
}

// builtins returns the built-in patterns by name (a fresh set per scanner: no package state).
func builtins() map[string]pattern {
	return map[string]pattern{
		"credit-card": {name: "credit-card", special: findCard},
		"us-ssn": {name: "us-ssn", hint: []string{"-"}, re: regexp.MustCompile(`(?:^|[^0-9A-Za-z-])([0-8][0-9]{2}-[0-9]{2}-[0-9]{4})(?:$|[^0-9A-Za-z-])`),
			group: 1, valid: validSSN},
		"iban":  {name: "iban", re: regexp.MustCompile(`\b([A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?)\b`), group: 1, valid: validIBAN},
		"email": {name: "email", hint: []string{"@"}, re: regexp.MustCompile(`[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,24}`)},
		"aws-access-key": {name: "aws-access-key", hint: []string{"AKIA", "ASIA", "ABIA", "ACCA", "ws_secret", "WS_SECRET", "wsSecret", "SecretAccessKey"},
			re: regexp.MustCompile(`\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b|(?i:aws_?secret_?(?:access_?)?key|secretaccesskey)["']?\s*[:=]\s*["']?([A-Za-z0-9/+]{40})\b`)},
		"gcp-api-key":  {name: "gcp-api-key", hint: []string{"AIza"}, re: regexp.MustCompile(`\bAIza[0-9A-Za-z_-]{35}\b`)},
		"github-token": {name: "github-token", hint: []string{"gh", "github_pat_"}, re: regexp.MustCompile(`\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})\b`)},
		"slack-token": {name: "slack-token", hint: []string{"xox", "hooks.slack.com"},
			re: regexp.MustCompile(`\bxox[abposr]-[0-9A-Za-z-]{10,}|https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+`)},
		"private-key": {name: "private-key", hint: []string{"-----BEGIN"},
			re: regexp.MustCompile(`-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----`)},
		"azure-storage-key": {name: "azure-storage-key", hint: []string{"AccountKey="}, re: regexp.MustCompile(`AccountKey=[A-Za-z0-9+/]{86}==`)},
		"jwt":               {name: "jwt", hint: []string{"eyJ"}, re: regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}`)},
	}
}

// Patterns lists the built-in pattern names (policy.DLPPatterns plus the extras supported here).
func Patterns() []string {
	names := make([]string, 0, 11)
	for n := range builtins() {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Scanner finds sensitive data. Safe for concurrent use.
type Scanner struct {
	cfg      Config
	patterns []pattern
}

// New compiles the configured patterns.
func New(cfg Config) (*Scanner, error) {
	if cfg.MaxScan < 0 {
		return nil, fmt.Errorf("dlp: maxScan %d must not be negative", cfg.MaxScan)
	}
	if cfg.MaxScan == 0 {
		cfg.MaxScan = DefaultMaxScan
	}
	if cfg.Action != "" && cfg.Action != policy.SensorAlert && cfg.Action != policy.SensorBlock {
		return nil, fmt.Errorf("dlp: action %q is not an action (allowed: alert, block)", cfg.Action)
	}
	all := builtins()
	s := &Scanner{cfg: cfg}
	for _, n := range cfg.Patterns {
		p, ok := all[n]
		if !ok {
			return nil, fmt.Errorf("dlp: patterns: unknown pattern %q (allowed: %s; or use custom)", n, strings.Join(Patterns(), ", "))
		}
		s.patterns = append(s.patterns, p)
	}
	for i, c := range cfg.Custom {
		if c.Name == "" {
			return nil, fmt.Errorf("dlp: custom[%d]: name is required", i)
		}
		re, err := regexp.Compile(c.Regex)
		if err != nil {
			return nil, fmt.Errorf("dlp: custom[%d] %q: regex: %w (RE2 syntax: no look-arounds or back-references)", i, c.Name, err)
		}
		s.patterns = append(s.patterns, pattern{name: c.Name, re: re})
	}
	if len(s.patterns) == 0 {
		return nil, fmt.Errorf("dlp: needs patterns or custom (built-in: %s)", strings.Join(Patterns(), ", "))
	}
	return s, nil
}

// Config returns the effective configuration.
func (s *Scanner) Config() Config { return s.cfg }

// Scan appends one finding per pattern found in data (first MaxScan bytes). location says where
// data came from ("request-body", "response-body", "query"...).
func (s *Scanner) Scan(data []byte, location string, dst []threat.Finding) []threat.Finding {
	if len(data) > s.cfg.MaxScan {
		data = data[:s.cfg.MaxScan]
	}
	for i := range s.patterns {
		p := &s.patterns[i]
		if m := p.find(data); m != nil {
			f := threat.NewFinding(threat.DLPMatch, location, Mask(m), p.name)
			dst = append(dst, f)
		}
	}
	return dst
}

// InspectRequest scans a request's query string and body (chunked framing removed).
func (s *Scanner) InspectRequest(r *threat.HTTPRequest, dst []threat.Finding) []threat.Finding {
	if q := r.Query(); len(q) > 0 {
		dst = s.Scan(q, "query", dst)
	}
	if len(r.Body) > 0 {
		dst = s.Scan(r.DecodedBody(nil, s.cfg.MaxScan), "request-body", dst)
	}
	return dst
}

func (p *pattern) find(b []byte) []byte {
	if p.special != nil {
		return p.special(b)
	}
	if p.hint != nil {
		ok := false
		for _, h := range p.hint {
			if bytes.Contains(b, []byte(h)) {
				ok = true
				break
			}
		}
		if !ok {
			return nil
		}
	}
	for _, loc := range p.re.FindAllSubmatchIndex(b, 64) {
		m := b[loc[0]:loc[1]]
		for g := 1; g*2+1 < len(loc); g++ { // first non-empty group holds the secret
			if loc[g*2] >= 0 && (p.group == 0 || p.group == g) {
				m = b[loc[g*2]:loc[g*2+1]]
				break
			}
		}
		if p.valid == nil || p.valid(m) {
			return m
		}
	}
	return nil
}

// Mask keeps the last four characters of a match and hides the rest (separators included), so
// events identify which card or key leaked without leaking it again.
func Mask(m []byte) []byte {
	if bytes.HasPrefix(m, []byte("-----BEGIN")) {
		return append([]byte(nil), m...) // the PEM header names the key type, holds no secret
	}
	keep := 4
	if len(m) <= 8 {
		keep = len(m) / 2
	}
	out := bytes.Repeat([]byte("*"), len(m)-keep)
	return append(out, m[len(m)-keep:]...)
}

// findCard returns the first Luhn-valid card number: 13-19 digits in groups separated by single
// spaces or dashes, with a known issuer prefix and not part of a longer number or word.
func findCard(b []byte) []byte {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c < '2' || c > '6' || (i > 0 && isWordByte(b[i-1])) {
			continue
		}
		var digits [19]byte
		n, j := 0, i
		for j < len(b) && n < 20 {
			if b[j] >= '0' && b[j] <= '9' {
				if n < 19 {
					digits[n] = b[j]
				}
				n++
				j++
				continue
			}
			if (b[j] == ' ' || b[j] == '-') && j+1 < len(b) && b[j+1] >= '0' && b[j+1] <= '9' && j > i && b[j-1] >= '0' && b[j-1] <= '9' {
				j++
				continue
			}
			break
		}
		if n >= 13 && n <= 19 && (j == len(b) || !isWordByte(b[j])) && issuer(digits[:n]) && luhn(digits[:n]) {
			return b[i:j]
		}
		// Skip the rest of this digit run.
		for i+1 < len(b) && b[i+1] >= '0' && b[i+1] <= '9' {
			i++
		}
	}
	return nil
}

func isWordByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}

func issuer(d []byte) bool {
	p2, _ := strconv.Atoi(string(d[:2]))
	p4, _ := strconv.Atoi(string(d[:4]))
	switch {
	case d[0] == '4': // Visa
		return len(d) == 13 || len(d) == 16 || len(d) == 19
	case p2 >= 51 && p2 <= 55, p4 >= 2221 && p4 <= 2720: // Mastercard
		return len(d) == 16
	case p2 == 34 || p2 == 37: // Amex
		return len(d) == 15
	case p4 == 6011, p2 == 65, p4 >= 6440 && p4 <= 6499, p4 >= 6221 && p4 <= 6229: // Discover
		return len(d) >= 16
	case p4 >= 3528 && p4 <= 3589: // JCB
		return len(d) >= 16
	case p2 == 36, p2 == 38, p4 >= 3000 && p4 <= 3059: // Diners
		return len(d) >= 14
	}
	return false
}

func luhn(d []byte) bool {
	sum, alt := 0, false
	for i := len(d) - 1; i >= 0; i-- {
		n := int(d[i] - '0')
		if alt {
			n *= 2
			if n > 9 {
				n -= 9
			}
		}
		sum += n
		alt = !alt
	}
	return sum%10 == 0
}

// validSSN applies the SSA's rules: no area 000, 666 or 9xx, no group 00, no serial 0000.
func validSSN(m []byte) bool {
	area, group, serial := string(m[0:3]), string(m[4:6]), string(m[7:11])
	return area != "000" && area != "666" && area[0] != '9' && group != "00" && serial != "0000"
}

// validIBAN checks length (15..34) and the ISO 13616 mod-97 check digits.
func validIBAN(m []byte) bool {
	s := strings.ReplaceAll(string(m), " ", "")
	if len(s) < 15 || len(s) > 34 {
		return false
	}
	s = s[4:] + s[:4]
	var num strings.Builder
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			num.WriteRune(c)
		case c >= 'A' && c <= 'Z':
			num.WriteString(strconv.Itoa(int(c-'A') + 10))
		default:
			return false
		}
	}
	n, ok := new(big.Int).SetString(num.String(), 10)
	return ok && new(big.Int).Mod(n, big.NewInt(97)).Int64() == 1
}
