package cli

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/api"
)

func TestQuarantineAndRelease(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"POST /api/v1/workloads/shop/web-0/quarantine":   replyJSON(200, api.QuarantineStatus{Workload: "shop/web-0", Since: time.Now(), Reason: "x"}),
		"DELETE /api/v1/workloads/shop/web-0/quarantine": replyJSON(200, map[string]any{"workload": "shop/web-0", "released": true}),
		"POST /api/v1/workloads/shop/ghost/quarantine":   replyJSON(404, map[string]string{"error": `workload "shop/ghost" is not registered`}),
	})

	code, out, errs := f.run("quarantine", "shop/web-0", "--reason", "dns tunnel seen")
	if code != 0 || out != "quarantined shop/web-0\n" {
		t.Fatalf("quarantine: code %d out %q err %q", code, out, errs)
	}
	c := f.only(t)
	if c.Method != "POST" || c.Path != "/api/v1/workloads/shop/web-0/quarantine" {
		t.Errorf("request = %s %s", c.Method, c.Path)
	}
	jsonEqual(t, c.Body, `{"reason":"dns tunnel seen"}`)

	f.reset()
	code, out, errs = f.run("quarantine", "shop/web-0", "--release")
	if code != 0 || out != "released shop/web-0\n" {
		t.Fatalf("release: code %d out %q err %q", code, out, errs)
	}
	if c := f.only(t); c.Method != "DELETE" || c.Path != "/api/v1/workloads/shop/web-0/quarantine" || c.Body != "" {
		t.Errorf("release request = %+v", c)
	}

	f.reset()
	code, _, errs = f.run("quarantine", "shop/ghost")
	if code == 0 || !strings.Contains(errs, `workload "shop/ghost" is not registered`) {
		t.Errorf("the API's error must reach the user: code %d err %q", code, errs)
	}
}

func TestQuarantineArgumentErrors(t *testing.T) {
	f := newFakeAPI(t, nil)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"quarantine", "web-0"}, `NS/POD "web-0": want namespace/name, e.g. shop/web-0`},
		{[]string{"quarantine", "shop/"}, "want namespace/name"},
		{[]string{"quarantine", "a/b/c"}, "want namespace/name"},
		{[]string{"quarantine", "shop/web-0", "--release", "--reason", "x"}, "--reason goes with quarantining"},
		{[]string{"quarantine", "list", "-o", "xml"}, `-o "xml"`},
	} {
		code, _, errs := f.run(tc.args...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: code %d stderr %q, want it to contain %q", tc.args, code, errs, tc.want)
		}
	}
	if n := len(f.Calls()); n != 0 {
		t.Errorf("bad arguments must be refused before calling the API; %d calls made", n)
	}
}

func TestQuarantineList(t *testing.T) {
	since := time.Date(2026, 11, 25, 4, 0, 0, 0, time.UTC)
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"GET /api/v1/quarantines": replyJSON(200, []api.QuarantineStatus{
			{Workload: "shop/web-0", Since: since, Reason: "dns-tunnel\x1b[31m"},
		}),
	})
	code, out, errs := f.run("quarantine", "list")
	if code != 0 {
		t.Fatalf("code %d err %q", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Fields(lines[0])[0] != "WORKLOAD" || !strings.HasPrefix(lines[1], "shop/web-0 ") {
		t.Fatalf("table = %q", out)
	}
	if strings.Contains(out, "\x1b") || !strings.Contains(out, `dns-tunnel\x1b[31m`) {
		t.Errorf("control bytes of a reason must be escaped in the table: %q", out)
	}
	if !strings.Contains(out, since.Local().Format(time.DateTime)) {
		t.Errorf("SINCE missing: %q", out)
	}

	code, out, _ = f.run("quarantine", "list", "-o", "json")
	var got []api.QuarantineStatus
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || len(got) != 1 || got[0].Workload != "shop/web-0" || !got[0].Since.Equal(since) {
		t.Errorf("json: code %d out %q", code, out)
	}
}
