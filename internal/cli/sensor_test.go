package cli

import (
	"net/http"
	"strings"
	"testing"
)

func TestSensorEnableSendsOnlyGivenFlags(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{
		"PUT /api/v1/groups/shop/web/sensors/waf":    replyJSON(200, map[string]uint64{"version": 7}),
		"PUT /api/v1/groups/shop/web/sensors/dlp":    replyJSON(200, map[string]uint64{"version": 8}),
		"DELETE /api/v1/groups/shop/web/sensors/waf": replyJSON(200, map[string]uint64{"version": 9}),
		"PUT /api/v1/groups/shop/nope/sensors/waf":   replyJSON(404, map[string]string{"error": `group "shop/nope" not found (see 'meshguard get groups')`}),
	})
	for _, tc := range []struct {
		args     []string
		method   string
		path     string
		body     string
		wantOut  string
		wantBody bool
	}{
		{[]string{"sensor", "enable", "shop/web", "waf", "--paranoia-level", "2", "--action", "block"}, "PUT", "/api/v1/groups/shop/web/sensors/waf",
			`{"paranoiaLevel":2,"action":"block"}`, "sensor waf enabled on group shop/web (paranoia level 2, action block)\npolicy version 7\n", true},
		{[]string{"sensor", "enable", "shop/web", "waf"}, "PUT", "/api/v1/groups/shop/web/sensors/waf",
			`{}`, "sensor waf enabled on group shop/web\npolicy version 7\n", true},
		{[]string{"sensor", "enable", "shop/web", "waf", "--anomaly-threshold", "10", "--body-limit", "65536", "--arguments-limit", "100"}, "PUT", "/api/v1/groups/shop/web/sensors/waf",
			`{"anomalyThreshold":10,"bodyLimit":65536,"argumentsLimit":100}`, "", true},
		{[]string{"sensor", "enable", "shop/web", "dlp", "--patterns", "credit-card,aws-access-key", "--action", "alert"}, "PUT", "/api/v1/groups/shop/web/sensors/dlp",
			`{"patterns":["credit-card","aws-access-key"],"action":"alert"}`, "", true},
		{[]string{"sensor", "enable", "shop/web", "dlp", "--custom", "employee-id=EMP-[0-9]{6}"}, "PUT", "/api/v1/groups/shop/web/sensors/dlp",
			`{"custom":[{"name":"employee-id","regex":"EMP-[0-9]{6}"}]}`, "", true},
		{[]string{"sensor", "enable", "shop/web", "waf", "--exclude", "932235,942100=ARGS:comment,ARGS:json.body@/forum/", "--exclude", "920350"}, "PUT", "/api/v1/groups/shop/web/sensors/waf",
			`{"exclusions":[{"rules":[932235,942100],"targets":["ARGS:comment","ARGS:json.body"],"pathPrefix":"/forum/"},{"rules":[920350]}]}`,
			"sensor waf enabled on group shop/web (2 rule exclusions)\npolicy version 7\n", true},
		{[]string{"sensor", "disable", "shop/web", "waf"}, "DELETE", "/api/v1/groups/shop/web/sensors/waf",
			"", "sensor waf disabled on group shop/web\npolicy version 9\n", false},
	} {
		f.reset()
		code, out, errs := f.run(tc.args...)
		if code != 0 {
			t.Errorf("%v: code %d stderr %q", tc.args, code, errs)
			continue
		}
		c := f.only(t)
		if c.Method != tc.method || c.Path != tc.path {
			t.Errorf("%v: request %s %s, want %s %s", tc.args, c.Method, c.Path, tc.method, tc.path)
		}
		if tc.wantBody {
			jsonEqual(t, c.Body, tc.body)
		} else if c.Body != "" {
			t.Errorf("%v: body %q, want none", tc.args, c.Body)
		}
		if tc.wantOut != "" && out != tc.wantOut {
			t.Errorf("%v: stdout %q, want %q", tc.args, out, tc.wantOut)
		}
	}

	f.reset()
	code, _, errs := f.run("sensor", "enable", "shop/nope", "waf")
	if code == 0 || !strings.Contains(errs, `group "shop/nope" not found`) {
		t.Errorf("API error must reach the user: code %d stderr %q", code, errs)
	}
}

func TestSensorFlagValidation(t *testing.T) {
	f := newFakeAPI(t, nil)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sensor", "enable", "web", "waf"}, `NS/GROUP "web": want namespace/name, e.g. shop/web`},
		{[]string{"sensor", "enable", "shop/web", "ids"}, `sensor "ids": want waf or dlp`},
		{[]string{"sensor", "disable", "shop/web", "ids"}, `sensor "ids": want waf or dlp`},
		{[]string{"sensor", "enable", "shop/web", "waf", "--paranoia-level", "5"}, "--paranoia-level 5: want 1 to 4"},
		{[]string{"sensor", "enable", "shop/web", "waf", "--anomaly-threshold", "0"}, "--anomaly-threshold 0"},
		{[]string{"sensor", "enable", "shop/web", "waf", "--action", "drop"}, `--action "drop": want alert or block`},
		{[]string{"sensor", "enable", "shop/web", "waf", "--patterns", "credit-card"}, "--patterns does not apply to the waf sensor"},
		{[]string{"sensor", "enable", "shop/web", "dlp", "--paranoia-level", "2"}, "--paranoia-level does not apply to the dlp sensor"},
		{[]string{"sensor", "enable", "shop/web", "dlp", "--patterns", "credit-card,ssn"}, `unknown pattern "ssn" (known: credit-card, aws-access-key`},
		{[]string{"sensor", "enable", "shop/web", "dlp"}, "the dlp sensor needs --patterns"},
		{[]string{"sensor", "enable", "shop/web", "dlp", "--patterns", ""}, "--patterns: give at least one pattern name"},
		{[]string{"sensor", "enable", "shop/web", "dlp", "--custom", "x"}, `--custom "x": want NAME=REGEX`},
		{[]string{"sensor", "enable", "shop/web", "dlp", "--custom", "x=a("}, "--custom x: regex"},
		{[]string{"sensor", "enable", "shop/web", "waf", "--arguments-limit", "0"}, "--arguments-limit 0: want 1 to 10000"},
		{[]string{"sensor", "enable", "shop/web", "waf", "--exclude", "abc"}, `--exclude "abc": "abc" is not a rule ID`},
		{[]string{"sensor", "enable", "shop/web", "waf", "--exclude", "12"}, "12 is not a CRS rule ID"},
		{[]string{"sensor", "enable", "shop/web", "waf", "--exclude", `942100=ARGS:a"b`}, `targets: "ARGS:a\"b": want COLLECTION`},
		{[]string{"sensor", "enable", "shop/web", "waf", "--exclude", "942100@forum"}, `pathPrefix: "forum": want an absolute path`},
		{[]string{"sensor", "enable", "shop/web", "dlp", "--patterns", "credit-card", "--exclude", "942100"}, "--exclude does not apply to the dlp sensor"},
	} {
		code, _, errs := f.run(tc.args...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: code %d stderr %q, want %q", tc.args, code, errs, tc.want)
		}
	}
	if n := len(f.Calls()); n != 0 {
		t.Errorf("invalid flags must be refused locally; %d API calls", n)
	}
}
