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
	add := func(kind string, keys []string, get func(i int) any) {
		idx := make([]int, len(keys))
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool { return keys[idx[a]] < keys[idx[b]] })
		for _, i := range idx {
			docs = append(docs, get(i))
		}
	}
	keys := func(n int, key func(int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = key(i)
		}
		return out
	}
	tm := func(kind string) TypeMeta { return TypeMeta{APIVersion: APIVersion, Kind: kind} }
	add(KindGroup, keys(len(s.Groups), func(i int) string { return s.Groups[i].Metadata.Key() }), func(i int) any {
		g := s.Groups[i]
		g.TypeMeta = tm(KindGroup)
		return &g
	})
	add(KindNetworkRule, keys(len(s.NetworkRules), func(i int) string { return s.NetworkRules[i].Metadata.Key() }), func(i int) any {
		r := s.NetworkRules[i]
		r.TypeMeta = tm(KindNetworkRule)
		return &r
	})
	add(KindProcessProfile, keys(len(s.ProcessProfiles), func(i int) string { return s.ProcessProfiles[i].Metadata.Key() }), func(i int) any {
		r := s.ProcessProfiles[i]
		r.TypeMeta = tm(KindProcessProfile)
		return &r
	})
	add(KindFileRule, keys(len(s.FileRules), func(i int) string { return s.FileRules[i].Metadata.Key() }), func(i int) any {
		r := s.FileRules[i]
		r.TypeMeta = tm(KindFileRule)
		return &r
	})
	add(KindResponseRule, keys(len(s.ResponseRules), func(i int) string { return s.ResponseRules[i].Metadata.Key() }), func(i int) any {
		r := s.ResponseRules[i]
		r.TypeMeta = tm(KindResponseRule)
		return &r
	})
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
