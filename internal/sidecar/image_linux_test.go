package sidecar

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func rssFileKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssFile:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

func TestTrimImage(t *testing.T) {
	before := rssFileKB(t)
	n, err := TrimImage()
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 {
		t.Fatal("no read-only mapping of the executable was advised")
	}
	after := rssFileKB(t)
	if after >= before {
		t.Fatalf("file-backed RSS %d kB after trimming, %d kB before", after, before)
	}
	// The program keeps working on the pages it faults back in.
	if _, err := NewInbound(InboundConfig{}); err == nil || !strings.Contains(err.Error(), "inbound") {
		t.Fatalf("code after the trim: %v", err)
	}
}
