// Package waf is the opt-in WAF sensor: the OWASP Core Rule Set (embedded, via
// coraza-coreruleset) evaluated by Coraza on a group's HTTP requests, with a configurable
// paranoia level, inbound anomaly threshold and body limit.
//
// Building the rule set parses every CRS file (~100 ms, several MB), so a WAF is built once per
// distinct Config and shared by every connection of the groups that use it; groups without a
// waf sensor never construct one.
package waf

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/types"

	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/threat"
)

// Defaults for a zero Config field.
const (
	DefaultParanoiaLevel    = 1
	DefaultAnomalyThreshold = 5 // CRS default: one critical rule blocks
	DefaultBodyLimit        = 128 << 10
	// DefaultArgumentsLimit caps the arguments the CRS evaluates per request: every rule runs on
	// every argument (~0.3 ms each), so a form of 1,000 fields cost 320 ms of CPU — a lever for
	// exhausting a WAF group's sidecar with few requests. 256 bounds it near 80 ms; arguments
	// past the cap are still seen by the built-in detectors. Per group: argumentsLimit.
	DefaultArgumentsLimit = 256
)

// allowedContentTypes is the CRS tx.allowed_request_content_type list (920420): the CRS 4
// defaults plus the API, report and upload types of normal applications.
const allowedContentTypes = "|application/x-www-form-urlencoded| |multipart/form-data| |multipart/related| " +
	"|text/xml| |application/xml| |application/soap+xml| |application/json| |application/cloudevents+json| " +
	"|application/cloudevents-batch+json| |application/merge-patch+json| |application/json-patch+json| " +
	"|application/problem+json| |application/vnd.api+json| |application/ld+json| |application/hal+json| " +
	"|application/csp-report| |application/reports+json| |application/x-ndjson| |application/graphql| " +
	"|text/plain| |text/csv| |application/octet-stream| |application/grpc| |application/grpc+proto| " +
	"|application/grpc-web| |application/grpc-web+proto| |application/x-protobuf| |application/protobuf| " +
	"|image/png| |image/jpeg| |image/gif| |image/webp| |image/avif| |application/pdf| |application/zip| " +
	"|application/gzip| |video/mp4| |audio/mpeg|"

// Config of one WAF instance. Zero fields take the defaults.
type Config struct {
	ParanoiaLevel    int                 // 1..4
	AnomalyThreshold int                 // inbound anomaly score that makes a finding
	BodyLimit        int                 // request body bytes inspected (the rest is not)
	ArgumentsLimit   int                 // arguments evaluated per request (DefaultArgumentsLimit)
	Action           policy.SensorAction // alert|block; empty: the group's mode decides
	Exclusions       []policy.WAFExclusion
	Log              *slog.Logger // optional
}

// FromPolicy converts a Group's spec.sensors.waf.
func FromPolicy(s *policy.WAFSensor, log *slog.Logger) Config {
	return Config{ParanoiaLevel: s.ParanoiaLevel, AnomalyThreshold: s.AnomalyThreshold, BodyLimit: s.BodyLimit,
		ArgumentsLimit: s.ArgumentsLimit, Action: s.Action, Exclusions: s.Exclusions, Log: log}
}

func (c Config) withDefaults() (Config, error) {
	if c.ParanoiaLevel == 0 {
		c.ParanoiaLevel = DefaultParanoiaLevel
	}
	if c.ParanoiaLevel < 1 || c.ParanoiaLevel > 4 {
		return c, fmt.Errorf("waf: paranoiaLevel %d is out of range (allowed: 1, 2, 3, 4)", c.ParanoiaLevel)
	}
	if c.AnomalyThreshold == 0 {
		c.AnomalyThreshold = DefaultAnomalyThreshold
	}
	if c.AnomalyThreshold < 0 {
		return c, fmt.Errorf("waf: anomalyThreshold %d must be positive", c.AnomalyThreshold)
	}
	if c.BodyLimit == 0 {
		c.BodyLimit = DefaultBodyLimit
	}
	if c.BodyLimit < 0 {
		return c, fmt.Errorf("waf: bodyLimit %d must be positive", c.BodyLimit)
	}
	if c.ArgumentsLimit == 0 {
		c.ArgumentsLimit = DefaultArgumentsLimit
	}
	if c.ArgumentsLimit < 0 {
		return c, fmt.Errorf("waf: argumentsLimit %d must be positive", c.ArgumentsLimit)
	}
	if c.Action != "" && c.Action != policy.SensorAlert && c.Action != policy.SensorBlock {
		return c, fmt.Errorf("waf: action %q is not an action (allowed: alert, block)", c.Action)
	}
	if len(c.Exclusions) > 64 {
		return c, fmt.Errorf("waf: %d exclusions; at most 64", len(c.Exclusions))
	}
	for i, x := range c.Exclusions {
		if field, problem := x.Check(); field != "" {
			return c, fmt.Errorf("waf: exclusions[%d].%s: %s", i, field, problem)
		}
	}
	return c, nil
}

// exclusionDirectives turns the (validated) exclusions into Coraza directives placed after the
// CRS: without a path, configure-time target updates or removals; with one, a phase-1 rule
// that removes them for the requests under that path only.
func exclusionDirectives(xs []policy.WAFExclusion) []string {
	var out []string
	for i, x := range xs {
		if x.PathPrefix == "" {
			for _, r := range x.Rules {
				id := strconv.Itoa(r)
				if len(x.Targets) == 0 {
					out = append(out, "SecRuleRemoveById "+id)
					continue
				}
				for _, t := range x.Targets {
					out = append(out, "SecRuleUpdateTargetById "+id+` "!`+t+`"`)
				}
			}
			continue
		}
		var ctl []string
		for _, r := range x.Rules {
			id := strconv.Itoa(r)
			if len(x.Targets) == 0 {
				ctl = append(ctl, "ctl:ruleRemoveById="+id)
				continue
			}
			for _, t := range x.Targets {
				ctl = append(ctl, "ctl:ruleRemoveTargetById="+id+";"+t)
			}
		}
		out = append(out, `SecRule REQUEST_FILENAME "@beginsWith `+x.PathPrefix+`" "id:`+strconv.Itoa(9001000+i)+
			`,phase:1,pass,nolog,t:none,`+strings.Join(ctl, ",")+`"`)
	}
	return out
}

// Key identifies the rule set a Config builds, so callers can share WAFs between groups.
func (c Config) Key() string {
	c, _ = c.withDefaults()
	k := fmt.Sprintf("pl%d/t%d/b%d/a%d", c.ParanoiaLevel, c.AnomalyThreshold, c.BodyLimit, c.ArgumentsLimit)
	if len(c.Exclusions) > 0 {
		k += "/x" + strings.Join(exclusionDirectives(c.Exclusions), "\n")
	}
	return k
}

// WAF evaluates requests against the CRS. Safe for concurrent use.
type WAF struct {
	cfg Config
	waf coraza.WAF
}

// New builds the rule set (expensive: build once per Config and reuse).
func New(cfg Config) (*WAF, error) { return newWAF(cfg) }

// newWAF is New with extra directives after the CRS (tests measure rule removals with it).
func newWAF(cfg Config, extra ...string) (*WAF, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	directives := strings.Join([]string{
		"Include @coraza.conf-recommended",
		"SecRuleEngine On",
		"SecRequestBodyAccess On",
		"SecRequestBodyLimit " + strconv.Itoa(cfg.BodyLimit),
		"SecRequestBodyInMemoryLimit " + strconv.Itoa(cfg.BodyLimit),
		"SecRequestBodyLimitAction ProcessPartial",
		"SecArgumentsLimit " + strconv.Itoa(cfg.ArgumentsLimit),
		"SecResponseBodyAccess Off",
		"SecAuditEngine Off", // findings become meshguard events; no Coraza audit log
		// 200002 (body not parseable) denies outright. A body cut at the inspection bound is
		// never parseable as JSON or XML, so every large JSON upload was refused: the rule only
		// marks the error here, and Inspect reports it when the body was whole.
		"SecRuleRemoveById 200002",
		`SecRule REQBODY_ERROR "!@eq 0" "id:` + strconv.Itoa(reqBodyErrorRule) + `,phase:2,t:none,pass,log,msg:'Failed to parse request body.',logdata:'%{reqbody_error_msg}'"`,
		"Include @crs-setup.conf.example",
		`SecAction "id:900000,phase:1,pass,t:none,nolog,setvar:tx.blocking_paranoia_level=` + strconv.Itoa(cfg.ParanoiaLevel) + `"`,
		`SecAction "id:900110,phase:1,pass,t:none,nolog,setvar:tx.inbound_anomaly_score_threshold=` + strconv.Itoa(cfg.AnomalyThreshold) + `,setvar:tx.outbound_anomaly_score_threshold=4"`,
		// REST verbs and API content types are normal traffic (issue 7).
		`SecAction "id:900200,phase:1,pass,t:none,nolog,setvar:'tx.allowed_methods=GET HEAD POST OPTIONS PUT PATCH DELETE'"`,
		// ...and so are the content types REST services, browsers and upload clients send,
		// beyond the CRS default list (920420 is critical: one unlisted type blocks): JSON:API,
		// JSON-LD/HAL, browser CSP and Reporting API reports, gRPC/protobuf, and raw binary
		// uploads (PUT of an image, PDF or archive, as object stores take them).
		`SecAction "id:900220,phase:1,pass,t:none,nolog,setvar:'tx.allowed_request_content_type=` + allowedContentTypes + `'"`,
		// Coraza (unlike ModSecurity, corazawaf/coraza#938) parses a body of any type without a
		// body processor as a URL-encoded form once the CRS forces body inspection (901340): a
		// PNG or protobuf body becomes garbage argument names (PNG bytes as ARGS_NAMES trip
		// 921150/920270). Binary types are never forms to the application, so they get the RAW
		// processor (REQUEST_BODY only, as ModSecurity does); text types and a missing
		// Content-Type keep the form fallback, because JSON sent as text/plain still reaches
		// many JSON handlers.
		`SecRule REQUEST_HEADERS:Content-Type "@rx ^(?:(?:image|audio|video|font)/|application/(?:octet-stream|pdf|zip|gzip|x-gzip|x-tar|x-7z-compressed|protobuf|x-protobuf|grpc|wasm))" "id:9000010,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=RAW"`,
		// 920120 (multipart bypass) rejects any ' " ; = \ in upload file names, so every
		// "John's CV.pdf" or "my file's name.png" upload is blocked (benign.txt 2420, 2558,
		// 2583, 2627). A lone apostrophe in a file name cannot re-quote the Content-Disposition
		// parameter; the bypasses need a double quote, =, ;, \ or paired quotes. So when every
		// uploaded file name is free of those, 920120 skips FILES (file names); FILES_NAMES
		// (field names) and the 922 multipart rules are untouched. Measured after: the CRS's
		// 920120 tests all still detected (TestCRSSuiteWAF).
		`SecRule FILES "@rx [\"=;\\\\]|'[^']*'" "id:9000020,phase:2,t:none,pass,nolog,setvar:tx.meshguard_unsafe_filename=1"`,
		`SecRule &TX:meshguard_unsafe_filename "@eq 0" "id:9000021,phase:2,t:none,pass,nolog,ctl:ruleRemoveTargetById=920120;FILES"`,
		"Include @owasp_crs/*.conf",
		strings.Join(exclusionDirectives(cfg.Exclusions), "\n"),
		strings.Join(extra, "\n"),
	}, "\n")
	w, err := coraza.NewWAF(coraza.NewWAFConfig().WithRootFS(coreruleset.FS).WithDirectives(directives))
	if err != nil {
		return nil, fmt.Errorf("waf: building the core rule set (paranoia %d): %w", cfg.ParanoiaLevel, err)
	}
	return &WAF{cfg: cfg, waf: w}, nil
}

// Config returns the effective configuration (defaults applied).
func (w *WAF) Config() Config { return w.cfg }

// Inspect evaluates one request and appends at most one finding (detector "waf") when the
// inbound anomaly score reaches the threshold. The finding names the highest-scoring CRS rule
// (RuleID), lists every matched attack rule in Message, and carries the matched data as evidence.
func (w *WAF) Inspect(r *threat.HTTPRequest, dst []threat.Finding) []threat.Finding {
	tx := w.waf.NewTransaction()
	defer func() {
		tx.ProcessLogging()
		_ = tx.Close()
	}()
	if it := w.evaluate(tx, r); it != nil {
		return append(dst, w.finding(it, tx.MatchedRules()))
	}
	if truncated(r, r.Body, w.cfg.BodyLimit) {
		return dst // a cut body does not parse; that says nothing about the request
	}
	for _, m := range tx.MatchedRules() {
		if m.Rule().ID() == reqBodyErrorRule {
			// A whole body the application would fail to parse as its declared type: as
			// Coraza's 200002 did, a finding (parser differentials hide attacks).
			f := threat.NewFinding(threat.WAFAnomaly, "REQUEST_BODY", nil, "request body does not parse as its Content-Type: "+m.Data())
			f.RuleID = 200002
			return append(dst, f)
		}
	}
	return dst
}

// truncated says the body the WAF sees is a prefix of the request's.
func truncated(r *threat.HTTPRequest, body []byte, limit int) bool {
	return r.BodyTruncated || len(body) >= limit
}

// structuredBody says the body goes to a parser that needs the whole document (JSON, XML).
func structuredBody(r *threat.HTTPRequest) bool {
	ct := r.ContentType
	if len(ct) == 0 {
		ct = r.Header("Content-Type")
	}
	c := strings.ToLower(string(ct))
	return strings.Contains(c, "json") || strings.Contains(c, "xml")
}

// reqBodyErrorRule marks an unparseable request body without denying (see newWAF).
const reqBodyErrorRule = 9000030

// evaluate runs phases 1 and 2 of the CRS on r in tx and returns the interruption, if any.
func (w *WAF) evaluate(tx types.Transaction, r *threat.HTTPRequest) *types.Interruption {
	tx.ProcessConnection("127.0.0.1", 0, "127.0.0.1", 0)
	proto := string(r.Proto)
	if proto == "" {
		proto = "HTTP/1.1"
	}
	tx.ProcessURI(string(r.URI), string(r.Method), proto)
	for _, h := range r.Headers {
		tx.AddRequestHeader(string(h.Name), string(h.Value))
		if len(h.Name) == 4 && strings.EqualFold(string(h.Name), "host") {
			tx.SetServerName(string(h.Value))
		}
	}
	if len(r.ContentType) > 0 && r.Header("Content-Type") == nil {
		tx.AddRequestHeader("Content-Type", string(r.ContentType))
	}
	it := tx.ProcessRequestHeaders()
	if it == nil && len(r.Body) > 0 && tx.IsRequestBodyAccessible() {
		body := r.DecodedBody(nil, w.cfg.BodyLimit)
		// A JSON or XML body cut at the bound cannot be parsed, and Coraza's handling of the
		// failed parse cost ~0.7 s of CPU per 100 KB request: such a body is left to the
		// built-in detectors (which walk a cut document), the rest of the request to the CRS.
		if !(truncated(r, body, w.cfg.BodyLimit) && structuredBody(r)) {
			if it2, _, err := tx.WriteRequestBody(body); err == nil && it2 != nil {
				it = it2
			}
		}
	}
	if it == nil {
		var err error
		it, err = tx.ProcessRequestBody()
		if err != nil && w.cfg.Log != nil {
			w.cfg.Log.Debug("waf: request body", "err", err)
		}
	}
	return it
}

func (w *WAF) finding(it *types.Interruption, matched []types.MatchedRule) threat.Finding {
	var (
		msgs    []string
		best    types.MatchedRule
		bestSev = types.RuleSeverity(99)
	)
	for _, m := range matched {
		id := m.Rule().ID()
		// Skip CRS bookkeeping (initialisation, blocking evaluation, correlation) and unlabelled
		// rules; keep Coraza's own disruptive ones (200002: request body could not be parsed).
		if m.Message() == "" || (id < 911000 && (id >= 900000 || !m.Disruptive())) || (id >= 949000 && id < 950000) || id >= 980000 {
			continue
		}
		if len(msgs) < 8 {
			msgs = append(msgs, strconv.Itoa(id)+" "+m.Message())
		}
		if sev := m.Rule().Severity(); best == nil || sev < bestSev { // lower value = more severe
			best, bestSev = m, sev
		}
	}
	f := threat.NewFinding(threat.WAFAnomaly, "request", nil, "")
	f.RuleID = it.RuleID
	if best != nil {
		f.RuleID = best.Rule().ID()
		for _, md := range best.MatchedDatas() {
			f.Location = md.Variable().Name()
			if k := md.Key(); k != "" {
				f.Location += ":" + k
			}
			f.Evidence = threat.CapEvidence([]byte(md.Value()))
			break
		}
	}
	f.Message = "CRS anomaly threshold reached: " + strings.Join(msgs, "; ")
	return f
}
