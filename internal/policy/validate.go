package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/meshguard/meshguard/internal/dpi"
)

// Validate checks a whole policy: every document on its own, then references across documents
// (unknown groups, namespace scoping), duplicate names and conflicting rules. It returns every
// problem found, joined; a set that fails must not be applied at all.
func (s *Set) Validate() error {
	var errs []error
	add := func(e error) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	groups := map[string]*Group{}
	seen := map[string]Source{}
	dup := func(kind string, m ObjectMeta, src Source) {
		k := kind + "\x00" + m.Key()
		if first, ok := seen[k]; ok {
			add(fieldErr(src, kind, m.Key(), "metadata.name", "duplicate %s %q (first defined at %s:%d); names are unique per kind and namespace",
				kind, m.Key(), first.File, first.Line))
			return
		}
		seen[k] = src
	}
	for i := range s.Groups {
		g := &s.Groups[i]
		add(validateMeta(g.TypeMeta, KindGroup, g.Metadata, g.Source))
		dup(KindGroup, g.Metadata, g.Source)
		if _, ok := groups[g.Metadata.Key()]; !ok {
			groups[g.Metadata.Key()] = g
		}
		for _, e := range g.validate() {
			add(e)
		}
	}
	r := resolver{groups: groups, apps: map[string]bool{}}
	for _, a := range Applications() {
		r.apps[a] = true
	}
	for i := range s.NetworkRules {
		nr := &s.NetworkRules[i]
		add(validateMeta(nr.TypeMeta, KindNetworkRule, nr.Metadata, nr.Source))
		dup(KindNetworkRule, nr.Metadata, nr.Source)
		for _, e := range nr.validate(&r) {
			add(e)
		}
	}
	for i := range s.ProcessProfiles {
		p := &s.ProcessProfiles[i]
		add(validateMeta(p.TypeMeta, KindProcessProfile, p.Metadata, p.Source))
		dup(KindProcessProfile, p.Metadata, p.Source)
		for _, e := range p.validate(&r) {
			add(e)
		}
	}
	for i := range s.FileRules {
		f := &s.FileRules[i]
		add(validateMeta(f.TypeMeta, KindFileRule, f.Metadata, f.Source))
		dup(KindFileRule, f.Metadata, f.Source)
		for _, e := range f.validate(&r) {
			add(e)
		}
	}
	for i := range s.ResponseRules {
		rr := &s.ResponseRules[i]
		add(validateMeta(rr.TypeMeta, KindResponseRule, rr.Metadata, rr.Source))
		dup(KindResponseRule, rr.Metadata, rr.Source)
		for _, e := range rr.validate(&r) {
			add(e)
		}
	}
	errs = append(errs, conflicts(s.NetworkRules, &r)...)
	return errors.Join(errs...)
}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	nsRE      = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	labelKey  = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelVal  = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	appRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,31}$`)
	tokenRE   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,31}$`)
	hostRE    = regexp.MustCompile(`^(\*\.)?([A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9])?\.)*[A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9])?\.?$`)
	grpcSvcRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)
)

func validateMeta(tm TypeMeta, kind string, m ObjectMeta, src Source) error {
	var errs []error
	if tm.APIVersion != APIVersion {
		errs = append(errs, fieldErr(src, kind, m.Key(), "apiVersion", "%q is not supported (allowed: %s)", tm.APIVersion, APIVersion))
	}
	if m.Name == "" {
		errs = append(errs, fieldErr(src, kind, "", "metadata.name", "required"))
	} else if len(m.Name) > 253 || !nameRE.MatchString(m.Name) {
		errs = append(errs, fieldErr(src, kind, m.Key(), "metadata.name", "%q is not a valid name (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253)", m.Name))
	}
	if m.Namespace != "" && (len(m.Namespace) > 63 || !nsRE.MatchString(m.Namespace)) {
		errs = append(errs, fieldErr(src, kind, m.Key(), "metadata.namespace", "%q is not a valid namespace (lower-case letters, digits and '-', at most 63)", m.Namespace))
	}
	for _, k := range sortedKeys(m.Labels) {
		if err := checkLabel(k, m.Labels[k]); err != "" {
			errs = append(errs, fieldErr(src, kind, m.Key(), "metadata.labels."+k, "%s", err))
		}
	}
	return errors.Join(errs...)
}

func checkLabel(k, v string) string {
	if len(k) > 316 || !labelKey.MatchString(k) {
		return fmt.Sprintf("label key %q is not valid (optional DNS prefix/, then letters, digits, '-', '_', '.')", k)
	}
	if len(v) > 63 || !labelVal.MatchString(v) {
		return fmt.Sprintf("label value %q is not valid (at most 63 letters, digits, '-', '_', '.')", v)
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (g *Group) validate() []error {
	var errs []error
	src, key := g.Source, g.Metadata.Key()
	e := func(field, format string, args ...any) {
		errs = append(errs, fieldErr(src, KindGroup, key, field, format, args...))
	}
	sp := &g.Spec
	if sp.Mode == "" {
		e("spec.mode", "required (allowed: %s)", strings.Join(Modes(), ", "))
	} else if !validMode(sp.Mode) {
		e("spec.mode", "%q is not a mode (allowed: %s)", sp.Mode, strings.Join(Modes(), ", "))
	}
	if sp.Namespace != "" {
		if !nsRE.MatchString(sp.Namespace) {
			e("spec.namespace", "%q is not a valid namespace", sp.Namespace)
		} else if g.Metadata.Namespace != "" && sp.Namespace != g.Metadata.Namespace {
			e("spec.namespace", "a group in namespace %q can only select workloads of its own namespace; remove spec.namespace or make the group cluster-scoped", g.Metadata.Namespace)
		}
	}
	if sel := sp.Selector; sel != nil {
		for _, k := range sortedKeys(sel.MatchLabels) {
			if msg := checkLabel(k, sel.MatchLabels[k]); msg != "" {
				e("spec.selector.matchLabels."+k, "%s", msg)
			}
		}
		for i, x := range sel.MatchExpressions {
			f := "spec.selector.matchExpressions[" + strconv.Itoa(i) + "]"
			switch x.Operator {
			case OpIn, OpNotIn:
				if len(x.Values) == 0 {
					e(f+".values", "operator %s needs at least one value", x.Operator)
				}
			case OpExists, OpDoesNotExist:
				if len(x.Values) != 0 {
					e(f+".values", "operator %s takes no values", x.Operator)
				}
			default:
				e(f+".operator", "%q is not an operator (allowed: In, NotIn, Exists, DoesNotExist)", x.Operator)
			}
			if x.Key == "" {
				e(f+".key", "required")
			}
		}
	}
	if sp.ServiceAccount != "" && !nameRE.MatchString(sp.ServiceAccount) {
		e("spec.serviceAccount", "%q is not a valid service account name", sp.ServiceAccount)
	}
	if ex := sp.External; ex != nil {
		if sp.Selector != nil || sp.ServiceAccount != "" || sp.Namespace != "" {
			e("spec.external", "an external group selects addresses and names, not workloads: remove selector, serviceAccount and namespace, or split into two groups")
		}
		if len(ex.CIDRs) == 0 && len(ex.DNSNames) == 0 {
			e("spec.external", "needs cidrs or dnsNames")
		}
		for i, c := range ex.CIDRs {
			if _, err := ParseCIDR(c); err != nil {
				e("spec.external.cidrs["+strconv.Itoa(i)+"]", "%q is not a CIDR or address (e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)", c)
			}
		}
		for i, n := range ex.DNSNames {
			if len(n) > 253 || !hostRE.MatchString(n) {
				e("spec.external.dnsNames["+strconv.Itoa(i)+"]", "%q is not a DNS name or *.suffix wildcard", n)
			}
		}
	} else if g.Metadata.Namespace == "" && emptySelector(sp.Selector) && sp.ServiceAccount == "" && sp.Namespace == "" {
		e("spec", "a cluster-scoped group needs a criterion (selector, namespace, serviceAccount or external); it would otherwise select every workload")
	}
	if s := sp.Sensors; s != nil {
		if w := s.WAF; w != nil {
			if w.ParanoiaLevel != 0 && (w.ParanoiaLevel < 1 || w.ParanoiaLevel > 4) {
				e("spec.sensors.waf.paranoiaLevel", "%d is out of range (allowed: 1, 2, 3, 4)", w.ParanoiaLevel)
			}
			if w.AnomalyThreshold < 0 {
				e("spec.sensors.waf.anomalyThreshold", "must not be negative")
			}
			if w.BodyLimit < 0 {
				e("spec.sensors.waf.bodyLimit", "must not be negative")
			}
			if w.ArgumentsLimit < 0 || w.ArgumentsLimit > 10000 {
				e("spec.sensors.waf.argumentsLimit", "%d: want 1 to 10000 (each argument costs ~0.3 ms of CPU; default 256)", w.ArgumentsLimit)
			}
			if !validSensorAction(w.Action, true) {
				e("spec.sensors.waf.action", "%q is not an action (allowed: alert, block)", w.Action)
			}
			if len(w.Exclusions) > 64 {
				e("spec.sensors.waf.exclusions", "at most 64 exclusions")
			}
			for i, x := range w.Exclusions {
				if field, problem := x.Check(); field != "" {
					e(fmt.Sprintf("spec.sensors.waf.exclusions[%d].%s", i, field), "%s", problem)
				}
			}
		}
		if d := s.DLP; d != nil {
			for i, p := range d.Patterns {
				if !contains(DLPPatterns(), p) {
					e("spec.sensors.dlp.patterns["+strconv.Itoa(i)+"]", "unknown pattern %q (allowed: %s; or use custom)", p, strings.Join(DLPPatterns(), ", "))
				}
			}
			for i, c := range d.Custom {
				f := "spec.sensors.dlp.custom[" + strconv.Itoa(i) + "]"
				if c.Name == "" {
					e(f+".name", "required")
				}
				if _, err := regexp.Compile(c.Regex); err != nil || c.Regex == "" {
					e(f+".regex", "not a valid regular expression (RE2 syntax): %v", err)
				}
			}
			if len(d.Patterns) == 0 && len(d.Custom) == 0 {
				e("spec.sensors.dlp", "needs patterns or custom")
			}
			if !validSensorAction(d.Action, true) {
				e("spec.sensors.dlp.action", "%q is not an action (allowed: alert, block)", d.Action)
			}
		}
	}
	return errs
}

func validSensorAction(a SensorAction, optional bool) bool {
	return a == SensorAlert || a == SensorBlock || (optional && a == "")
}

// ParseCIDR parses an external group's cidrs entry: a prefix (masked to its network) or a
// bare address (a single-host prefix, IPv4-mapped IPv6 unmapped). Validation and the
// registry's address matching both use it, so what validates is what matches.
func ParseCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// resolver resolves group references the same way for validation and compilation.
type resolver struct {
	groups map[string]*Group
	apps   map[string]bool
}

// resolve returns the key of the group ref names, seen from an object in namespace ns.
func (r *resolver) resolve(ns string, ref GroupRef) (string, bool) {
	if ref.Namespace != "" {
		k := Key(ref.Namespace, ref.Group)
		_, ok := r.groups[k]
		return k, ok
	}
	if ns != "" {
		if _, ok := r.groups[Key(ns, ref.Group)]; ok {
			return Key(ns, ref.Group), true
		}
	}
	_, ok := r.groups[ref.Group]
	return ref.Group, ok
}

// known lists group names visible from namespace ns (its own and cluster-scoped), capped.
func (r *resolver) known(ns string) string {
	var out []string
	for k := range r.groups {
		gns, _ := SplitKey(k)
		if gns == ns || gns == "" {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	if len(out) > 20 {
		out = append(out[:20], "...")
	}
	if len(out) == 0 {
		return "none; create a Group first"
	}
	return strings.Join(out, ", ")
}

// checkRef validates one reference; protected means it is the side the object protects, which
// a namespaced object may only name in its own namespace.
func (r *resolver) checkRef(src Source, kind string, m ObjectMeta, field string, ref GroupRef, protected, allowExternal bool) (string, error) {
	if ref.Group == "" {
		return "", fieldErr(src, kind, m.Key(), field+".group", "required (known groups: %s)", r.known(m.Namespace))
	}
	key, ok := r.resolve(m.Namespace, ref)
	if !ok {
		where := ref.Namespace
		if where == "" {
			where = m.Namespace
		}
		scope := "cluster scope"
		if where != "" {
			scope = "namespace " + strconv.Quote(where) + " or cluster scope"
		}
		return "", fieldErr(src, kind, m.Key(), field+".group", "unknown group %q in %s (known: %s)", ref.Group, scope, r.known(where))
	}
	if protected && m.Namespace != "" {
		gns, _ := SplitKey(key)
		ext := r.groups[key].Spec.External != nil
		if gns != m.Namespace && !(allowExternal && gns == "" && ext) {
			return "", fieldErr(src, kind, m.Key(), field+".group", "group %q is outside namespace %q: a namespaced object may only protect its own namespace's groups (ask the platform team for a cluster-scoped rule)", key, m.Namespace)
		}
	}
	return key, nil
}

// Applications lists the application names rules may use: every protocol the DPI registry
// detects, plus "grpc" (gRPC is HTTP/2 with a gRPC content type: applications: [grpc]
// matches http2 traffic, and an l7.grpc section narrows it to the named services).
func Applications() []string {
	seen := map[string]bool{"grpc": true}
	for _, p := range dpi.DefaultProtocols() {
		seen[p.Name()] = true
	}
	return sortedKeys(seen)
}

// PortRange is a compiled "tcp/8000-8100".
type PortRange struct {
	Transport string // "tcp", "udp", or "" for any
	Lo, Hi    uint16
}

// ParsePort parses "any", "tcp/any", "tcp/6379", "udp/53" or "tcp/8000-8100".
func ParsePort(s string) (PortRange, error) {
	if s == "any" {
		return PortRange{Lo: 0, Hi: 65535}, nil
	}
	tr, rest, ok := strings.Cut(s, "/")
	if !ok || (tr != "tcp" && tr != "udp") {
		return PortRange{}, fmt.Errorf("%q is not a port (allowed: any, tcp/any, udp/any, tcp/6379, udp/53, tcp/8000-8100)", s)
	}
	if rest == "any" {
		return PortRange{Transport: tr, Lo: 0, Hi: 65535}, nil
	}
	lo, hi, isRange := strings.Cut(rest, "-")
	l, err1 := strconv.ParseUint(lo, 10, 16)
	h := l
	var err2 error
	if isRange {
		h, err2 = strconv.ParseUint(hi, 10, 16)
	}
	if err1 != nil || err2 != nil || l == 0 || h < l {
		return PortRange{}, fmt.Errorf("%q is not a port (allowed: any, tcp/any, udp/any, tcp/6379, udp/53, tcp/8000-8100; ports 1-65535, low-high)", s)
	}
	return PortRange{Transport: tr, Lo: uint16(l), Hi: uint16(h)}, nil
}

// l7Apps says which applications each L7 section applies to.
var l7Apps = map[string][]string{
	"http":  {"http", "http2", "grpc"},
	"grpc":  {"grpc"},
	"dns":   {"dns"},
	"redis": {"redis"},
	"sql":   {"postgres", "postgresql", "mysql", "mariadb"},
}

func (l *L7) sections() []string {
	var out []string
	if l == nil {
		return nil
	}
	if l.HTTP != nil {
		out = append(out, "http")
	}
	if l.GRPC != nil {
		out = append(out, "grpc")
	}
	if l.DNS != nil {
		out = append(out, "dns")
	}
	if l.Redis != nil {
		out = append(out, "redis")
	}
	if l.SQL != nil {
		out = append(out, "sql")
	}
	return out
}

func (nr *NetworkRule) validate(r *resolver) []error {
	var errs []error
	src, m, sp := nr.Source, nr.Metadata, &nr.Spec
	e := func(field, format string, args ...any) {
		errs = append(errs, fieldErr(src, KindNetworkRule, m.Key(), field, format, args...))
	}
	if _, err := r.checkRef(src, KindNetworkRule, m, "spec.from", sp.From, false, false); err != nil {
		errs = append(errs, err)
	}
	if _, err := r.checkRef(src, KindNetworkRule, m, "spec.to", sp.To, true, true); err != nil {
		errs = append(errs, err)
	}
	for i, p := range sp.Ports {
		if _, err := ParsePort(p); err != nil {
			e("spec.ports["+strconv.Itoa(i)+"]", "%v", err)
		}
	}
	anyApp := len(sp.Applications) == 0
	for i, a := range sp.Applications {
		if a == "any" {
			anyApp = true
			continue
		}
		if !appRE.MatchString(a) || !r.apps[a] {
			e("spec.applications["+strconv.Itoa(i)+"]", "unknown application %q (allowed: any, %s)", a, strings.Join(Applications(), ", "))
		}
	}
	switch sp.Action {
	case ActionAllow, ActionDeny:
	case "":
		e("spec.action", "required (allowed: allow, deny)")
	default:
		e("spec.action", "%q is not an action (allowed: allow, deny)", sp.Action)
	}
	if sp.Priority < -1000 || sp.Priority > 1000 {
		e("spec.priority", "%d is out of range (allowed: -1000..1000, lower is evaluated first)", sp.Priority)
	}
	if l := sp.L7; l != nil {
		secs := l.sections()
		if len(secs) == 0 {
			e("spec.l7", "empty: give one of http, grpc, dns, redis, sql, or remove l7")
		}
		for _, sec := range secs {
			if anyApp {
				continue
			}
			ok := false
			for _, a := range sp.Applications {
				if contains(l7Apps[sec], a) {
					ok = true
				}
			}
			if !ok {
				e("spec.l7."+sec, "does not apply to applications [%s] (l7.%s applies to %s)", strings.Join(sp.Applications, ", "), sec, strings.Join(l7Apps[sec], ", "))
			}
		}
		list := func(field string, vals []string, re *regexp.Regexp, what string) {
			for i, v := range vals {
				if len(v) > maxL7Item {
					e(field+"["+strconv.Itoa(i)+"]", "longer than %d bytes", maxL7Item)
				} else if !re.MatchString(v) {
					e(field+"["+strconv.Itoa(i)+"]", "%q is not %s", v, what)
				}
			}
		}
		if h := l.HTTP; h != nil {
			list("spec.l7.http.methods", h.Methods, tokenRE, "an HTTP method (GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS...)")
			for i, p := range h.Paths {
				if len(p) > maxL7Item {
					e("spec.l7.http.paths["+strconv.Itoa(i)+"]", "longer than %d bytes", maxL7Item)
				} else if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, " \t\r\n") {
					e("spec.l7.http.paths["+strconv.Itoa(i)+"]", "%q is not a path prefix (must start with '/', no spaces)", p)
				}
			}
			list("spec.l7.http.hosts", h.Hosts, hostRE, "a host name or *.suffix wildcard")
		}
		if g := l.GRPC; g != nil {
			list("spec.l7.grpc.services", g.Services, grpcSvcRE, "a gRPC service (package.Service)")
			for i, mth := range g.Methods {
				svc, name, full := strings.Cut(mth, "/")
				if !full {
					name = svc
				}
				if len(mth) > maxL7Item || (full && !grpcSvcRE.MatchString(svc)) || !tokenRE.MatchString(name) {
					e("spec.l7.grpc.methods["+strconv.Itoa(i)+"]", "%q is not a gRPC method (package.Service/Method or Method)", mth)
				}
			}
		}
		if d := l.DNS; d != nil {
			list("spec.l7.dns.names", d.Names, hostRE, "a DNS name or *.suffix wildcard")
		}
		if rd := l.Redis; rd != nil {
			list("spec.l7.redis.allowCommands", rd.AllowCommands, tokenRE, "a Redis command (GET, SET, FLUSHALL...)")
			list("spec.l7.redis.denyCommands", rd.DenyCommands, tokenRE, "a Redis command (GET, SET, FLUSHALL...)")
		}
		if q := l.SQL; q != nil {
			list("spec.l7.sql.verbs", q.Verbs, tokenRE, "a SQL statement verb (SELECT, INSERT, UPDATE, DELETE...)")
			list("spec.l7.sql.denyVerbs", q.DenyVerbs, tokenRE, "a SQL statement verb (SELECT, INSERT, UPDATE, DELETE...)")
		}
	}
	return errs
}

// conflicts finds allow and deny rules with the same from, to, priority, port and application
// and no L7 refinement: the allow could never apply, which is almost always a mistake.
func conflicts(rules []NetworkRule, r *resolver) []error {
	type bucket struct{ allow, deny []*NetworkRule }
	buckets := map[string]*bucket{}
	var order []string
	for i := range rules {
		nr := &rules[i]
		if nr.Spec.L7 != nil {
			continue
		}
		from, ok1 := r.resolve(nr.Metadata.Namespace, nr.Spec.From)
		to, ok2 := r.resolve(nr.Metadata.Namespace, nr.Spec.To)
		if !ok1 || !ok2 {
			continue
		}
		k := from + "\x00" + to + "\x00" + strconv.Itoa(nr.Spec.Priority)
		b := buckets[k]
		if b == nil {
			b = &bucket{}
			buckets[k] = b
			order = append(order, k)
		}
		if nr.Spec.Action == ActionAllow {
			b.allow = append(b.allow, nr)
		} else if nr.Spec.Action == ActionDeny {
			b.deny = append(b.deny, nr)
		}
	}
	var errs []error
	for _, k := range order {
		b := buckets[k]
		for _, a := range b.allow {
			for _, d := range b.deny {
				if port, app, ok := overlap(a, d); ok {
					errs = append(errs, fieldErr(a.Source, KindNetworkRule, a.Metadata.Key(), "spec.action",
						"conflicts with deny rule %q (%s:%d): same from, to, priority %d, port %s and application %s; deny rules win, so change one rule's ports/applications, its priority, or delete one",
						d.Metadata.Key(), d.Source.File, d.Source.Line, a.Spec.Priority, port, app))
				}
			}
		}
	}
	return errs
}

func overlap(a, d *NetworkRule) (string, string, bool) {
	ap, dp := orAny(a.Spec.Ports), orAny(d.Spec.Ports)
	aa, da := orAny(a.Spec.Applications), orAny(d.Spec.Applications)
	for _, p := range ap {
		if !contains(dp, p) {
			continue
		}
		for _, x := range aa {
			if contains(da, x) {
				return p, x, true
			}
		}
	}
	return "", "", false
}

func orAny(s []string) []string {
	if len(s) == 0 {
		return []string{"any"}
	}
	return s
}

func (p *ProcessProfile) validate(r *resolver) []error {
	var errs []error
	if _, err := r.checkRef(p.Source, KindProcessProfile, p.Metadata, "spec.group", p.Spec.Group, true, false); err != nil {
		errs = append(errs, err)
	}
	if p.Spec.Mode != "" && !validMode(p.Spec.Mode) {
		errs = append(errs, fieldErr(p.Source, KindProcessProfile, p.Metadata.Key(), "spec.mode", "%q is not a mode (allowed: %s, or omit to follow the group)", p.Spec.Mode, strings.Join(Modes(), ", ")))
	}
	for i, pr := range p.Spec.Processes {
		f := "spec.processes[" + strconv.Itoa(i) + "]"
		if pr.Name == "" && pr.Path == "" {
			errs = append(errs, fieldErr(p.Source, KindProcessProfile, p.Metadata.Key(), f, "needs name or path"))
		}
		if pr.Path != "" && !strings.HasPrefix(pr.Path, "/") {
			errs = append(errs, fieldErr(p.Source, KindProcessProfile, p.Metadata.Key(), f+".path", "%q is not an absolute path", pr.Path))
		}
	}
	return errs
}

func (f *FileRule) validate(r *resolver) []error {
	var errs []error
	e := func(field, format string, args ...any) {
		errs = append(errs, fieldErr(f.Source, KindFileRule, f.Metadata.Key(), field, format, args...))
	}
	if _, err := r.checkRef(f.Source, KindFileRule, f.Metadata, "spec.group", f.Spec.Group, true, false); err != nil {
		errs = append(errs, err)
	}
	if len(f.Spec.Paths) == 0 {
		e("spec.paths", "needs at least one absolute path")
	}
	for i, p := range f.Spec.Paths {
		if !strings.HasPrefix(p, "/") {
			e("spec.paths["+strconv.Itoa(i)+"]", "%q is not an absolute path", p)
		}
	}
	for i, a := range f.Spec.Access {
		if !contains(FileAccesses(), a) {
			e("spec.access["+strconv.Itoa(i)+"]", "%q is not an access (allowed: %s)", a, strings.Join(FileAccesses(), ", "))
		}
	}
	if !validSensorAction(f.Spec.Action, false) {
		e("spec.action", "%q is not an action (allowed: alert, block)", f.Spec.Action)
	}
	return errs
}

func (rr *ResponseRule) validate(r *resolver) []error {
	var errs []error
	e := func(field, format string, args ...any) {
		errs = append(errs, fieldErr(rr.Source, KindResponseRule, rr.Metadata.Key(), field, format, args...))
	}
	m := rr.Spec.Match
	if m.Kind != "" && !contains(EventKinds(), m.Kind) {
		e("spec.match.kind", "%q is not an event kind (allowed: %s)", m.Kind, strings.Join(EventKinds(), ", "))
	}
	if m.Severity != "" && !contains(Severities(), m.Severity) {
		e("spec.match.severity", "%q is not a severity (allowed: %s)", m.Severity, strings.Join(Severities(), ", "))
	}
	if m.Group != nil {
		if _, err := r.checkRef(rr.Source, KindResponseRule, rr.Metadata, "spec.match.group", *m.Group, true, false); err != nil {
			errs = append(errs, err)
		}
	} else if rr.Metadata.Namespace != "" {
		e("spec.match.group", "a namespaced response rule must name a group of its namespace (or make it cluster-scoped)")
	}
	if m.Kind == "" && m.Name == "" && m.Severity == "" && m.Group == nil {
		e("spec.match", "matches every event: give kind, name, severity or group")
	}
	if len(rr.Spec.Actions) == 0 {
		e("spec.actions", "needs at least one action (allowed: %s)", strings.Join(ResponseActions(), ", "))
	}
	for i, a := range rr.Spec.Actions {
		if !contains(ResponseActions(), a) {
			e("spec.actions["+strconv.Itoa(i)+"]", "%q is not an action (allowed: %s)", a, strings.Join(ResponseActions(), ", "))
		}
	}
	return errs
}

func groupKeys(s *Set) []string {
	out := make([]string, 0, len(s.Groups))
	for _, g := range s.Groups {
		out = append(out, g.Metadata.Key())
	}
	sort.Strings(out)
	return out
}

// Apply is `meshguard apply`: it rejects documents given twice in incoming, merges incoming
// into current (replacing documents of the same kind, namespace and name) and validates the
// whole result. On any error nothing is applied: current is never modified.
func Apply(current, incoming *Set) (*Set, error) {
	seen := map[string]Source{}
	var errs []error
	check := func(kind string, m ObjectMeta, src Source) {
		k := kind + "\x00" + m.Key()
		if first, ok := seen[k]; ok {
			errs = append(errs, fieldErr(src, kind, m.Key(), "metadata.name", "duplicate %s %q in this apply (first at %s:%d)", kind, m.Key(), first.File, first.Line))
			return
		}
		seen[k] = src
	}
	for _, x := range incoming.Groups {
		check(KindGroup, x.Metadata, x.Source)
	}
	for _, x := range incoming.NetworkRules {
		check(KindNetworkRule, x.Metadata, x.Source)
	}
	for _, x := range incoming.ProcessProfiles {
		check(KindProcessProfile, x.Metadata, x.Source)
	}
	for _, x := range incoming.FileRules {
		check(KindFileRule, x.Metadata, x.Source)
	}
	for _, x := range incoming.ResponseRules {
		check(KindResponseRule, x.Metadata, x.Source)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	out := current.Merge(incoming)
	if err := out.Validate(); err != nil {
		return nil, err
	}
	return out, nil
}

func emptySelector(s *LabelSelector) bool {
	return s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0)
}
