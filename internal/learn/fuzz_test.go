package learn

import (
	"regexp"
	"testing"

	"github.com/meshguard/meshguard/internal/dpi"
)

var validName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// FuzzRule: observations carry traffic-derived text (application, request summary). Rule must
// never panic, and whatever it builds has a valid, bounded name and a bounded comment.
func FuzzRule(f *testing.F) {
	f.Add("shop/web", "shop/cache", "redis", "GET key", uint16(6379), true)
	f.Add("jobs/batch", "github", "", "", uint16(443), false)
	f.Add("a/B_C", "x/..", "HTTP/1.1", "\xff\xfe", uint16(0), true)
	f.Fuzz(func(t *testing.T, src, dst, app, l7 string, port uint16, tcp bool) {
		tr := dpi.UDP
		if tcp {
			tr = dpi.TCP
		}
		r, err := Rule(Observation{SrcGroup: src, DstGroup: dst, App: app, L7: l7, Port: port, Transport: tr})
		if err != nil {
			return
		}
		if n := r.Metadata.Name; len(n) > 253 || !validName.MatchString(n) {
			t.Fatalf("invalid name %q", n)
		}
		if len(r.Spec.Comment) > 400 {
			t.Fatalf("comment of %d bytes", len(r.Spec.Comment))
		}
	})
}
