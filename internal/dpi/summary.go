package dpi

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Summary is a flow's bounded L7 digest for reports: how many messages of each type, and the
// first distinct values of each attribute key (HTTP method/host/path, DNS names, SNI...).
// Once the caps are reached, adding a message allocates nothing.
type Summary struct {
	maxKeys, maxValues, maxLen int
	types                      []typeCount
	attrs                      []attrValues
	err                        string
}

type typeCount struct {
	typ string
	n   int
}

type attrValues struct {
	key    string
	values []string
	more   bool // distinct values were dropped past the cap
}

func (s *Summary) init(c Config) {
	s.maxKeys, s.maxValues, s.maxLen = c.MaxSummaryKeys, c.MaxSummaryValues, c.MaxValueLen
}

func (s *Summary) add(m *Message) {
	if m.Type != "" {
		s.count(m.Type)
	}
	for _, a := range m.Attrs() {
		s.value(a.Key, a.Value)
	}
}

func (s *Summary) count(typ string) {
	for i := range s.types {
		if s.types[i].typ == typ {
			s.types[i].n++
			return
		}
	}
	if len(s.types) < s.maxKeys {
		if s.types == nil {
			s.types = make([]typeCount, 0, 4)
		}
		s.types = append(s.types, typeCount{typ: typ, n: 1})
	}
}

func (s *Summary) value(key string, v []byte) {
	if len(v) > s.maxLen {
		v = v[:s.maxLen]
	}
	for i := range s.attrs {
		a := &s.attrs[i]
		if a.key != key {
			continue
		}
		for _, have := range a.values {
			if have == string(v) { // no allocation: the compiler compares in place
				return
			}
		}
		if len(a.values) < s.maxValues {
			a.values = append(a.values, string(v))
		} else {
			a.more = true
		}
		return
	}
	if len(s.attrs) < s.maxKeys {
		if s.attrs == nil {
			s.attrs = make([]attrValues, 0, s.maxKeys)
		}
		values := make([]string, 1, s.maxValues)
		values[0] = string(v)
		s.attrs = append(s.attrs, attrValues{key: key, values: values})
	}
}

// Count is how many messages of type typ were seen (up to the key cap of types).
func (s *Summary) Count(typ string) int {
	for _, t := range s.types {
		if t.typ == typ {
			return t.n
		}
	}
	return 0
}

// Values is the first distinct values seen for key.
func (s *Summary) Values(key string) []string {
	for _, a := range s.attrs {
		if a.key == key {
			return a.values
		}
	}
	return nil
}

// Empty says nothing was summarised.
func (s *Summary) Empty() bool { return len(s.types) == 0 && len(s.attrs) == 0 && s.err == "" }

// MarshalJSON renders {"messages":{"request":3},"method":["GET"],...,"error":"..."} with keys in
// first-seen order, so output is stable for golden files. Keys whose values were capped get a
// trailing "..." entry.
func (s *Summary) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	sep := false
	if len(s.types) > 0 {
		b.WriteString(`"messages":{`)
		for i, t := range s.types {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, t.typ)
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(t.n))
		}
		b.WriteByte('}')
		sep = true
	}
	for _, a := range s.attrs {
		if sep {
			b.WriteByte(',')
		}
		sep = true
		writeJSONString(&b, a.key)
		b.WriteString(":[")
		for i, v := range a.values {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, v)
		}
		if a.more {
			b.WriteString(`,"..."`)
		}
		b.WriteByte(']')
	}
	if s.err != "" {
		if sep {
			b.WriteByte(',')
		}
		b.WriteString(`"error":`)
		writeJSONString(&b, s.err)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s) // replaces invalid UTF-8; cannot fail for a string
	b.Write(q)
}
