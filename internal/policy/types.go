package policy

import (
	"fmt"
	"regexp"
	"strings"
)

// APIVersion is the only document version this package understands.
const APIVersion = "meshguard.io/v1alpha1"

// Kinds of policy documents.
const (
	KindGroup          = "Group"
	KindNetworkRule    = "NetworkRule"
	KindProcessProfile = "ProcessProfile"
	KindFileRule       = "FileRule"
	KindResponseRule   = "ResponseRule"
)

// Kinds lists every kind in export order.
func Kinds() []string {
	return []string{KindGroup, KindNetworkRule, KindProcessProfile, KindFileRule, KindResponseRule}
}

// Mode is how a group treats traffic that no rule decides.
type Mode string

const (
	ModeDiscover Mode = "discover" // allow and learn
	ModeMonitor  Mode = "monitor"  // allow and report a violation
	ModeProtect  Mode = "protect"  // deny
)

// Modes lists the valid modes.
func Modes() []string {
	return []string{string(ModeDiscover), string(ModeMonitor), string(ModeProtect)}
}

// strictness orders modes so the strictest of several destination groups wins.
func (m Mode) strictness() int {
	switch m {
	case ModeProtect:
		return 2
	case ModeMonitor:
		return 1
	}
	return 0
}

// Action of a network rule.
type Action string

const (
	ActionAllow Action = "allow"
	ActionDeny  Action = "deny"
)

// SensorAction is what a sensor or file rule does on a match.
type SensorAction string

const (
	SensorAlert SensorAction = "alert"
	SensorBlock SensorAction = "block"
)

// TypeMeta is the apiVersion/kind header of every document.
type TypeMeta struct {
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	Kind       string `yaml:"kind" json:"kind"`
}

// ObjectMeta names a document. An empty Namespace makes the object cluster-scoped (platform
// team); a namespaced object may only protect its own namespace's groups.
type ObjectMeta struct {
	Name      string            `yaml:"name" json:"name"`
	Namespace string            `yaml:"namespace,omitempty" json:"namespace,omitempty"`
	Labels    map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
}

// Key is "namespace/name", or "name" for cluster-scoped objects. Names cannot contain '/', so
// keys are unambiguous.
func (m ObjectMeta) Key() string { return Key(m.Namespace, m.Name) }

// Key joins a namespace and a name the way ObjectMeta.Key does.
func Key(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// SplitKey is the inverse of Key.
func SplitKey(key string) (namespace, name string) {
	if i := strings.IndexByte(key, '/'); i >= 0 {
		return key[:i], key[i+1:]
	}
	return "", key
}

// Source says where a document was loaded from; it is not part of the document.
type Source struct {
	File  string
	Line  int
	lines map[string]int // field path ("spec.to.group", "spec.ports[1]") -> line
}

// lineOf returns the line of a field path, else of its nearest parent, else of the document.
func (s Source) lineOf(path string) int {
	for path != "" {
		if l, ok := s.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return s.Line
}

// Group selects workloads (or, for external groups, addresses and DNS names) and carries the
// mode that decides traffic to them when no rule does.
type Group struct {
	TypeMeta `yaml:",inline" json:",inline"`
	Metadata ObjectMeta `yaml:"metadata" json:"metadata"`
	Spec     GroupSpec  `yaml:"spec" json:"spec"`
	Source   Source     `yaml:"-" json:"-"`
}

// GroupSpec holds a group's criteria; all given criteria must hold (AND).
type GroupSpec struct {
	Selector       *LabelSelector `yaml:"selector,omitempty" json:"selector,omitempty"`
	Namespace      string         `yaml:"namespace,omitempty" json:"namespace,omitempty"`
	ServiceAccount string         `yaml:"serviceAccount,omitempty" json:"serviceAccount,omitempty"`
	External       *External      `yaml:"external,omitempty" json:"external,omitempty"`
	Mode           Mode           `yaml:"mode" json:"mode"`
	Sensors        *Sensors       `yaml:"sensors,omitempty" json:"sensors,omitempty"`
}

// External describes destinations outside the mesh.
type External struct {
	CIDRs    []string `yaml:"cidrs,omitempty" json:"cidrs,omitempty"`
	DNSNames []string `yaml:"dnsNames,omitempty" json:"dnsNames,omitempty"` // exact or "*.suffix"
}

// LabelSelector is the Kubernetes label selector.
type LabelSelector struct {
	MatchLabels      map[string]string `yaml:"matchLabels,omitempty" json:"matchLabels,omitempty"`
	MatchExpressions []LabelExpression `yaml:"matchExpressions,omitempty" json:"matchExpressions,omitempty"`
}

// LabelExpression is one matchExpressions entry.
type LabelExpression struct {
	Key      string   `yaml:"key" json:"key"`
	Operator string   `yaml:"operator" json:"operator"` // In, NotIn, Exists, DoesNotExist
	Values   []string `yaml:"values,omitempty" json:"values,omitempty"`
}

// Label selector operators.
const (
	OpIn           = "In"
	OpNotIn        = "NotIn"
	OpExists       = "Exists"
	OpDoesNotExist = "DoesNotExist"
)

// Matches reports whether labels satisfy the selector. A nil or empty selector matches all.
func (s *LabelSelector) Matches(labels map[string]string) bool {
	if s == nil {
		return true
	}
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		got, ok := labels[e.Key]
		switch e.Operator {
		case OpExists:
			if !ok {
				return false
			}
		case OpDoesNotExist:
			if ok {
				return false
			}
		case OpIn:
			if !ok || !contains(e.Values, got) {
				return false
			}
		case OpNotIn:
			if ok && contains(e.Values, got) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Sensors are the opt-in, heavier inspections of a group's traffic.
type Sensors struct {
	WAF *WAFSensor `yaml:"waf,omitempty" json:"waf,omitempty"`
	DLP *DLPSensor `yaml:"dlp,omitempty" json:"dlp,omitempty"`
}

// WAFSensor runs the OWASP Core Rule Set on the group's HTTP traffic.
type WAFSensor struct {
	ParanoiaLevel    int          `yaml:"paranoiaLevel,omitempty" json:"paranoiaLevel,omitempty"`       // 1..4, default 1
	AnomalyThreshold int          `yaml:"anomalyThreshold,omitempty" json:"anomalyThreshold,omitempty"` // default 5
	BodyLimit        int          `yaml:"bodyLimit,omitempty" json:"bodyLimit,omitempty"`               // bytes inspected
	ArgumentsLimit   int          `yaml:"argumentsLimit,omitempty" json:"argumentsLimit,omitempty"`     // arguments the CRS evaluates; default 256
	Action           SensorAction `yaml:"action,omitempty" json:"action,omitempty"`                     // alert|block; default: from mode
	// Exclusions keep CRS rules off the fields that legitimately carry what they look for
	// (a Markdown editor's body, a search box), the way the CRS's application exclusion
	// packages do; the rest of the request stays inspected by those rules.
	Exclusions []WAFExclusion `yaml:"exclusions,omitempty" json:"exclusions,omitempty"`
}

// WAFExclusion removes CRS rules, or only some of their targets, for requests under a path.
type WAFExclusion struct {
	Rules      []int    `yaml:"rules" json:"rules"`                               // CRS rule IDs, e.g. 942100
	Targets    []string `yaml:"targets,omitempty" json:"targets,omitempty"`       // e.g. ARGS:comment, ARGS:json.body; none: the whole rule
	PathPrefix string   `yaml:"pathPrefix,omitempty" json:"pathPrefix,omitempty"` // e.g. /api/posts; none: every path
}

// wafTarget is what an exclusion target may name: a collection, optionally one key of it. The
// value is written into a Coraza directive, so nothing outside this shape is accepted.
var wafTarget = regexp.MustCompile(`^(ARGS|ARGS_GET|ARGS_POST|ARGS_NAMES|REQUEST_COOKIES|REQUEST_COOKIES_NAMES|REQUEST_HEADERS|FILES|FILES_NAMES|XML)(:[A-Za-z0-9_.\-\[\]]{1,128})?$`)

// wafPath is what an exclusion's pathPrefix may be (it is written into a Coraza directive).
var wafPath = regexp.MustCompile(`^/[A-Za-z0-9._~%/-]{0,255}$`)

// Check says what is wrong with an exclusion, naming the field; nil when it is valid.
func (x WAFExclusion) Check() (field, problem string) {
	if len(x.Rules) == 0 || len(x.Rules) > 64 {
		return "rules", "want 1 to 64 CRS rule IDs, e.g. [942100]"
	}
	for _, r := range x.Rules {
		if r < 900000 || r > 999999 {
			return "rules", fmt.Sprintf("%d is not a CRS rule ID (they run from 900000 to 999999)", r)
		}
	}
	if len(x.Targets) > 32 {
		return "targets", "at most 32 targets"
	}
	for _, t := range x.Targets {
		if !wafTarget.MatchString(t) {
			return "targets", fmt.Sprintf("%q: want COLLECTION or COLLECTION:key, e.g. ARGS:comment, ARGS:json.body, REQUEST_COOKIES:prefs (collections: ARGS, ARGS_GET, ARGS_POST, ARGS_NAMES, REQUEST_COOKIES, REQUEST_COOKIES_NAMES, REQUEST_HEADERS, FILES, FILES_NAMES, XML)", t)
		}
	}
	if x.PathPrefix != "" && !wafPath.MatchString(x.PathPrefix) {
		return "pathPrefix", fmt.Sprintf("%q: want an absolute path of letters, digits and ._~%%/- (e.g. /api/posts)", x.PathPrefix)
	}
	return "", ""
}

// DLPSensor looks for sensitive data in requests and responses.
type DLPSensor struct {
	Patterns []string        `yaml:"patterns,omitempty" json:"patterns,omitempty"` // built-in pattern names
	Custom   []CustomPattern `yaml:"custom,omitempty" json:"custom,omitempty"`
	Action   SensorAction    `yaml:"action,omitempty" json:"action,omitempty"`
}

// CustomPattern is a user regular expression for the DLP sensor.
type CustomPattern struct {
	Name  string `yaml:"name" json:"name"`
	Regex string `yaml:"regex" json:"regex"`
}

// DLPPatterns lists the built-in DLP pattern names.
func DLPPatterns() []string {
	return []string{"credit-card", "aws-access-key", "gcp-api-key", "github-token", "private-key",
		"slack-token", "us-ssn", "iban", "email"}
}

// NetworkRule allows or denies traffic from one group to another.
type NetworkRule struct {
	TypeMeta `yaml:",inline" json:",inline"`
	Metadata ObjectMeta      `yaml:"metadata" json:"metadata"`
	Spec     NetworkRuleSpec `yaml:"spec" json:"spec"`
	Source   Source          `yaml:"-" json:"-"`
}

// GroupRef names a group. An empty Namespace means the referencing object's namespace (falling
// back to a cluster-scoped group of that name).
type GroupRef struct {
	Group     string `yaml:"group" json:"group"`
	Namespace string `yaml:"namespace,omitempty" json:"namespace,omitempty"`
}

// NetworkRuleSpec is the rule body.
type NetworkRuleSpec struct {
	From         GroupRef `yaml:"from" json:"from"`
	To           GroupRef `yaml:"to" json:"to"`
	Ports        []string `yaml:"ports" json:"ports"`               // "tcp/6379", "udp/53", "tcp/8000-8100", "any"
	Applications []string `yaml:"applications" json:"applications"` // "redis", "http", "any"
	L7           *L7      `yaml:"l7,omitempty" json:"l7,omitempty"`
	Action       Action   `yaml:"action" json:"action"`
	Priority     int      `yaml:"priority,omitempty" json:"priority,omitempty"` // lower is evaluated first
	Learned      bool     `yaml:"learned,omitempty" json:"learned,omitempty"`
	Comment      string   `yaml:"comment,omitempty" json:"comment,omitempty"`
}

// L7 narrows a rule to some requests of its application. A rule with an L7 section only
// matches applications that section is about (http for http/http2, grpc, dns, redis, sql for
// postgres/mysql); every given list must match (AND).
type L7 struct {
	HTTP  *HTTPMatch  `yaml:"http,omitempty" json:"http,omitempty"`
	GRPC  *GRPCMatch  `yaml:"grpc,omitempty" json:"grpc,omitempty"`
	DNS   *DNSMatch   `yaml:"dns,omitempty" json:"dns,omitempty"`
	Redis *RedisMatch `yaml:"redis,omitempty" json:"redis,omitempty"`
	SQL   *SQLMatch   `yaml:"sql,omitempty" json:"sql,omitempty"`
}

// HTTPMatch matches HTTP requests.
type HTTPMatch struct {
	Methods []string `yaml:"methods,omitempty" json:"methods,omitempty"` // GET, POST... (case-insensitive)
	Paths   []string `yaml:"paths,omitempty" json:"paths,omitempty"`     // path prefixes, each starting with '/'
	Hosts   []string `yaml:"hosts,omitempty" json:"hosts,omitempty"`     // exact or "*.suffix", port ignored
}

// GRPCMatch matches gRPC calls.
type GRPCMatch struct {
	Services []string `yaml:"services,omitempty" json:"services,omitempty"` // "pkg.Service"
	Methods  []string `yaml:"methods,omitempty" json:"methods,omitempty"`   // "pkg.Service/Method" or "Method"
}

// DNSMatch matches DNS queries by name.
type DNSMatch struct {
	Names []string `yaml:"names,omitempty" json:"names,omitempty"` // exact or "*.suffix"
}

// RedisMatch matches Redis commands.
type RedisMatch struct {
	AllowCommands []string `yaml:"allowCommands,omitempty" json:"allowCommands,omitempty"` // if set, only these
	DenyCommands  []string `yaml:"denyCommands,omitempty" json:"denyCommands,omitempty"`   // never these
}

// SQLMatch matches PostgreSQL/MySQL statements by verb.
type SQLMatch struct {
	Verbs     []string `yaml:"verbs,omitempty" json:"verbs,omitempty"`         // if set, only these
	DenyVerbs []string `yaml:"denyVerbs,omitempty" json:"denyVerbs,omitempty"` // never these
}

// ProcessProfile lists the executables a group's workloads may run (enforced by the agent).
type ProcessProfile struct {
	TypeMeta `yaml:",inline" json:",inline"`
	Metadata ObjectMeta         `yaml:"metadata" json:"metadata"`
	Spec     ProcessProfileSpec `yaml:"spec" json:"spec"`
	Source   Source             `yaml:"-" json:"-"`
}

// ProcessProfileSpec is the profile body.
type ProcessProfileSpec struct {
	Group     GroupRef       `yaml:"group" json:"group"`
	Mode      Mode           `yaml:"mode,omitempty" json:"mode,omitempty"` // default: the group's mode
	Processes []ProcessEntry `yaml:"processes,omitempty" json:"processes,omitempty"`
}

// ProcessEntry is one allowed executable; at least one of Name and Path is set.
type ProcessEntry struct {
	Name    string `yaml:"name,omitempty" json:"name,omitempty"`
	Path    string `yaml:"path,omitempty" json:"path,omitempty"`
	Learned bool   `yaml:"learned,omitempty" json:"learned,omitempty"`
}

// FileRule watches sensitive paths of a group's workloads.
type FileRule struct {
	TypeMeta `yaml:",inline" json:",inline"`
	Metadata ObjectMeta   `yaml:"metadata" json:"metadata"`
	Spec     FileRuleSpec `yaml:"spec" json:"spec"`
	Source   Source       `yaml:"-" json:"-"`
}

// FileRuleSpec is the file rule body.
type FileRuleSpec struct {
	Group  GroupRef     `yaml:"group" json:"group"`
	Paths  []string     `yaml:"paths" json:"paths"`                       // absolute; a trailing '/' watches a directory tree
	Access []string     `yaml:"access,omitempty" json:"access,omitempty"` // read, write, exec; default all
	Action SensorAction `yaml:"action" json:"action"`
}

// FileAccesses lists valid FileRuleSpec.Access values.
func FileAccesses() []string { return []string{"read", "write", "exec"} }

// ResponseRule maps matching events to response actions.
type ResponseRule struct {
	TypeMeta `yaml:",inline" json:",inline"`
	Metadata ObjectMeta       `yaml:"metadata" json:"metadata"`
	Spec     ResponseRuleSpec `yaml:"spec" json:"spec"`
	Source   Source           `yaml:"-" json:"-"`
}

// ResponseRuleSpec is the response rule body.
type ResponseRuleSpec struct {
	Match   EventMatch `yaml:"match" json:"match"`
	Actions []string   `yaml:"actions" json:"actions"`
	Comment string     `yaml:"comment,omitempty" json:"comment,omitempty"`
}

// EventMatch selects events; every given field must match.
type EventMatch struct {
	Kind     string    `yaml:"kind,omitempty" json:"kind,omitempty"`         // connection, violation, threat, incident, audit
	Name     string    `yaml:"name,omitempty" json:"name,omitempty"`         // detector or rule name
	Severity string    `yaml:"severity,omitempty" json:"severity,omitempty"` // minimum: info, low, medium, high, critical
	Group    *GroupRef `yaml:"group,omitempty" json:"group,omitempty"`
}

// EventKinds, Severities and ResponseActions list the valid values of a response rule.
func EventKinds() []string { return []string{"connection", "violation", "threat", "incident", "audit"} }

// Severities in increasing order.
func Severities() []string { return []string{"info", "low", "medium", "high", "critical"} }

// ResponseActions lists the valid response actions.
func ResponseActions() []string {
	return []string{"alert", "block", "quarantine", "capture", "webhook", "syslog", "suppress"}
}

// Set is a whole policy, or one apply's worth of documents.
type Set struct {
	Groups          []Group
	NetworkRules    []NetworkRule
	ProcessProfiles []ProcessProfile
	FileRules       []FileRule
	ResponseRules   []ResponseRule
}

// Len is the number of documents in the set.
func (s *Set) Len() int {
	return len(s.Groups) + len(s.NetworkRules) + len(s.ProcessProfiles) + len(s.FileRules) + len(s.ResponseRules)
}

// Clone returns a copy whose slices can be changed without touching s (documents are copied
// shallowly: treat their inner slices as read-only).
func (s *Set) Clone() *Set {
	return &Set{
		Groups:          append([]Group(nil), s.Groups...),
		NetworkRules:    append([]NetworkRule(nil), s.NetworkRules...),
		ProcessProfiles: append([]ProcessProfile(nil), s.ProcessProfiles...),
		FileRules:       append([]FileRule(nil), s.FileRules...),
		ResponseRules:   append([]ResponseRule(nil), s.ResponseRules...),
	}
}

// Merge returns a copy of s with every document of in added, replacing documents of the same
// kind, namespace and name (an apply). Validate the result before using it.
func (s *Set) Merge(in *Set) *Set {
	out := s.Clone()
	out.Groups = upsert(out.Groups, in.Groups, func(g Group) string { return g.Metadata.Key() })
	out.NetworkRules = upsert(out.NetworkRules, in.NetworkRules, func(r NetworkRule) string { return r.Metadata.Key() })
	out.ProcessProfiles = upsert(out.ProcessProfiles, in.ProcessProfiles, func(r ProcessProfile) string { return r.Metadata.Key() })
	out.FileRules = upsert(out.FileRules, in.FileRules, func(r FileRule) string { return r.Metadata.Key() })
	out.ResponseRules = upsert(out.ResponseRules, in.ResponseRules, func(r ResponseRule) string { return r.Metadata.Key() })
	return out
}

func upsert[T any](dst, src []T, key func(T) string) []T {
	idx := make(map[string]int, len(dst))
	for i, d := range dst {
		idx[key(d)] = i
	}
	for _, x := range src {
		if i, ok := idx[key(x)]; ok {
			dst[i] = x
			continue
		}
		idx[key(x)] = len(dst)
		dst = append(dst, x)
	}
	return dst
}

// Delete returns a copy of s without the document of that kind and key ("ns/name" or
// "name"), and whether it existed.
func (s *Set) Delete(kind, key string) (*Set, bool) {
	out := s.Clone()
	found := false
	switch kind {
	case KindGroup:
		out.Groups, found = remove(out.Groups, key, func(g Group) string { return g.Metadata.Key() })
	case KindNetworkRule:
		out.NetworkRules, found = remove(out.NetworkRules, key, func(r NetworkRule) string { return r.Metadata.Key() })
	case KindProcessProfile:
		out.ProcessProfiles, found = remove(out.ProcessProfiles, key, func(r ProcessProfile) string { return r.Metadata.Key() })
	case KindFileRule:
		out.FileRules, found = remove(out.FileRules, key, func(r FileRule) string { return r.Metadata.Key() })
	case KindResponseRule:
		out.ResponseRules, found = remove(out.ResponseRules, key, func(r ResponseRule) string { return r.Metadata.Key() })
	}
	return out, found
}

func remove[T any](list []T, key string, k func(T) string) ([]T, bool) {
	for i, x := range list {
		if k(x) == key {
			return append(list[:i:i], list[i+1:]...), true
		}
	}
	return list, false
}

// Group returns the group with that key.
func (s *Set) Group(key string) (*Group, bool) {
	for i := range s.Groups {
		if s.Groups[i].Metadata.Key() == key {
			return &s.Groups[i], true
		}
	}
	return nil, false
}

// SetMode returns a copy of s with the group's mode changed (`meshguard mode set`).
func (s *Set) SetMode(groupKey string, m Mode) (*Set, error) {
	if !validMode(m) {
		return nil, fieldErr(Source{}, KindGroup, groupKey, "spec.mode", "%q is not a mode (allowed: %s)", m, strings.Join(Modes(), ", "))
	}
	out := s.Clone()
	g, ok := out.Group(groupKey)
	if !ok {
		return nil, &FieldError{Kind: KindGroup, Object: groupKey, Msg: "no such group (known: " + strings.Join(groupKeys(s), ", ") + ")"}
	}
	g.Spec.Mode = m
	return out, nil
}

func validMode(m Mode) bool { return m == ModeDiscover || m == ModeMonitor || m == ModeProtect }

// ObjectRef names one document of a set.
type ObjectRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// Objects lists every document of the set (for RBAC checks on an apply: a namespace editor
// may only submit objects of its namespace; for audit records; for `get`).
func (s *Set) Objects() []ObjectRef {
	out := make([]ObjectRef, 0, s.Len())
	for _, x := range s.Groups {
		out = append(out, ObjectRef{KindGroup, x.Metadata.Namespace, x.Metadata.Name})
	}
	for _, x := range s.NetworkRules {
		out = append(out, ObjectRef{KindNetworkRule, x.Metadata.Namespace, x.Metadata.Name})
	}
	for _, x := range s.ProcessProfiles {
		out = append(out, ObjectRef{KindProcessProfile, x.Metadata.Namespace, x.Metadata.Name})
	}
	for _, x := range s.FileRules {
		out = append(out, ObjectRef{KindFileRule, x.Metadata.Namespace, x.Metadata.Name})
	}
	for _, x := range s.ResponseRules {
		out = append(out, ObjectRef{KindResponseRule, x.Metadata.Namespace, x.Metadata.Name})
	}
	return out
}

// KindFromName maps what users type (`meshguard get rules`, `delete group x`) to a kind:
// any case, singular or plural, and the short forms "rule(s)" and "profile(s)".
func KindFromName(s string) (string, bool) {
	switch strings.TrimSuffix(strings.ToLower(s), "s") {
	case "group":
		return KindGroup, true
	case "networkrule", "rule", "netrule":
		return KindNetworkRule, true
	case "processprofile", "profile":
		return KindProcessProfile, true
	case "filerule":
		return KindFileRule, true
	case "responserule":
		return KindResponseRule, true
	}
	return "", false
}

// SetSensors returns a copy of s in which edit has changed the group's sensors (`meshguard
// sensor enable|disable`); sensors left empty are removed. Validate the result.
func (s *Set) SetSensors(groupKey string, edit func(*Sensors)) (*Set, error) {
	out := s.Clone()
	g, ok := out.Group(groupKey)
	if !ok {
		return nil, &FieldError{Kind: KindGroup, Object: groupKey, Msg: "no such group (known: " + strings.Join(groupKeys(s), ", ") + ")"}
	}
	var sens Sensors
	if g.Spec.Sensors != nil {
		sens = *g.Spec.Sensors
		if sens.WAF != nil {
			w := *sens.WAF
			sens.WAF = &w
		}
		if sens.DLP != nil {
			d := *sens.DLP
			d.Patterns = append([]string(nil), d.Patterns...)
			d.Custom = append([]CustomPattern(nil), d.Custom...)
			sens.DLP = &d
		}
	}
	edit(&sens)
	if sens.WAF == nil && sens.DLP == nil {
		g.Spec.Sensors = nil
	} else {
		g.Spec.Sensors = &sens
	}
	return out, nil
}
