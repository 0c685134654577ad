package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const webID = "spiffe://cluster.local/ns/default/sa/web"

// fetch runs `svid fetch` into a new directory and returns it with the result.
func fetch(t *testing.T, c *Controller, token string) (string, Result) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "svid")
	return out, Run(t, "svid", "fetch", "--identity", c.Admin.Identity, "--ca-file", c.Admin.CAFile, "--token", token, "--out", out)
}

func tokenFor(t *testing.T, c *Controller, id string, extra ...string) string {
	t.Helper()
	r := c.CLI(t, append([]string{"token", "create", "--spiffe-id", id}, extra...)...)
	if r.Code != 0 {
		t.Fatalf("token create: exit %d: %s", r.Code, r.Stderr)
	}
	tok := strings.TrimSpace(r.Stdout)
	if tok == "" || strings.ContainsAny(tok, " \n") {
		t.Fatalf("token create printed %q, want only the token", r.Stdout)
	}
	return tok
}

func TestIdentityEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed (apt-get install openssl)")
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	c := StartController(t, dataDir)
	for path, want := range map[string]os.FileMode{dataDir: 0o700, c.ConfigPath(): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v (%v), want %v", path, fi.Mode().Perm(), err, want)
		}
	}

	tok := tokenFor(t, c, webID, "--ttl", "10m")
	dir, r := fetch(t, c, tok)
	if r.Code != 0 {
		t.Fatalf("svid fetch: exit %d: %s", r.Code, r.Stderr)
	}
	if fi, err := os.Stat(filepath.Join(dir, "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	leafFile, interFile := splitChain(t, dir)
	out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(dir, "bundle.pem"), "-untrusted", interFile, leafFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	leaf := readLeaf(t, dir)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != webID {
		t.Fatalf("URI SANs %v, want only %s", leaf.URIs, webID)
	}
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life != time.Hour+time.Minute {
		t.Fatalf("lifetime %v, want 1h (+1m back-dated NotBefore)", life)
	}

	// The token is single-use: a second fetch fails with a one-line reason.
	_, r = fetch(t, c, tok)
	if r.Code == 0 || !strings.Contains(r.Stderr, "join token already used") || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 {
		t.Fatalf("reused token: exit %d, stderr %q; want non-zero and one line naming the reuse", r.Code, r.Stderr)
	}

	// Renewal over mTLS with the fetched SVID works; after revocation it is refused.
	if r := Run(t, "svid", "renew", "--identity", c.Admin.Identity, "--dir", dir); r.Code != 0 {
		t.Fatalf("svid renew: exit %d: %s", r.Code, r.Stderr)
	}
	if r := c.CLI(t, "svid", "revoke", "--spiffe-id", webID); r.Code != 0 {
		t.Fatalf("svid revoke: exit %d: %s", r.Code, r.Stderr)
	}
	r = Run(t, "svid", "renew", "--identity", c.Admin.Identity, "--dir", dir)
	if r.Code == 0 || !strings.Contains(r.Stderr, "revoked") {
		t.Fatalf("renew after revoke: exit %d, stderr %q", r.Code, r.Stderr)
	}

	// CA rotation (with a new root): the old SVID still verifies against the new bundle.
	if r := c.CLI(t, "ca", "rotate", "--root"); r.Code != 0 {
		t.Fatalf("ca rotate --root: exit %d: %s", r.Code, r.Stderr)
	}
	dir2, r := fetch(t, c, tokenFor(t, c, "spiffe://cluster.local/ns/default/sa/db"))
	if r.Code != 0 {
		t.Fatalf("fetch after rotation: %s", r.Stderr)
	}
	out, err = exec.Command("openssl", "verify", "-CAfile", filepath.Join(dir2, "bundle.pem"), "-untrusted", interFile, leafFile).CombinedOutput()
	if err != nil {
		t.Fatalf("pre-rotation SVID against post-rotation bundle: %v\n%s", err, out)
	}
	if n := bytes.Count(mustRead(t, filepath.Join(dir2, "bundle.pem")), []byte("BEGIN CERTIFICATE")); n != 2 {
		t.Fatalf("bundle after root rotation has %d roots, want old and new", n)
	}

	// The refusals and actions are in the audit trail.
	logs := c.Logs()
	for _, want := range []string{"name=svid.issued", "name=svid.renewed", "name=svid.revoked", "name=ca.rotated", `reason="join token already used"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("controller log lacks %s", want)
		}
	}

	// Restart: same CA (bundle unchanged), same admin token, still serving.
	bundleBefore := mustRead(t, c.Admin.CAFile)
	c.Stop(t)
	c2 := StartController(t, dataDir)
	if !bytes.Equal(bundleBefore, mustRead(t, c2.Admin.CAFile)) {
		t.Fatal("CA changed across a controller restart")
	}
	dir3, r := fetch(t, c2, tokenFor(t, c2, webID))
	if r.Code != 0 {
		t.Fatalf("fetch after restart: %s", r.Stderr)
	}
	out, err = exec.Command("openssl", "verify", "-CAfile", c.Admin.CAFile, "-untrusted", filepath.Join(dir3, "svid.pem"), filepath.Join(dir3, "svid.pem")).CombinedOutput()
	if err != nil {
		t.Fatalf("post-restart SVID against pre-restart bundle: %v\n%s", err, out)
	}
}

func TestTokenCreateRefusesBadInput(t *testing.T) {
	c := StartController(t, "")
	r := c.CLI(t, "token", "create", "--spiffe-id", "spiffe://other.domain/ns/a/sa/b")
	if r.Code == 0 || r.Stdout != "" || !strings.Contains(r.Stderr, "trust domain") {
		t.Fatalf("foreign trust domain: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	r = Run(t, "--config", filepath.Join(t.TempDir(), "missing.conf"), "token", "create", "--spiffe-id", webID)
	if r.Code == 0 || !strings.Contains(r.Stderr, "admin config") {
		t.Fatalf("missing config: exit %d stderr %q", r.Code, r.Stderr)
	}
	_, r = fetch(t, c, "mgjt_not-a-token")
	if r.Code == 0 || !strings.Contains(r.Stderr, "not recognised") {
		t.Fatalf("unknown token: exit %d stderr %q", r.Code, r.Stderr)
	}
}

// splitChain writes the leaf and the intermediates of dir/svid.pem to separate files.
func splitChain(t *testing.T, dir string) (leaf, inter string) {
	t.Helper()
	rest := mustRead(t, filepath.Join(dir, "svid.pem"))
	var blocks [][]byte
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks = append(blocks, pem.EncodeToMemory(b))
	}
	if len(blocks) < 2 {
		t.Fatalf("svid.pem has %d certificates, want leaf then intermediates", len(blocks))
	}
	leaf, inter = filepath.Join(dir, "leaf.pem"), filepath.Join(dir, "intermediates.pem")
	if err := os.WriteFile(leaf, blocks[0], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(inter, bytes.Join(blocks[1:], nil), 0o600); err != nil {
		t.Fatal(err)
	}
	return leaf, inter
}

func readLeaf(t *testing.T, dir string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(mustRead(t, filepath.Join(dir, "svid.pem")))
	if b == nil {
		t.Fatal("svid.pem: no PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
