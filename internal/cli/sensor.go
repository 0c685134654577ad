package cli

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/policy"
)

// sensorFlags holds enable's flags; only those the user gave are sent. The controller replaces
// the group's sensor with what it receives, so an unset flag means the controller's default.
type sensorFlags struct {
	paranoia  int
	threshold int
	bodyLimit int
	argsLimit int
	action    string
	patterns  []string
	custom    []string
	exclude   []string
}

func sensorPath(ns, group, sensor string) string {
	return "/api/v1/groups/" + url.PathEscape(ns) + "/" + url.PathEscape(group) + "/sensors/" + sensor
}

func checkSensorName(s string) error {
	if s != "waf" && s != "dlp" {
		return fmt.Errorf("sensor %q: want waf or dlp", s)
	}
	return nil
}

// sensorBody builds the PUT body from the flags the user set, validating each locally so a
// typo is answered before the controller is asked.
func sensorBody(cmd *cobra.Command, sensor string, f *sensorFlags) (map[string]any, error) {
	changed := cmd.Flags().Changed
	other := []string{"patterns", "custom"} // the flags that belong to the other sensor
	if sensor == "dlp" {
		other = []string{"paranoia-level", "anomaly-threshold", "body-limit", "arguments-limit", "exclude"}
	}
	for _, n := range other {
		if changed(n) {
			return nil, fmt.Errorf("--%s does not apply to the %s sensor (it is for %s)", n, sensor, otherSensor(sensor))
		}
	}
	body := map[string]any{}
	if changed("action") {
		if f.action != string(policy.SensorAlert) && f.action != string(policy.SensorBlock) {
			return nil, fmt.Errorf("--action %q: want alert or block", f.action)
		}
		body["action"] = f.action
	}
	switch sensor {
	case "waf":
		if changed("paranoia-level") {
			if f.paranoia < 1 || f.paranoia > 4 {
				return nil, fmt.Errorf("--paranoia-level %d: want 1 to 4 (1 has the fewest false positives)", f.paranoia)
			}
			body["paranoiaLevel"] = f.paranoia
		}
		if changed("anomaly-threshold") {
			if f.threshold < 1 {
				return nil, fmt.Errorf("--anomaly-threshold %d: want a positive score (the CRS default is 5)", f.threshold)
			}
			body["anomalyThreshold"] = f.threshold
		}
		if changed("body-limit") {
			if f.bodyLimit < 1 {
				return nil, fmt.Errorf("--body-limit %d: want a positive number of bytes", f.bodyLimit)
			}
			body["bodyLimit"] = f.bodyLimit
		}
		if changed("arguments-limit") {
			if f.argsLimit < 1 || f.argsLimit > 10000 {
				return nil, fmt.Errorf("--arguments-limit %d: want 1 to 10000 (each argument costs the CRS ~0.3 ms of CPU)", f.argsLimit)
			}
			body["argumentsLimit"] = f.argsLimit
		}
		if changed("exclude") {
			var xs []policy.WAFExclusion
			for _, e := range f.exclude {
				x, err := parseExclusion(e)
				if err != nil {
					return nil, err
				}
				xs = append(xs, x)
			}
			body["exclusions"] = xs
		}
	case "dlp":
		if changed("patterns") {
			known := policy.DLPPatterns()
			pats := []string{}
			for _, p := range f.patterns {
				p = strings.TrimSpace(p)
				if p == "" {
					continue
				}
				if !slices.Contains(known, p) {
					return nil, fmt.Errorf("--patterns: unknown pattern %q (known: %s; use --custom NAME=REGEX for others)", p, strings.Join(known, ", "))
				}
				pats = append(pats, p)
			}
			body["patterns"] = pats
		}
		if changed("custom") {
			var custom []policy.CustomPattern
			for _, c := range f.custom {
				name, expr, ok := strings.Cut(c, "=")
				if !ok || name == "" || expr == "" {
					return nil, fmt.Errorf("--custom %q: want NAME=REGEX, e.g. employee-id=EMP-[0-9]{6}", c)
				}
				if _, err := regexp.Compile(expr); err != nil {
					return nil, fmt.Errorf("--custom %s: regex: %w", name, err)
				}
				custom = append(custom, policy.CustomPattern{Name: name, Regex: expr})
			}
			body["custom"] = custom
		}
		if body["patterns"] == nil && body["custom"] == nil {
			return nil, fmt.Errorf("the dlp sensor needs --patterns (%s) or --custom NAME=REGEX", strings.Join(policy.DLPPatterns(), ","))
		}
		if p, ok := body["patterns"].([]string); ok && len(p) == 0 && body["custom"] == nil {
			return nil, errors.New("--patterns: give at least one pattern name")
		}
	}
	return body, nil
}

// parseExclusion reads --exclude RULE[,RULE...][=TARGET[,TARGET...]][@PATH], e.g.
// 932235,942100=ARGS:comment@/forum/.
func parseExclusion(s string) (policy.WAFExclusion, error) {
	var x policy.WAFExclusion
	rest := s
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest, x.PathPrefix = rest[:i], rest[i+1:]
	}
	ids, targets, _ := strings.Cut(rest, "=")
	for _, id := range strings.Split(ids, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(id))
		if err != nil {
			return x, fmt.Errorf("--exclude %q: %q is not a rule ID; want RULE[,RULE...][=TARGET[,TARGET...]][@PATH], e.g. 932235,942100=ARGS:comment@/forum/", s, id)
		}
		x.Rules = append(x.Rules, n)
	}
	if targets != "" {
		for _, t := range strings.Split(targets, ",") {
			x.Targets = append(x.Targets, strings.TrimSpace(t))
		}
	}
	if field, problem := x.Check(); field != "" {
		return x, fmt.Errorf("--exclude %q: %s: %s", s, field, problem)
	}
	return x, nil
}

func otherSensor(s string) string {
	if s == "waf" {
		return "dlp"
	}
	return "waf"
}

// describeSensor summarises the settings sent, for the confirmation line.
func describeSensor(body map[string]any) string {
	var parts []string
	for _, k := range []struct{ key, label string }{{"paranoiaLevel", "paranoia level"}, {"anomalyThreshold", "anomaly threshold"},
		{"bodyLimit", "body limit"}, {"argumentsLimit", "arguments limit"}, {"patterns", "patterns"}, {"action", "action"}} {
		v, ok := body[k.key]
		if !ok {
			continue
		}
		if l, ok := v.([]string); ok {
			v = strings.Join(l, ",")
		}
		parts = append(parts, fmt.Sprintf("%s %v", k.label, v))
	}
	if c, ok := body["custom"].([]policy.CustomPattern); ok {
		parts = append(parts, fmt.Sprintf("%d custom patterns", len(c)))
	}
	if x, ok := body["exclusions"].([]policy.WAFExclusion); ok {
		parts = append(parts, fmt.Sprintf("%d rule exclusions", len(x)))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func newSensorCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sensor",
		Short: "Attach or detach a group's opt-in sensors: WAF (OWASP CRS) and DLP",
		Long: `Sensors are heavier inspections a group opts into; groups without them pay nothing.

  waf  the OWASP Core Rule Set (Coraza) on the group's inbound HTTP traffic
  dlp  sensitive data (credit cards, cloud keys, private keys, custom regexes) in requests
       and responses

A sensor's --action decides what a finding does: alert (report it) or block (refuse the
request). Without --action the group's mode decides: protect blocks, discover and monitor
report. The same settings can be applied as YAML (a Group's spec.sensors).`,
	}
	cmd.AddCommand(newSensorEnableCommand(g), newSensorDisableCommand(g))
	return cmd
}

func newSensorEnableCommand(g *globals) *cobra.Command {
	f := &sensorFlags{}
	cmd := &cobra.Command{
		Use:   "enable NS/GROUP waf|dlp [flags]",
		Short: "Attach (or reconfigure) a sensor on a group",
		Long: `Attach a sensor to a group, or change its settings. Only the flags you give are sent;
the rest keep their defaults (WAF: paranoia level 1, anomaly threshold 5).

WAF flags: --paranoia-level 1..4 (higher catches more and false-alarms more),
--anomaly-threshold N (CRS inbound score that counts as an attack), --body-limit BYTES,
--arguments-limit N (arguments the CRS evaluates per request; default 256),
--exclude RULE[,RULE...][=TARGET[,TARGET...]][@PATH] (repeatable): keep CRS rules off a field
that legitimately carries what they look for, e.g. a Markdown editor's body; the rule IDs are
in the threat events' reason (waf: ... 932235 ...). Every --exclude given replaces the list.
DLP flags: --patterns a,b (built-in: ` + strings.Join(policy.DLPPatterns(), ", ") + `),
--custom NAME=REGEX (repeatable).`,
		Example: `  meshguard sensor enable shop/web waf --paranoia-level 2 --action block
  meshguard sensor enable shop/web waf --action block --exclude 932235,932260=ARGS:comment@/forum/
  meshguard sensor enable shop/web dlp --patterns credit-card,aws-access-key --action alert
  meshguard sensor enable shop/api dlp --custom employee-id='EMP-[0-9]{6}'
  meshguard get events --kind threat`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, group, err := splitNSName(args[0], "NS/GROUP", "shop/web")
			if err != nil {
				return err
			}
			sensor := args[1]
			if err := checkSensorName(sensor); err != nil {
				return err
			}
			body, err := sensorBody(cmd, sensor, f)
			if err != nil {
				return err
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			var out api.VersionResponse
			if err := c.do(cmd.Context(), "PUT", sensorPath(ns, group, sensor), body, &out); err != nil {
				return fmt.Errorf("sensor enable %s %s: %w", args[0], sensor, err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "sensor %s enabled on group %s/%s%s\npolicy version %d\n",
				sensor, ns, group, describeSensor(body), out.Version)
			return err
		},
	}
	fl := cmd.Flags()
	// Zero defaults: an unset flag is not sent, and the controller's default applies.
	fl.IntVar(&f.paranoia, "paranoia-level", 0, "waf: CRS paranoia level 1..4 (controller default 1)")
	fl.IntVar(&f.threshold, "anomaly-threshold", 0, "waf: inbound anomaly score that counts as an attack (controller default 5)")
	fl.IntVar(&f.bodyLimit, "body-limit", 0, "waf: request body bytes inspected (controller default)")
	fl.IntVar(&f.argsLimit, "arguments-limit", 0, "waf: arguments the CRS evaluates per request, ~0.3 ms of CPU each (controller default 256; the built-in detectors see the rest)")
	fl.StringVar(&f.action, "action", "", "alert or block (default: the group's mode decides)")
	fl.StringSliceVar(&f.patterns, "patterns", nil, "dlp: built-in pattern names, comma-separated")
	fl.StringArrayVar(&f.custom, "custom", nil, "dlp: NAME=REGEX custom pattern (repeatable)")
	fl.StringArrayVar(&f.exclude, "exclude", nil, "waf: RULE[,RULE...][=TARGET[,TARGET...]][@PATH] rule exclusion (repeatable)")
	return cmd
}

func newSensorDisableCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "disable NS/GROUP waf|dlp",
		Short:   "Detach a sensor from a group",
		Example: "  meshguard sensor disable shop/web waf",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, group, err := splitNSName(args[0], "NS/GROUP", "shop/web")
			if err != nil {
				return err
			}
			if err := checkSensorName(args[1]); err != nil {
				return err
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			var out api.VersionResponse
			if err := c.do(cmd.Context(), "DELETE", sensorPath(ns, group, args[1]), nil, &out); err != nil {
				return fmt.Errorf("sensor disable %s %s: %w", args[0], args[1], err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "sensor %s disabled on group %s/%s\npolicy version %d\n", args[1], ns, group, out.Version)
			return err
		},
	}
}
