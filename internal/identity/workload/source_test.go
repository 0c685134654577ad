package workload_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshguard/meshguard/internal/identity/identitytest"
	"github.com/meshguard/meshguard/internal/identity/workload"
)

const (
	webID = "spiffe://test.local/ns/default/sa/web"
	dbID  = "spiffe://test.local/ns/default/sa/db"
)

func newSource(t *testing.T, s *identitytest.Server, id string) *workload.Source {
	t.Helper()
	src, err := workload.New(workload.Config{
		Addr: s.Addr, ServerCAs: s.CA.Bundle(), JoinToken: s.Token(t, id, time.Minute),
		Clock: s.Clock, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestFetchedSVIDVerifiesWithOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed (apt-get install openssl)")
	}
	s := identitytest.Start(t, time.Hour)
	src := newSource(t, s, webID)
	if err := src.Attest(context.Background()); err != nil {
		t.Fatal(err)
	}
	chain, key, bundle, err := src.PEM()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	leafEnd := strings.Index(string(chain), "-----END CERTIFICATE-----\n") + len("-----END CERTIFICATE-----\n")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf, inter, ca := write("leaf.pem", chain[:leafEnd]), write("inter.pem", chain[leafEnd:]), write("bundle.pem", bundle)
	write("key.pem", key)
	out, err := exec.Command("openssl", "verify", "-CAfile", ca, "-untrusted", inter, leaf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	// And it must reject the leaf without the intermediate: the check is real.
	if out, err := exec.Command("openssl", "verify", "-CAfile", ca, leaf).CombinedOutput(); err == nil {
		t.Fatalf("openssl accepted the leaf without its intermediate:\n%s", out)
	}
	if got := src.SVID().ID.String(); got != webID {
		t.Fatalf("id = %s", got)
	}
}

func TestRunRenewsAtHalfLifeWithJitterUntilRevoked(t *testing.T) {
	s := identitytest.Start(t, time.Hour)
	src := newSource(t, s, webID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()

	for i := range 3 {
		if err := s.Clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatalf("renewal %d: Run never waited for its renewal timer: %v", i, err)
		}
		leaf := src.SVID().Certificates[0]
		life := leaf.NotAfter.Sub(leaf.NotBefore)
		at := src.RenewAt().Sub(leaf.NotBefore)
		if at < life*4/10 || at > life*6/10 {
			t.Fatalf("renewal %d scheduled at %v of a %v lifetime, want 50%% ± 10%%", i, at, life)
		}
		s.Clock.Advance(src.RenewAt().Sub(s.Clock.Now()))
		// Wait for the renewed SVID: Run installs it and then arms the next timer.
		if err := s.Clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if next := src.SVID().Certificates[0]; next.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
			t.Fatalf("renewal %d: SVID unchanged", i)
		}
	}
	if err := s.Service.Revoke(ctx, webID); err != nil {
		t.Fatal(err)
	}
	s.Clock.Advance(time.Second)
	s.Clock.Advance(src.RenewAt().Sub(s.Clock.Now()))
	err := <-done
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("Run after revocation returned %v, want a revoked refusal", err)
	}
}

// TestHandshakesNeverFailThroughRotation runs a real mTLS server and client, each renewing on
// its own schedule, through intermediate and root rotations in every order: no handshake fails.
func TestHandshakesNeverFailThroughRotation(t *testing.T) {
	s := identitytest.Start(t, time.Hour)
	ctx := context.Background()
	server, client := newSource(t, s, dbID), newSource(t, s, webID)
	for _, src := range []*workload.Source{server, client} {
		if err := src.Attest(ctx); err != nil {
			t.Fatal(err)
		}
	}
	only := func(want string) workload.Authorizer {
		return func(id spiffeid.ID) error {
			if id.String() != want {
				return errors.New("unexpected peer " + id.String())
			}
			return nil
		}
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server.ServerTLSConfig(only(webID)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = c.Write([]byte("ok"))
			}()
		}
	}()
	handshakes := 0
	shake := func(step string) {
		t.Helper()
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(&d, "tcp", ln.Addr().String(), client.ClientTLSConfig(only(dbID)))
		if err != nil {
			t.Fatalf("%s: handshake failed: %v", step, err)
		}
		defer c.Close()
		buf := make([]byte, 2)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("%s: server refused the client: %v", step, err)
		}
		handshakes++
	}
	renew := func(src *workload.Source) {
		t.Helper()
		if err := src.Renew(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rotate := func(root bool) {
		t.Helper()
		if err := s.Service.Rotate(ctx, root); err != nil {
			t.Fatal(err)
		}
	}

	shake("initial")
	for _, root := range []bool{false, true, true, false, true} {
		s.Clock.Advance(20 * time.Minute)
		rotate(root)
		shake("after rotation, nobody renewed")
		renew(server)
		shake("server renewed, client on old bundle")
		renew(client)
		shake("both renewed")
		s.Clock.Advance(20 * time.Minute)
		rotate(root)
		renew(client)
		shake("client renewed first")
		renew(server)
		shake("both renewed again")
	}
	if handshakes != 26 {
		t.Fatalf("%d handshakes, want 26", handshakes)
	}
	// The bundle carries every unexpired root: the first plus six rotated-in ones.
	if n := len(client.Bundle()); n != 7 {
		t.Fatalf("client bundle has %d roots, want 7", n)
	}
	// A peer the authorizer does not expect is refused: verification is real.
	c, err := tls.Dial("tcp", ln.Addr().String(), client.ClientTLSConfig(only(webID)))
	if err == nil {
		c.Close()
		t.Fatal("client accepted a server with an unexpected SPIFFE ID")
	}
	// Verification runs at the injected clock: once the SVIDs expire, handshakes fail.
	s.Clock.Advance(2 * time.Hour)
	if c, err = tls.Dial("tcp", ln.Addr().String(), client.ClientTLSConfig(only(dbID))); err == nil {
		c.Close()
		t.Fatal("client accepted an expired server SVID")
	}
	if err := client.Renew(ctx); err == nil {
		t.Fatal("expired SVID renewed")
	}
}

func TestRunStopsWhenSVIDExpired(t *testing.T) {
	s := identitytest.Start(t, 10*time.Minute)
	src := newSource(t, s, webID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	if err := s.Clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// The workload was suspended past its SVID's lifetime: renewal must be refused.
	s.Clock.Advance(time.Hour)
	err := <-done
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "attest again") {
		t.Fatalf("Run after expiry = %v, want an expired refusal telling to attest again", err)
	}
}
