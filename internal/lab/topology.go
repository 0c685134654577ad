// Package lab is meshguard's embedded runtime: a local "cluster" of pods built from Linux
// network, PID, mount and UTS namespaces on one machine, joined by a bridge, with service
// virtual IPs (nftables DNAT, the kube-proxy role) and a DNS server answering
// <svc>.<ns>.svc.cluster.local. A detached daemon (`meshguard lab daemon`) owns everything it
// creates and records it in a state file, so `lab down` can remove it all, even after a crash.
//
// Flow: ParseTopology (file:line errors, nothing started) → Plan (addresses, names) →
// WriteState → the daemon (Daemon.Run) builds bridge, netns, veths, nftables, DNS, then the
// system processes (DaemonConfig.System: the controller), then each pod: its sidecar first
// (DaemonConfig.Sidecars, a SidecarLauncher; the process runs in PodState.Netns), then the
// pod's command via `meshguard lab pod-init` in new PID/mount/UTS namespaces. Other processes
// find a pod's netns, IP, labels and service account with ReadState / PodNetns.
package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxTopologyBytes bounds the topology file the parser accepts.
const MaxTopologyBytes = 1 << 20

// maxReplicas bounds one pod template's replicas; the pod CIDR bounds the total.
const maxReplicas = 64

// Topology is a parsed, validated topology file: pods (replicas expanded) and services.
type Topology struct {
	File     string
	Pods     []Pod
	Services []Service
	Mesh     Mesh
	DNS      DNS
}

// DNS is the topology's optional lab DNS settings (top-level `dns:`).
type DNS struct {
	// Zones are delegated: queries for a zone and the names below it go to its server, the
	// way a resolver forwards an attacker's domain to the attacker's authoritative server.
	Zones []DNSZone `json:"zones,omitempty"`
}

// DNSZone forwards one zone. Server is either a pod of the topology ("namespace/name",
// port 53 of its IP) or an address "ip:port".
type DNSZone struct {
	Name   string `json:"name"`   // FQDN, lower-case, with the trailing dot
	Server string `json:"server"` // as written: "ns/name" or "ip:port"
	Line   int    `json:"-"`
	Field  string `json:"-"` // e.g. "dns.zones[0]", for error messages
}

// Mesh is the topology's optional mesh-wide settings (top-level `mesh:`), passed to the
// controller the lab starts as --mtls-permissive and --egress.
type Mesh struct {
	// PermissiveNamespaces accept plaintext from pods without a sidecar (reported as
	// unauthenticated); the others are STRICT.
	PermissiveNamespaces []string `json:"permissiveNamespaces,omitempty"`
	// Egress is "allow-any" or "registry-only"; empty means registry-only.
	Egress string `json:"egress,omitempty"`
	// ThreatDetectionOff (`threatDetection: false`) starts the sidecars with
	// --threat-detection=false: the no-detectors baseline of bench/threats.sh.
	ThreatDetectionOff bool `json:"threatDetectionOff,omitempty"`
}

// Pod is one pod instance after replica expansion.
type Pod struct {
	Name           string            `json:"name"`
	Namespace      string            `json:"namespace"`
	ServiceAccount string            `json:"serviceAccount"`
	Labels         map[string]string `json:"labels"`
	Command        []string          `json:"command"`
	UID            uint32            `json:"uid"`
	GID            uint32            `json:"gid"`
	Sidecar        bool              `json:"sidecar"`
	Line           int               `json:"-"`
	Field          string            `json:"-"` // e.g. "pods[2]", for error messages
}

// Key is the pod's unique "namespace/name".
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Service is a virtual IP in front of the pods its selector matches.
type Service struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Selector  map[string]string `json:"selector"`
	Ports     []ServicePort     `json:"ports"`
	Line      int               `json:"-"`
	Field     string            `json:"-"` // e.g. "services[0]", for error messages
}

// Key is the service's unique "namespace/name".
func (s Service) Key() string { return s.Namespace + "/" + s.Name }

// ServicePort maps the service's port to the pods' targetPort (TCP).
type ServicePort struct {
	Port       uint16 `json:"port"`
	TargetPort uint16 `json:"targetPort"`
}

// Selects reports whether the service's selector matches pod.
func (s Service) Selects(p Pod) bool {
	if p.Namespace != s.Namespace || len(s.Selector) == 0 {
		return false
	}
	for k, v := range s.Selector {
		if p.Labels[k] != v {
			return false
		}
	}
	return true
}

// UserLookup resolves a user name to uid and primary gid; nil refuses names.
type UserLookup func(name string) (uid, gid uint32, err error)

// ParseError is one mistake in a topology file, printed as FILE:LINE: field: problem (fix).
type ParseError struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *ParseError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Field, e.Msg)
}

// ParseTopology parses and validates a topology file. It returns every mistake found (joined),
// so a user fixes them in one round; nothing is started by parsing.
func ParseTopology(file string, data []byte, lookup UserLookup) (*Topology, error) {
	p := &parser{file: file, lookup: lookup}
	if len(data) > MaxTopologyBytes {
		return nil, &ParseError{File: file, Line: 1, Msg: fmt.Sprintf("file is %d bytes, the limit is %d (split the topology)", len(data), MaxTopologyBytes)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ParseError{File: file, Line: 1, Msg: "empty topology (add pods: and services:)"}
		}
		return nil, &ParseError{File: file, Line: yamlErrLine(err), Msg: "invalid YAML: " + err.Error()}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &ParseError{File: file, Line: extra.Line, Msg: "more than one YAML document (keep one topology per file)"}
	}
	t := p.topology(&doc)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	t.File = file
	return t, nil
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

func yamlErrLine(err error) int {
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		if n, e := strconv.Atoi(m[1]); e == nil {
			return n
		}
	}
	return 1
}

type parser struct {
	file   string
	lookup UserLookup
	errs   []error
}

func (p *parser) fail(n *yaml.Node, field, format string, args ...any) {
	line := 1
	if n != nil && n.Line > 0 {
		line = n.Line
	}
	if len(p.errs) < 50 { // bounded: a hostile file cannot make us build a huge report
		p.errs = append(p.errs, &ParseError{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
	}
}

// mapping checks n is a mapping with only allowed keys and returns key → value node.
func (p *parser) mapping(n *yaml.Node, field string, allowed ...string) map[string]*yaml.Node {
	if n.Kind == yaml.AliasNode {
		p.fail(n, field, "YAML aliases are not supported (write the value out)")
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.fail(n, field, "want a mapping, got %s", kindName(n))
		return nil
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := k.Value
		if k.Kind != yaml.ScalarNode {
			p.fail(k, field, "keys must be plain strings")
			continue
		}
		sub := joinField(field, name)
		if allowed != nil && !contains(allowed, name) {
			p.fail(k, sub, "unknown field (known: %s)", strings.Join(allowed, ", "))
			continue
		}
		if _, dup := out[name]; dup {
			p.fail(k, sub, "field given twice (keep one)")
			continue
		}
		if v.Kind == yaml.AliasNode {
			p.fail(v, sub, "YAML aliases are not supported (write the value out)")
			continue
		}
		out[name] = v
	}
	return out
}

func joinField(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	default:
		return "something else"
	}
}

func (p *parser) sequence(n *yaml.Node, field string) []*yaml.Node {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.fail(n, field, "want a list, got %s", kindName(n))
		return nil
	}
	return n.Content
}

func (p *parser) str(n *yaml.Node, field string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.fail(n, field, "want a string, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) integer(n *yaml.Node, field string, lo, hi int64) (int64, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		p.fail(n, field, "want a whole number between %d and %d, got %s", lo, hi, kindName(n))
		return 0, false
	}
	v, err := strconv.ParseInt(n.Value, 0, 64)
	if err != nil || v < lo || v > hi {
		p.fail(n, field, "%s is out of range (want %d..%d)", n.Value, lo, hi)
		return 0, false
	}
	return v, true
}

func (p *parser) stringMap(n *yaml.Node, field string, value func(string) string) map[string]string {
	m := p.mapping(n, field)
	out := make(map[string]string, len(m))
	for _, k := range sortedKeys(m) {
		v := m[k]
		sub := joinField(field, k)
		if msg := labelKeyProblem(k); msg != "" {
			p.fail(v, sub, "%s", msg)
			continue
		}
		s, ok := p.str(v, sub)
		if !ok {
			continue
		}
		if msg := value(s); msg != "" {
			p.fail(v, sub, "%s", msg)
			continue
		}
		out[k] = s
	}
	return out
}

func sortedKeys(m map[string]*yaml.Node) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return m[keys[i]].Line < m[keys[j]].Line || (m[keys[i]].Line == m[keys[j]].Line && keys[i] < keys[j])
	})
	return keys
}

var (
	dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	labelNameRE  = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
)

// nameProblem says what is wrong with a DNS-1123 label, or "" when it is fine.
func nameProblem(s string, maxLen int) string {
	if s == "" {
		return "must not be empty (use lower-case letters, digits and '-')"
	}
	if len(s) > maxLen {
		return fmt.Sprintf("%q is %d characters, the limit is %d (shorten it)", s, len(s), maxLen)
	}
	if !dns1123Label.MatchString(s) {
		return fmt.Sprintf("%q is not a DNS-1123 label (use lower-case letters, digits and '-', starting and ending with a letter or digit)", s)
	}
	return ""
}

func labelKeyProblem(k string) string {
	name := k
	if i := strings.LastIndexByte(k, '/'); i >= 0 {
		prefix := k[:i]
		name = k[i+1:]
		if prefix == "" || len(prefix) > 253 {
			return fmt.Sprintf("label key %q has a bad prefix (want DNS-subdomain/name)", k)
		}
		for _, part := range strings.Split(prefix, ".") {
			if !dns1123Label.MatchString(part) {
				return fmt.Sprintf("label key %q has a bad prefix (want DNS-subdomain/name)", k)
			}
		}
	}
	if len(name) == 0 || len(name) > 63 || !labelNameRE.MatchString(name) {
		return fmt.Sprintf("label key %q is not valid (letters, digits, '-', '_', '.', at most 63)", k)
	}
	return ""
}

func labelValueProblem(v string) string {
	if len(v) > 63 || !labelValueRE.MatchString(v) {
		return fmt.Sprintf("label value %q is not valid (letters, digits, '-', '_', '.', at most 63)", v)
	}
	return ""
}

var (
	topKeys     = []string{"pods", "services", "mesh", "dns"}
	meshKeys    = []string{"permissiveNamespaces", "egress", "threatDetection"}
	dnsKeys     = []string{"zones"}
	zoneKeys    = []string{"name", "server"}
	podKeys     = []string{"name", "namespace", "serviceAccount", "labels", "command", "user", "replicas", "sidecar"}
	serviceKeys = []string{"name", "namespace", "selector", "ports"}
	portKeys    = []string{"port", "targetPort"}
)

func (p *parser) topology(doc *yaml.Node) *Topology {
	t := &Topology{}
	root := doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	top := p.mapping(root, "", topKeys...)
	if top == nil {
		return t
	}
	podNode, ok := top["pods"]
	if !ok {
		p.fail(root, "pods", "missing (a topology needs at least one pod)")
	} else {
		items := p.sequence(podNode, "pods")
		if len(items) == 0 && len(p.errs) == 0 {
			p.fail(podNode, "pods", "empty (a topology needs at least one pod)")
		}
		for i, n := range items {
			t.Pods = append(t.Pods, p.pod(n, fmt.Sprintf("pods[%d]", i))...)
		}
	}
	if n, ok := top["services"]; ok {
		for i, sn := range p.sequence(n, "services") {
			if s, ok := p.service(sn, fmt.Sprintf("services[%d]", i)); ok {
				t.Services = append(t.Services, s)
			}
		}
	}
	if n, ok := top["mesh"]; ok {
		t.Mesh = p.mesh(n, "mesh")
	}
	if n, ok := top["dns"]; ok {
		t.DNS = p.dns(n, "dns")
	}
	p.crossCheck(t)
	return t
}

func (p *parser) mesh(n *yaml.Node, field string) Mesh {
	var m Mesh
	fields := p.mapping(n, field, meshKeys...)
	if v, ok := fields["permissiveNamespaces"]; ok {
		for i, item := range p.sequence(v, field+".permissiveNamespaces") {
			sub := fmt.Sprintf("%s.permissiveNamespaces[%d]", field, i)
			ns, ok := p.str(item, sub)
			if !ok {
				continue
			}
			if msg := nameProblem(ns, 63); msg != "" {
				p.fail(item, sub, "%s", msg)
				continue
			}
			if contains(m.PermissiveNamespaces, ns) {
				p.fail(item, sub, "%q listed twice (keep one)", ns)
				continue
			}
			m.PermissiveNamespaces = append(m.PermissiveNamespaces, ns)
		}
	}
	if v, ok := fields["egress"]; ok {
		if e, ok := p.str(v, field+".egress"); ok {
			if e != "allow-any" && e != "registry-only" {
				p.fail(v, field+".egress", "%q is not an egress mode (want allow-any or registry-only)", e)
			} else {
				m.Egress = e
			}
		}
	}
	if v, ok := fields["threatDetection"]; ok {
		if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
			p.fail(v, field+".threatDetection", "want true or false, got %s", kindName(v))
		} else {
			m.ThreatDetectionOff = !(v.Value == "true" || v.Value == "True" || v.Value == "TRUE")
		}
	}
	return m
}

func (p *parser) dns(n *yaml.Node, field string) DNS {
	var d DNS
	fields := p.mapping(n, field, dnsKeys...)
	v, ok := fields["zones"]
	if !ok {
		return d
	}
	seen := map[string]int{}
	for i, item := range p.sequence(v, field+".zones") {
		sub := fmt.Sprintf("%s.zones[%d]", field, i)
		m := p.mapping(item, sub, zoneKeys...)
		if m == nil {
			continue
		}
		z := DNSZone{Line: item.Line, Field: sub}
		good := true
		if nv, has := m["name"]; !has {
			p.fail(item, sub+".name", "missing (the zone to delegate, e.g. t.example.net)")
			good = false
		} else if name, ok := p.str(nv, sub+".name"); !ok {
			good = false
		} else if msg := zoneProblem(name); msg != "" {
			p.fail(nv, sub+".name", "%s", msg)
			good = false
		} else {
			z.Name = dnsFQDN(name)
			if first, dup := seen[z.Name]; dup {
				p.fail(nv, sub+".name", "zone %q is listed twice (first at line %d; keep one)", name, first)
				good = false
			}
			seen[z.Name] = nv.Line
		}
		if sv, has := m["server"]; !has {
			p.fail(item, sub+".server", "missing (a pod \"namespace/name\" or an address \"ip:port\")")
			good = false
		} else if server, ok := p.str(sv, sub+".server"); !ok {
			good = false
		} else if msg := zoneServerProblem(server); msg != "" {
			p.fail(sv, sub+".server", "%s", msg)
			good = false
		} else {
			z.Server = server
		}
		if good {
			d.Zones = append(d.Zones, z)
		}
	}
	return d
}

// dnsFQDN lower-cases name and adds the trailing dot.
func dnsFQDN(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// zoneProblem says what is wrong with a zone to delegate, or "" when it is fine.
func zoneProblem(name string) string {
	n := strings.TrimSuffix(strings.ToLower(name), ".")
	if n == "" {
		return "must not be empty or the root (give a domain such as t.example.net)"
	}
	if len(n) > 253 {
		return fmt.Sprintf("%q is %d characters, a DNS name holds at most 253 (shorten it)", name, len(n))
	}
	for _, l := range strings.Split(n, ".") {
		if len(l) > 63 || !dnsZoneLabel.MatchString(l) {
			return fmt.Sprintf("%q is not a DNS name (dot-separated labels of letters, digits, '-' and '_', at most 63 each)", name)
		}
	}
	if n == "cluster.local" || strings.HasSuffix(n, ".cluster.local") || n == "local" {
		return fmt.Sprintf("%q is inside cluster.local, which the lab answers itself (delegate another domain)", name)
	}
	return ""
}

var dnsZoneLabel = regexp.MustCompile(`^[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?$`)

// zoneServerProblem checks the form of a zone's server; that a pod exists is checked later.
func zoneServerProblem(server string) string {
	if ns, name, isPod := strings.Cut(server, "/"); isPod {
		if nameProblem(ns, 63) != "" || nameProblem(name, 63) != "" {
			return fmt.Sprintf("%q is not a pod reference (want \"namespace/name\" of a pod in this topology)", server)
		}
		return ""
	}
	ap, err := netip.ParseAddrPort(server)
	if err != nil || !ap.Addr().Is4() || ap.Port() == 0 {
		return fmt.Sprintf("%q is neither a pod \"namespace/name\" nor an IPv4 address with a port such as \"10.0.0.9:53\"", server)
	}
	return ""
}

// nameField reads m[key] into *dst, checked as a DNS label. A non-empty missing makes the key
// required and is the advice given when it is absent. It returns false when the object should
// not be built from what was read (a wrong type of an optional key was already reported and
// leaves the object buildable, as the default stays in *dst).
func (p *parser) nameField(n *yaml.Node, m map[string]*yaml.Node, field, key, missing string, dst *string) bool {
	f := field + "." + key
	v, has := m[key]
	if !has {
		if missing == "" {
			return true
		}
		p.fail(n, f, "missing (%s)", missing)
		return false
	}
	str, good := p.str(v, f)
	if !good {
		return missing == ""
	}
	*dst = str
	if msg := nameProblem(str, 63); msg != "" {
		p.fail(v, f, "%s", msg)
		return false
	}
	return true
}

func (p *parser) pod(n *yaml.Node, field string) []Pod {
	m := p.mapping(n, field, podKeys...)
	if m == nil {
		return nil
	}
	tmpl := Pod{Namespace: "default", ServiceAccount: "default", Sidecar: true, Line: n.Line, Field: field, Labels: map[string]string{}}
	okAll := p.nameField(n, m, field, "name", "every pod needs a name", &tmpl.Name)
	okAll = p.nameField(n, m, field, "namespace", "", &tmpl.Namespace) && okAll
	okAll = p.nameField(n, m, field, "serviceAccount", "", &tmpl.ServiceAccount) && okAll
	if v, ok := m["labels"]; ok {
		tmpl.Labels = p.stringMap(v, field+".labels", labelValueProblem)
	}
	if v, ok := m["command"]; !ok {
		p.fail(n, field+".command", "missing (give the program and its arguments as a list)")
		okAll = false
	} else {
		items := p.sequence(v, field+".command")
		if len(items) == 0 {
			p.fail(v, field+".command", "empty (give the program and its arguments as a list)")
			okAll = false
		}
		for i, a := range items {
			sub := fmt.Sprintf("%s.command[%d]", field, i)
			s, ok := p.str(a, sub)
			if !ok {
				okAll = false
				continue
			}
			if strings.IndexByte(s, 0) >= 0 || (i == 0 && strings.TrimSpace(s) == "") {
				p.fail(a, sub, "empty or contains a NUL byte (give a program name or path)")
				okAll = false
			}
			tmpl.Command = append(tmpl.Command, s)
		}
	}
	if v, ok := m["user"]; ok {
		p.user(v, field+".user", &tmpl)
	}
	replicas := int64(1)
	if v, ok := m["replicas"]; ok {
		if r, ok := p.integer(v, field+".replicas", 1, maxReplicas); ok {
			replicas = r
		}
	}
	if v, ok := m["sidecar"]; ok {
		if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
			p.fail(v, field+".sidecar", "want true or false, got %s", kindName(v))
		} else {
			tmpl.Sidecar = v.Value == "true" || v.Value == "True" || v.Value == "TRUE"
		}
	}
	if !okAll {
		return nil
	}
	if replicas == 1 {
		return []Pod{tmpl}
	}
	out := make([]Pod, 0, replicas)
	for i := int64(0); i < replicas; i++ {
		pod := tmpl
		pod.Name = fmt.Sprintf("%s-%d", tmpl.Name, i)
		if msg := nameProblem(pod.Name, 63); msg != "" {
			p.fail(m["name"], field+".name", "with replica suffix: %s", msg)
			return nil
		}
		out = append(out, pod)
	}
	return out
}

func (p *parser) user(v *yaml.Node, field string, pod *Pod) {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!int" {
		uid, ok := p.integer(v, field, 0, 1<<32-2)
		if ok {
			pod.UID, pod.GID = uint32(uid), uint32(uid)
		}
		return
	}
	name, ok := p.str(v, field)
	if !ok {
		return
	}
	if p.lookup == nil {
		p.fail(v, field, "user names are not resolved here (give a numeric uid)")
		return
	}
	uid, gid, err := p.lookup(name)
	if err != nil {
		p.fail(v, field, "unknown user %q (give a numeric uid or a user that exists on this machine)", name)
		return
	}
	pod.UID, pod.GID = uid, gid
}

func (p *parser) service(n *yaml.Node, field string) (Service, bool) {
	s := Service{Namespace: "default", Line: n.Line, Field: field}
	m := p.mapping(n, field, serviceKeys...)
	if m == nil {
		return s, false
	}
	ok := p.nameField(n, m, field, "name", "every service needs a name", &s.Name)
	ok = p.nameField(n, m, field, "namespace", "", &s.Namespace) && ok
	if v, has := m["selector"]; !has {
		p.fail(n, field+".selector", "missing (give the labels of the pods behind this service)")
		ok = false
	} else {
		s.Selector = p.stringMap(v, field+".selector", labelValueProblem)
		if len(s.Selector) == 0 {
			p.fail(v, field+".selector", "empty (give the labels of the pods behind this service)")
			ok = false
		}
	}
	if v, has := m["ports"]; !has {
		p.fail(n, field+".ports", "missing (give at least one {port, targetPort})")
		ok = false
	} else {
		items := p.sequence(v, field+".ports")
		if len(items) == 0 {
			p.fail(v, field+".ports", "empty (give at least one {port, targetPort})")
			ok = false
		}
		seen := map[uint16]int{}
		for i, pn := range items {
			sub := fmt.Sprintf("%s.ports[%d]", field, i)
			pm := p.mapping(pn, sub, portKeys...)
			if pm == nil {
				ok = false
				continue
			}
			var sp ServicePort
			pv, has := pm["port"]
			if !has {
				p.fail(pn, sub+".port", "missing (the port clients connect to)")
				ok = false
				continue
			}
			port, good := p.integer(pv, sub+".port", 1, 65535)
			if !good {
				ok = false
				continue
			}
			sp.Port, sp.TargetPort = uint16(port), uint16(port)
			if tv, has := pm["targetPort"]; has {
				tp, good := p.integer(tv, sub+".targetPort", 1, 65535)
				if !good {
					ok = false
					continue
				}
				sp.TargetPort = uint16(tp)
			}
			if first, dup := seen[sp.Port]; dup {
				p.fail(pv, sub+".port", "port %d is listed twice in this service (first at line %d; keep one)", sp.Port, first)
				ok = false
				continue
			}
			seen[sp.Port] = pv.Line
			s.Ports = append(s.Ports, sp)
		}
	}
	return s, ok
}

// crossCheck finds mistakes that span objects: duplicates, empty selectors, port clashes.
func (p *parser) crossCheck(t *Topology) {
	pods := map[string]int{}
	for _, pod := range t.Pods {
		if first, dup := pods[pod.Key()]; dup {
			p.fail(&yaml.Node{Line: pod.Line}, pod.Field+".name", "duplicate pod %q (first defined at line %d; rename one)", pod.Key(), first)
			continue
		}
		pods[pod.Key()] = pod.Line
	}
	if len(t.Pods) > maxPods {
		p.fail(&yaml.Node{Line: t.Pods[maxPods].Line}, t.Pods[maxPods].Field, "%d pods after replica expansion, the lab holds at most %d (lower replicas)", len(t.Pods), maxPods)
	}
	for _, z := range t.DNS.Zones {
		if strings.Contains(z.Server, "/") {
			if _, ok := pods[z.Server]; !ok {
				p.fail(&yaml.Node{Line: z.Line}, z.Field+".server", "no pod %q in this topology (name a pod as \"namespace/name\" or give \"ip:port\")", z.Server)
			}
		}
	}
	services := map[string]int{}
	for _, s := range t.Services {
		if first, dup := services[s.Key()]; dup {
			p.fail(&yaml.Node{Line: s.Line}, s.Field+".name", "duplicate service %q (first defined at line %d; rename one)", s.Key(), first)
			continue
		}
		services[s.Key()] = s.Line
	}
	if len(t.Services) > maxServices {
		p.fail(&yaml.Node{Line: t.Services[maxServices].Line}, t.Services[maxServices].Field, "%d services, the lab holds at most %d (merge some)", len(t.Services), maxServices)
	}
	// port → (targetPort, service) per pod: one port must mean one thing for a pod.
	type mapping struct {
		target uint16
		svc    string
		line   int
	}
	perPod := map[string]map[uint16]mapping{}
	for _, s := range t.Services {
		selected := 0
		for _, pod := range t.Pods {
			if !s.Selects(pod) {
				continue
			}
			selected++
			pm := perPod[pod.Key()]
			if pm == nil {
				pm = map[uint16]mapping{}
				perPod[pod.Key()] = pm
			}
			for _, sp := range s.Ports {
				prev, seen := pm[sp.Port]
				if seen && prev.target != sp.TargetPort && prev.svc != s.Key() {
					p.fail(&yaml.Node{Line: s.Line}, s.Field+".ports", "port %d of pod %q maps to targetPort %d here but to %d in service %q (line %d); use one targetPort per port",
						sp.Port, pod.Key(), sp.TargetPort, prev.target, prev.svc, prev.line)
					continue
				}
				if !seen {
					pm[sp.Port] = mapping{target: sp.TargetPort, svc: s.Key(), line: s.Line}
				}
			}
		}
		if selected == 0 {
			p.fail(&yaml.Node{Line: s.Line}, s.Field+".selector", "service %q selects no pod in namespace %q (match the labels of a pod there)", s.Key(), s.Namespace)
		}
	}
}
