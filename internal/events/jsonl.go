package events

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
)

// JSONLines writes each event as one JSON object per line (for files, stdout, log shippers).
type JSONLines struct {
	name string
	mu   sync.Mutex
	enc  *json.Encoder
}

// NewJSONLines returns an exporter named name writing to w (callers serialise nothing: it
// locks).
func NewJSONLines(name string, w io.Writer) *JSONLines {
	return &JSONLines{name: name, enc: json.NewEncoder(w)}
}

// Name implements Exporter.
func (j *JSONLines) Name() string { return j.name }

// Export implements Exporter.
func (j *JSONLines) Export(_ context.Context, e Event) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.enc.Encode(e); err != nil {
		return fmt.Errorf("events: jsonl %s: %w", j.name, err)
	}
	return nil
}
