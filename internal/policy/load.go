package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// Input limits: policy comes from users, and a policy file is small.
const (
	MaxInputBytes = 16 << 20 // per file or stream
	maxDepth      = 32       // nesting of YAML collections
	maxDocuments  = 100000
)

// FieldError is one problem with one document, pointing at file, line and field.
type FieldError struct {
	File   string
	Line   int
	Kind   string
	Object string // key of the document ("ns/name")
	Field  string // path in the document ("spec.to.group")
	Msg    string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	if e.Kind != "" {
		b.WriteString(e.Kind)
		if e.Object != "" {
			b.WriteString(" " + e.Object)
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func fieldErr(src Source, kind, obj, field, format string, args ...any) *FieldError {
	return &FieldError{File: src.File, Line: src.lineOf(field), Kind: kind, Object: obj, Field: field,
		Msg: fmt.Sprintf(format, args...)}
}

// LoadPaths reads documents from files and directories (every *.yaml, *.yml and *.json below
// a directory, in lexical order); "-" reads stdin. It parses only: call Validate on the set you
// intend to apply (usually the current policy merged with these documents).
func LoadPaths(stdin io.Reader, paths ...string) (*Set, error) {
	out := &Set{}
	var errs []error
	add := func(name string, r io.Reader) {
		s, err := ParseReader(name, r)
		if err != nil {
			errs = append(errs, err)
			return
		}
		out = appendSet(out, s)
	}
	for _, p := range paths {
		if p == "-" {
			add("<stdin>", stdin)
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("policy: %w", err))
			continue
		}
		if !st.IsDir() {
			f, err := os.Open(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("policy: %w", err))
				continue
			}
			add(p, f)
			f.Close()
			continue
		}
		var files []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch strings.ToLower(filepath.Ext(path)) {
			case ".yaml", ".yml", ".json":
				if !d.IsDir() {
					files = append(files, path)
				}
			}
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("policy: reading directory %s: %w", p, err))
			continue
		}
		if len(files) == 0 {
			errs = append(errs, fmt.Errorf("policy: directory %s has no .yaml, .yml or .json files", p))
		}
		sort.Strings(files)
		for _, f := range files {
			fh, err := os.Open(f)
			if err != nil {
				errs = append(errs, fmt.Errorf("policy: %w", err))
				continue
			}
			add(f, fh)
			fh.Close()
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func appendSet(a, b *Set) *Set {
	a.Groups = append(a.Groups, b.Groups...)
	a.NetworkRules = append(a.NetworkRules, b.NetworkRules...)
	a.ProcessProfiles = append(a.ProcessProfiles, b.ProcessProfiles...)
	a.FileRules = append(a.FileRules, b.FileRules...)
	a.ResponseRules = append(a.ResponseRules, b.ResponseRules...)
	return a
}

// ParseReader parses a multi-document YAML (or JSON) stream; name is used in errors.
func ParseReader(name string, r io.Reader) (*Set, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxInputBytes+1))
	if err != nil {
		return nil, fmt.Errorf("policy: reading %s: %w", name, err)
	}
	if len(data) > MaxInputBytes {
		return nil, fmt.Errorf("policy: %s is larger than %d bytes; split it", name, MaxInputBytes)
	}
	return Parse(name, data)
}

// Parse parses multi-document YAML (JSON is YAML) into a Set. Unknown fields, unknown kinds,
// wrong types, anchors/aliases and excessive nesting are errors; every error names the file,
// line and field. Nothing is defaulted: Validate reports missing required fields (a group's
// mode, a rule's action), so what is exported is exactly what was applied.
func Parse(name string, data []byte) (*Set, error) {
	if len(data) > MaxInputBytes {
		return nil, fmt.Errorf("policy: %s is larger than %d bytes; split it", name, MaxInputBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	out := &Set{}
	var errs []error
	for n := 0; ; n++ {
		if n >= maxDocuments {
			return nil, fmt.Errorf("%s: more than %d documents", name, maxDocuments)
		}
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// A syntax error leaves the decoder unusable: report and stop.
			errs = append(errs, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: ")))
			break
		}
		if err := parseDoc(name, &doc, out); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func parseDoc(file string, doc *yaml.Node, out *Set) error {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil // empty document between separators
	}
	src := Source{File: file, Line: root.Line, lines: map[string]int{}}
	if err := checkTree(root, 0); err != nil {
		return &FieldError{File: file, Line: err.line, Msg: err.msg}
	}
	if root.Kind != yaml.MappingNode {
		return &FieldError{File: file, Line: root.Line, Msg: "a document must be a mapping with apiVersion, kind, metadata and spec"}
	}
	recordLines(root, "", src.lines)
	var kind, apiVersion, objName, objNS string
	for i := 0; i+1 < len(root.Content); i += 2 {
		switch root.Content[i].Value {
		case "kind":
			kind = root.Content[i+1].Value
		case "apiVersion":
			apiVersion = root.Content[i+1].Value
		case "metadata":
			m := root.Content[i+1]
			for j := 0; j+1 < len(m.Content); j += 2 {
				switch m.Content[j].Value {
				case "name":
					objName = m.Content[j+1].Value
				case "namespace":
					objNS = m.Content[j+1].Value
				}
			}
		}
	}
	objName = Key(objNS, objName)
	if apiVersion != APIVersion {
		return fieldErr(src, kind, objName, "apiVersion", "%q is not supported (allowed: %s)", apiVersion, APIVersion)
	}
	var target any
	switch kind {
	case KindGroup:
		target = &Group{Source: src}
	case KindNetworkRule:
		target = &NetworkRule{Source: src}
	case KindProcessProfile:
		target = &ProcessProfile{Source: src}
	case KindFileRule:
		target = &FileRule{Source: src}
	case KindResponseRule:
		target = &ResponseRule{Source: src}
	default:
		return fieldErr(src, "", "", "kind", "unknown kind %q (allowed: %s)", kind, strings.Join(Kinds(), ", "))
	}
	if err := checkKnown(root, reflect.TypeOf(target).Elem(), "", src, kind, objName); err != nil {
		return err
	}
	if err := root.Decode(target); err != nil {
		var te *yaml.TypeError
		msg := err.Error()
		if errors.As(err, &te) {
			msg = strings.Join(te.Errors, "; ")
		}
		return &FieldError{File: file, Line: root.Line, Kind: kind, Object: objName, Msg: strings.TrimPrefix(msg, "yaml: ")}
	}
	switch t := target.(type) {
	case *Group:
		t.normalize()
		out.Groups = append(out.Groups, *t)
	case *NetworkRule:
		t.normalize()
		out.NetworkRules = append(out.NetworkRules, *t)
	case *ProcessProfile:
		t.normalize()
		out.ProcessProfiles = append(out.ProcessProfiles, *t)
	case *FileRule:
		t.normalize()
		out.FileRules = append(out.FileRules, *t)
	case *ResponseRule:
		t.normalize()
		out.ResponseRules = append(out.ResponseRules, *t)
	}
	return nil
}

type treeErr struct {
	line int
	msg  string
}

// checkTree rejects aliases (whose expansion can be exponential), merge keys and deep nesting
// before anything walks or decodes the tree.
func checkTree(n *yaml.Node, depth int) *treeErr {
	if depth > maxDepth {
		return &treeErr{n.Line, fmt.Sprintf("nesting deeper than %d levels", maxDepth)}
	}
	if n.Kind == yaml.AliasNode {
		return &treeErr{n.Line, "YAML aliases (*name) are not supported in policy documents; repeat the value"}
	}
	if n.Kind == yaml.MappingNode {
		for i := 0; i < len(n.Content); i += 2 {
			if n.Content[i].Tag == "!!merge" {
				return &treeErr{n.Content[i].Line, "YAML merge keys (<<) are not supported in policy documents"}
			}
		}
	}
	for _, c := range n.Content {
		if err := checkTree(c, depth+1); err != nil {
			return err
		}
	}
	return nil
}

func recordLines(n *yaml.Node, path string, lines map[string]int) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if path != "" {
				p = path + "." + p
			}
			lines[p] = n.Content[i].Line
			recordLines(n.Content[i+1], p, lines)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			lines[p] = c.Line
			recordLines(c, p, lines)
		}
	}
}

// checkKnown is the strict-fields check (the Node API has no KnownFields): every mapping key
// must be a field of the Go type, and the error lists the allowed ones.
func checkKnown(n *yaml.Node, t reflect.Type, path string, src Source, kind, obj string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // Decode reports the type mismatch with its line
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			p := key
			if path != "" {
				p = path + "." + key
			}
			ft, ok := fields[key]
			if !ok {
				names := make([]string, 0, len(fields))
				for k := range fields {
					names = append(names, k)
				}
				sort.Strings(names)
				return &FieldError{File: src.File, Line: n.Content[i].Line, Kind: kind, Object: obj, Field: p,
					Msg: fmt.Sprintf("unknown field (allowed: %s)", strings.Join(names, ", "))}
			}
			if err := checkKnown(n.Content[i+1], ft, p, src, kind, obj); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return nil
		}
		for i, c := range n.Content {
			if err := checkKnown(c, t.Elem(), path+"["+strconv.Itoa(i)+"]", src, kind, obj); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkKnown(n.Content[i+1], t.Elem(), path+"."+n.Content[i].Value, src, kind, obj); err != nil {
				return err
			}
		}
	}
	return nil
}

// yamlFields maps yaml keys to field types, flattening ",inline" fields and skipping "-".
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "inline") {
			for k, v := range yamlFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

// normalize makes empty collections nil so a document equals its exported and re-parsed self.
func (g *Group) normalize() {
	g.Metadata.normalize()
	if s := g.Spec.Selector; s != nil {
		if len(s.MatchLabels) == 0 {
			s.MatchLabels = nil
		}
		if len(s.MatchExpressions) == 0 {
			s.MatchExpressions = nil
		}
		for i := range s.MatchExpressions {
			s.MatchExpressions[i].Values = nilIfEmpty(s.MatchExpressions[i].Values)
		}
	}
	if e := g.Spec.External; e != nil {
		e.CIDRs, e.DNSNames = nilIfEmpty(e.CIDRs), nilIfEmpty(e.DNSNames)
	}
	if s := g.Spec.Sensors; s != nil && s.DLP != nil {
		s.DLP.Patterns = nilIfEmpty(s.DLP.Patterns)
		if len(s.DLP.Custom) == 0 {
			s.DLP.Custom = nil
		}
	}
}

func (r *NetworkRule) normalize() {
	r.Metadata.normalize()
	r.Spec.Ports, r.Spec.Applications = nilIfEmpty(r.Spec.Ports), nilIfEmpty(r.Spec.Applications)
	if l := r.Spec.L7; l != nil {
		if l.HTTP != nil {
			l.HTTP.Methods, l.HTTP.Paths, l.HTTP.Hosts = nilIfEmpty(l.HTTP.Methods), nilIfEmpty(l.HTTP.Paths), nilIfEmpty(l.HTTP.Hosts)
		}
		if l.GRPC != nil {
			l.GRPC.Services, l.GRPC.Methods = nilIfEmpty(l.GRPC.Services), nilIfEmpty(l.GRPC.Methods)
		}
		if l.DNS != nil {
			l.DNS.Names = nilIfEmpty(l.DNS.Names)
		}
		if l.Redis != nil {
			l.Redis.AllowCommands, l.Redis.DenyCommands = nilIfEmpty(l.Redis.AllowCommands), nilIfEmpty(l.Redis.DenyCommands)
		}
		if l.SQL != nil {
			l.SQL.Verbs, l.SQL.DenyVerbs = nilIfEmpty(l.SQL.Verbs), nilIfEmpty(l.SQL.DenyVerbs)
		}
	}
}

func (p *ProcessProfile) normalize() {
	p.Metadata.normalize()
	if len(p.Spec.Processes) == 0 {
		p.Spec.Processes = nil
	}
}

func (f *FileRule) normalize() {
	f.Metadata.normalize()
	f.Spec.Paths, f.Spec.Access = nilIfEmpty(f.Spec.Paths), nilIfEmpty(f.Spec.Access)
}

func (r *ResponseRule) normalize() {
	r.Metadata.normalize()
	r.Spec.Actions = nilIfEmpty(r.Spec.Actions)
}

func (m *ObjectMeta) normalize() {
	if len(m.Labels) == 0 {
		m.Labels = nil
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}
