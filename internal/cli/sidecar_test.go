package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadSecretFileRefusesReadableByOthers(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "join-token")
	if err := os.WriteFile(p, []byte("tok-123\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readSecretFile(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("0644 token file: err %v, want a refusal naming the fix", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := readSecretFile(p)
	if err != nil || tok != "tok-123" {
		t.Fatalf("0600 token file: %q, %v", tok, err)
	}
	if err := os.WriteFile(p, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readSecretFile(p); err == nil {
		t.Fatal("empty token file accepted")
	}
}
