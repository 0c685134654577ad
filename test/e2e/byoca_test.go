package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBringYourOwnRootCA: a root made with openssl signs the meshguard intermediate, fetched
// SVIDs verify against that root alone, and root rotation is refused (the user owns the root).
func TestBringYourOwnRootCA(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed (apt-get install openssl)")
	}
	dir := t.TempDir()
	caCert, caKey := filepath.Join(dir, "corp-root.pem"), filepath.Join(dir, "corp-root.key")
	out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
		"-nodes", "-keyout", caKey, "-out", caCert, "-days", "30", "-subj", "/O=corp/CN=corp root",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	c := StartController(t, "", "--ca-cert", caCert, "--ca-key", caKey)
	svid, r := fetch(t, c, tokenFor(t, c, webID))
	if r.Code != 0 {
		t.Fatalf("svid fetch: %s", r.Stderr)
	}
	chain := filepath.Join(svid, "svid.pem")
	if out, err := exec.Command("openssl", "verify", "-CAfile", caCert, "-untrusted", chain, chain).CombinedOutput(); err != nil {
		t.Fatalf("SVID does not verify against the user's root: %v\n%s", err, out)
	}
	if r := c.CLI(t, "ca", "rotate", "--root"); r.Code == 0 || !strings.Contains(r.Stderr, "root is your own") {
		t.Fatalf("ca rotate --root with a user root: exit %d, %q", r.Code, r.Stderr)
	}
	if r := c.CLI(t, "ca", "rotate"); r.Code != 0 {
		t.Fatalf("ca rotate (intermediate) under a user root: %s", r.Stderr)
	}
	svid2, r := fetch(t, c, tokenFor(t, c, webID))
	if r.Code != 0 {
		t.Fatalf("svid fetch after rotation: %s", r.Stderr)
	}
	chain2 := filepath.Join(svid2, "svid.pem")
	if out, err := exec.Command("openssl", "verify", "-CAfile", caCert, "-untrusted", chain2, chain2).CombinedOutput(); err != nil {
		t.Fatalf("rotated SVID vs user root: %v\n%s", err, out)
	}
}
