package dlp

import (
	"bytes"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/threat"
)

func all(t *testing.T) *Scanner {
	t.Helper()
	s, err := New(Config{Patterns: Patterns(), Custom: []policy.CustomPattern{{Name: "employee-id", Regex: `\bEMP-[0-9]{6}\b`}}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPolicyPatternsSupported(t *testing.T) {
	if _, err := New(FromPolicy(&policy.DLPSensor{Patterns: policy.DLPPatterns()})); err != nil {
		t.Fatalf("a pattern the policy accepts is unknown here: %v", err)
	}
	for _, c := range []Config{{}, {Patterns: []string{"nope"}}, {Custom: []policy.CustomPattern{{Name: "x", Regex: `(?<=a)b`}}}, {Patterns: []string{"email"}, Action: "drop"}} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func TestDetectsAndMasks(t *testing.T) {
	s := all(t)
	for _, c := range []struct{ pattern, text, secret string }{
		{"credit-card", `{"card":"4111 1111 1111 1111","exp":"12/29"}`, "4111 1111 1111 1111"},
		{"credit-card", "pan=5500-0000-0000-0004&cvv=123", "5500-0000-0000-0004"},
		{"credit-card", "amex 378282246310005.", "378282246310005"},
		{"us-ssn", "ssn: 123-45-6789\n", "123-45-6789"},
		{"iban", "IBAN DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00"},
		{"aws-access-key", "key=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"},
		{"aws-access-key", `aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY`, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},
		{"gcp-api-key", "AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyA1234567890abcdefghijklmnopqrstuv"},
		{"github-token", "token ghp_0123456789abcdefghijklmnopqrstuvwxyZ ok", "ghp_0123456789abcdefghijklmnopqrstuvwxyZ"},
		{"slack-token", "xoxb-123456789012-abcdefghijkl", "xoxb-123456789012-abcdefghijkl"},
		{"private-key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n", ""},
		{"email", "contact: jane.doe@example.com", "jane.doe@example.com"},
		{"employee-id", "id EMP-123456 here", "EMP-123456"},
	} {
		f := s.Scan([]byte(c.text), "response-body", nil)
		var got *threat.Finding
		for i := range f {
			if f[i].Message == c.pattern {
				got = &f[i]
			}
		}
		if got == nil {
			t.Errorf("%s not found in %q: %v", c.pattern, c.text, f)
			continue
		}
		if got.Detector != threat.DLPMatch || got.Location != "response-body" {
			t.Errorf("%s: %v", c.pattern, got)
		}
		if c.secret != "" {
			if bytes.Contains(got.Evidence, []byte(c.secret[:len(c.secret)-4])) || !bytes.HasSuffix(got.Evidence, []byte(c.secret[len(c.secret)-4:])) {
				t.Errorf("%s: evidence %q not masked to the last 4", c.pattern, got.Evidence)
			}
		}
	}
}

func TestNoFalsePositives(t *testing.T) {
	s := all(t)
	for _, text := range []string{
		"order 4111111111111112 (bad luhn)", "tracking 1Z999AA10123456784", "phone +1 555-010-9999", "id 12345678901234567890123",
		"date 2024-06-01 time 12:34:56", "ssn 000-12-3456 666-12-3456 123-00-4567", "version 1.2.3-4", "uuid 123e4567-e89b-12d3-a456-426614174000",
		"timestamp 1717171717171", "IBAN DE00 3704 0044 0532 0130 00", "AKIA lowercase akiaiosfodnn7example",
		"isbn 978-3-16-148410-0", "ghp_short", strings.Repeat("4", 16),
	} {
		if f := s.Scan([]byte(text), "body", nil); len(f) > 0 {
			t.Errorf("%q: %v", text, f)
		}
	}
}

func TestInspectRequestChunkedAndCap(t *testing.T) {
	s, err := New(Config{Patterns: []string{"credit-card"}, MaxScan: 64})
	if err != nil {
		t.Fatal(err)
	}
	r, err := threat.ParseHTTPRequest([]byte("POST /pay HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n4111 111\r\nb\r\n1 1111 1111\r\n0\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f := s.InspectRequest(&r, nil); len(f) != 1 {
		t.Fatalf("card split across chunks: %v", f)
	}
	long := append(bytes.Repeat([]byte("a "), 100), "4111111111111111"...)
	if f := s.Scan(long, "body", nil); len(f) != 0 {
		t.Fatal("scanned past MaxScan")
	}
}
