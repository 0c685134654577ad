package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/events"
)

func TestStatusShowsQuarantined(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /api/v1/sidecars": replyJSON(200, api.SidecarsResponse{Version: 4}),
		"GET /api/v1/quarantines": replyJSON(200, []api.QuarantineStatus{{Workload: "shop/web-0", Since: time.Now(),
			Reason: "response rule dns-tunnel"}}),
	})
	code, out, errs := f.run("status")
	if code != 0 {
		t.Fatalf("code %d stderr %q", code, errs)
	}
	for _, want := range []string{"config version 4", "Quarantined: 1", "WORKLOAD", "shop/web-0", "response rule dns-tunnel"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = f.run("status", "-o", "json")
	var v statusView
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || len(v.Quarantined) != 1 || v.QuarantineUnknown {
		t.Errorf("json: code %d out %s", code, out)
	}
}

func TestStatusToleratesOlderController(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{ // no /api/v1/quarantines: 404
		"GET /api/v1/sidecars": replyJSON(200, api.SidecarsResponse{Version: 1}),
	})
	code, out, errs := f.run("status")
	if code != 0 || !strings.Contains(out, "Quarantined: unknown") {
		t.Fatalf("a 404 for quarantines must not fail status: code %d out %q err %q", code, out, errs)
	}

	g := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /api/v1/sidecars":    replyJSON(200, api.SidecarsResponse{Version: 1}),
		"GET /api/v1/quarantines": replyJSON(403, map[string]string{"error": "viewer role required"}),
	})
	if code, _, errs := g.run("status"); code == 0 || !strings.Contains(errs, "viewer role required") {
		t.Errorf("other failures must surface: code %d err %q", code, errs)
	}
}

func TestGetThreatEvents(t *testing.T) {
	ev := events.Event{Kind: events.KindThreat, Time: time.Now(), Name: "sqli", Severity: "high", Action: "block",
		Source: events.Endpoint{Workload: "shop/client"}, Destination: events.Endpoint{Workload: "shop/web-0"},
		Reason: "sql injection in query parameter q", Evidence: []byte("q=1' OR 1=1--\x1b[2J"), CaptureRef: testCaptureID}
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /api/v1/events": replyJSON(200, api.EventsResponse{Events: []events.Event{ev}}),
	})
	code, out, errs := f.run("get", "events", "--kind", "threat")
	if code != 0 {
		t.Fatalf("code %d err %q", code, errs)
	}
	if c := f.only(t); c.Path != "/api/v1/events?kind=threat" {
		t.Errorf("path = %s", c.Path)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want header and one row: %q", out)
	}
	if got := strings.Fields(lines[0]); strings.Join(got, " ") != "TIME NAME SEVERITY ACTION SOURCE DESTINATION CAPTURE REASON" {
		t.Errorf("header = %q", lines[0])
	}
	for _, want := range []string{"sqli", "high", "block", "shop/client", "shop/web-0", testCaptureID} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row lacks %q: %q", want, lines[1])
		}
	}
	if strings.Contains(out, "OR 1=1") {
		t.Errorf("evidence belongs to --evidence or -o json, not the default table: %q", out)
	}

	code, out, _ = f.run("get", "events", "--kind", "threat", "--evidence")
	if code != 0 || !strings.Contains(out, "EVIDENCE") || !strings.Contains(out, `q=1' OR 1=1--\x1b[2J`) || strings.Contains(out, "\x1b") {
		t.Errorf("--evidence must show the bytes with control characters escaped: code %d out %q", code, out)
	}

	code, out, _ = f.run("get", "events", "--kind", "threat", "-o", "json")
	var got []events.Event
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || len(got) != 1 || string(got[0].Evidence) != string(ev.Evidence) {
		t.Errorf("-o json must carry the evidence: code %d out %s", code, out)
	}

	if code, _, errs = f.run("get", "events", "--evidence"); code == 0 || !strings.Contains(errs, "add --kind threat") {
		t.Errorf("--evidence without --kind threat: code %d err %q", code, errs)
	}
}

func TestLabStatusQuarantinedSection(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /api/v1/quarantines": replyJSON(200, []api.QuarantineStatus{{Workload: "shop/dns-client", Since: time.Now(), Reason: "dns-tunnel"}}),
	})
	var buf strings.Builder
	labPrintQuarantined(context.Background(), &globals{}, &buf, f.conf)
	if out := buf.String(); !strings.HasPrefix(out, "Quarantined: 1\n") || !strings.Contains(out, "shop/dns-client") {
		t.Errorf("lab status section = %q", out)
	}

	buf.Reset()
	labPrintQuarantined(context.Background(), &globals{}, &buf, filepath.Join(t.TempDir(), "missing.conf"))
	if out := buf.String(); !strings.HasPrefix(out, "Quarantined: unknown (controller: ") {
		t.Errorf("a missing controller must be reported, not fatal: %q", out)
	}
}
