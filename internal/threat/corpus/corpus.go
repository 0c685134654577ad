// Package corpus reads the request corpora in internal/threat/testdata (format: README.md there)
// for the detection-rate tests and benchmarks of the threat detectors and sensors.
package corpus

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// Request is one corpus entry.
type Request struct {
	Label string // expected detector (attacks) or "benign"
	Line  int    // line of its "### " header in the file
	Raw   []byte // the request as sent on the wire
}

// Load reads a corpus file.
func Load(path string) ([]Request, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("corpus: %w", err)
	}
	return Parse(data)
}

// Parse splits a corpus into requests: each starts with a "### label" line; header lines are
// re-joined with CRLF; the body runs to the next "### " line (minus the final newline) and gets
// a Content-Length unless the request already frames it.
func Parse(data []byte) ([]Request, error) {
	var out []Request
	line := 1
	for len(data) > 0 {
		i := bytes.Index(data, []byte("### "))
		if i < 0 {
			break
		}
		line += bytes.Count(data[:i], []byte("\n"))
		data = data[i+4:]
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			return nil, fmt.Errorf("corpus: line %d: label without request", line)
		}
		label := string(bytes.TrimSpace(data[:nl]))
		data = data[nl+1:]
		line++
		end := bytes.Index(data, []byte("\n### "))
		var block []byte
		if end < 0 {
			block, data = data, nil
		} else {
			block, data = data[:end+1], data[end+1:]
		}
		start := line
		line += bytes.Count(block, []byte("\n"))
		block = bytes.TrimSuffix(block, []byte("\n"))
		hdrEnd := bytes.Index(block, []byte("\n\n"))
		if hdrEnd < 0 {
			return nil, fmt.Errorf("corpus: line %d: request without an empty line after the headers", start)
		}
		head, body := block[:hdrEnd], block[hdrEnd+2:]
		lines := bytes.Split(head, []byte("\n"))
		framed := false
		for _, l := range lines {
			n := bytes.ToLower(bytes.TrimSpace(l))
			if bytes.HasPrefix(n, []byte("content-length")) || bytes.HasPrefix(n, []byte("transfer-encoding")) {
				framed = true
			}
		}
		var raw []byte
		raw = append(raw, bytes.Join(lines, []byte("\r\n"))...)
		if len(body) > 0 && !framed {
			raw = append(raw, "\r\nContent-Length: "+strconv.Itoa(len(body))...)
		}
		raw = append(raw, "\r\n\r\n"...)
		raw = append(raw, body...)
		out = append(out, Request{Label: label, Line: start - 1, Raw: raw})
	}
	return out, nil
}
