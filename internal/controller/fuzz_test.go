package controller

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	"github.com/meshguard/meshguard/internal/events"
)

// FuzzThreatInput: whatever a sidecar sends, the event stays bounded, valid UTF-8 where the
// input was, and free of control characters.
func FuzzThreatInput(f *testing.F) {
	f.Add("sqli", "high", "block", "' OR 1=1--", []byte("GET /?q=' OR 1=1--"), "protect", int64(0))
	f.Add(strings.Repeat("\x00\xff", 200), "", "", "\n\r\t", []byte{}, "discover", int64(-1))
	f.Fuzz(func(t *testing.T, name, sev, action, reason string, evidence []byte, mode string, ts int64) {
		in := threatInput(&xdsv1.ThreatEvent{Name: name, Severity: sev, Action: action, Reason: reason, Evidence: evidence,
			Mode: mode, TimeUnixNano: ts, L7: reason, SourceWorkload: name}, fixedNow)
		ev := in.Event
		if len(ev.Name) > maxNameLen || len(ev.Reason) > maxTextLen || len(ev.L7) > maxTextLen || len(ev.Evidence) > events.MaxEvidence {
			t.Fatalf("unbounded: name %d reason %d l7 %d evidence %d", len(ev.Name), len(ev.Reason), len(ev.L7), len(ev.Evidence))
		}
		for _, s := range []string{ev.Name, ev.Reason, ev.L7, ev.Source.Workload} {
			if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Fatalf("control character kept in %q", s)
			}
		}
		if !utf8.ValidString(ev.L7) || !utf8.ValidString(ev.Name) {
			t.Fatalf("invalid UTF-8 kept: %q %q", ev.Name, ev.L7)
		}
		if ev.Time.After(fixedNow.Add(maxReportSkew)) {
			t.Fatalf("time %v beyond the skew", ev.Time)
		}
	})
}

var fixedNow = time.Unix(1_800_000_000, 0)
