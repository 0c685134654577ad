package policy

import "testing"

// TestDocument: each kind's document comes back as a copy with its TypeMeta filled in (the
// set's own copy untouched), and an unknown kind as nil.
func TestDocument(t *testing.T) {
	m := ObjectMeta{Name: "x", Namespace: "shop"}
	s := &Set{Groups: []Group{{Metadata: m}}, NetworkRules: []NetworkRule{{Metadata: m}}, ProcessProfiles: []ProcessProfile{{Metadata: m}},
		FileRules: []FileRule{{Metadata: m}}, ResponseRules: []ResponseRule{{Metadata: m}}}
	for _, kind := range Kinds() {
		var tm TypeMeta
		switch d := s.Document(kind, 0).(type) {
		case *Group:
			tm = d.TypeMeta
		case *NetworkRule:
			tm = d.TypeMeta
		case *ProcessProfile:
			tm = d.TypeMeta
		case *FileRule:
			tm = d.TypeMeta
		case *ResponseRule:
			tm = d.TypeMeta
		default:
			t.Fatalf("%s: document %T", kind, d)
		}
		if tm != (TypeMeta{APIVersion: APIVersion, Kind: kind}) {
			t.Errorf("%s: type meta %+v", kind, tm)
		}
	}
	if s.Groups[0].TypeMeta != (TypeMeta{}) || s.ResponseRules[0].TypeMeta != (TypeMeta{}) {
		t.Errorf("Document changed the set's own documents")
	}
	if d := s.Document("Pod", 0); d != nil {
		t.Errorf("unknown kind: %v", d)
	}
}
