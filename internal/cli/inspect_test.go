package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Execute(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestInspectJSON(t *testing.T) {
	code, out, errs := runCLI("inspect", "--format", "json",
		"../inspect/testdata/http/curl-nginx-port53.pcap", "../inspect/testdata/dns/dig-udp-5300.pcapng")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 9 {
		t.Fatalf("got %d lines, want 3 http + 6 dns flows:\n%s", len(lines), out)
	}
	var first struct {
		Src, Dst, Transport, Protocol string
		L7                            map[string]any
		Packets, Bytes                int
		Mismatch                      bool
	}
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first.Protocol != "http" || first.Transport != "tcp" || !strings.HasSuffix(first.Dst, ":53") ||
		!first.Mismatch || first.Packets == 0 || first.L7["method"] == nil {
		t.Errorf("first flow: %+v", first)
	}
	if !strings.Contains(lines[8], `"protocol":"dns"`) {
		t.Errorf("last flow: %s", lines[8])
	}
}

func TestInspectTableAndErrors(t *testing.T) {
	code, out, _ := runCLI("inspect", "../inspect/testdata/tls/curl-nginx-8080.pcap")
	if code != 0 || !strings.Contains(out, "PROTOCOL") || !strings.Contains(out, "tls (port mismatch)") ||
		!strings.Contains(out, "www.meshguard.test") {
		t.Fatalf("table (exit %d):\n%s", code, out)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(bad, []byte("not a capture"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCLI("inspect", bad)
	if code == 0 || !strings.Contains(errs, "not a pcap or pcapng file") {
		t.Fatalf("bad file: exit %d, stderr %q", code, errs)
	}
	whole, err := os.ReadFile("../inspect/testdata/http/curl-nginx-80.pcap")
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.pcap")
	if err := os.WriteFile(cut, whole[:len(whole)-40], 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runCLI("inspect", "--format", "json", cut)
	if code != 0 || !strings.Contains(errs, "warning") || !strings.Contains(out, `"protocol":"http"`) {
		t.Fatalf("truncated: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if code, _, _ := runCLI("inspect", "--format", "xml", cut); code == 0 {
		t.Fatal("--format xml accepted")
	}
}
