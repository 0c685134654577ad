package policy

import (
	"bytes"
	"fmt"
	"sort"

	yaml "go.yaml.in/yaml/v3"
)

// Export writes the set as multi-document YAML in a fixed order (kinds in Kinds() order, then
// by namespace/name; fields in declaration order, map keys sorted), so the same policy always
// exports to the same bytes and Parse of the output yields the same policy.
func (s *Set) Export() ([]byte, error) {
	var docs []any
	add := func(kind string, keys []string) {
		idx := make([]int, len(keys))
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool { return keys[idx[a]] < keys[idx[b]] })
		for _, i := range idx {
			docs = append(docs, s.Document(kind, i))
		}
	}
	keys := func(n int, key func(int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = key(i)
		}
		return out
	}
	add(KindGroup, keys(len(s.Groups), func(i int) string { return s.Groups[i].Metadata.Key() }))
	add(KindNetworkRule, keys(len(s.NetworkRules), func(i int) string { return s.NetworkRules[i].Metadata.Key() }))
	add(KindProcessProfile, keys(len(s.ProcessProfiles), func(i int) string { return s.ProcessProfiles[i].Metadata.Key() }))
	add(KindFileRule, keys(len(s.FileRules), func(i int) string { return s.FileRules[i].Metadata.Key() }))
	add(KindResponseRule, keys(len(s.ResponseRules), func(i int) string { return s.ResponseRules[i].Metadata.Key() }))
	var buf bytes.Buffer
	for i, d := range docs {
		if i > 0 {
			buf.WriteString("---\n")
		}
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(d); err != nil {
			return nil, fmt.Errorf("policy: export: %w", err)
		}
		if err := enc.Close(); err != nil {
			return nil, fmt.Errorf("policy: export: %w", err)
		}
	}
	return buf.Bytes(), nil
}

// Document returns a copy of the i-th document of kind (an index into that kind's slice of
// s) with its TypeMeta filled in, the value Export encodes; nil for an unknown kind. Other
// encoders of the same documents (xdsgen's JSON) use it so the two cannot drift.
func (s *Set) Document(kind string, i int) any {
	// The constants, not kind, go into the copies: kind then does not escape, and neither does
	// what callers keep beside it (xdsgen's index slices).
	switch kind {
	case KindGroup:
		return typed(s.Groups[i], KindGroup)
	case KindNetworkRule:
		return typed(s.NetworkRules[i], KindNetworkRule)
	case KindProcessProfile:
		return typed(s.ProcessProfiles[i], KindProcessProfile)
	case KindFileRule:
		return typed(s.FileRules[i], KindFileRule)
	case KindResponseRule:
		return typed(s.ResponseRules[i], KindResponseRule)
	}
	return nil
}

// typed returns a pointer to a copy of d with its (embedded) TypeMeta set to kind.
func typed[T any, P interface {
	*T
	setType(kind string)
}](d T, kind string) any {
	p := P(&d)
	p.setType(kind)
	return p
}

func (m *TypeMeta) setType(kind string) { *m = TypeMeta{APIVersion: APIVersion, Kind: kind} }
