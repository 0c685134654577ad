package policy

import (
	"net/netip"
	"testing"
)

func TestParseCIDR(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3/8":       "10.0.0.0/8",
		"192.0.2.7":        "192.0.2.7/32",
		"::ffff:192.0.2.7": "192.0.2.7/32",
		"2001:db8::1/32":   "2001:db8::/32",
		"2001:db8::1":      "2001:db8::1/128",
	} {
		got, err := ParseCIDR(in)
		if err != nil || got != netip.MustParsePrefix(want) {
			t.Errorf("ParseCIDR(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.0/33", "example.com", "10.0.0.1/"} {
		if p, err := ParseCIDR(in); err == nil {
			t.Errorf("ParseCIDR(%q) = %v, want an error", in, p)
		}
	}
}
