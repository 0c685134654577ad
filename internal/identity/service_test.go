package identity_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	identityv1 "github.com/meshguard/meshguard/api/identity/v1"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/identity/identitytest"
)

const testID = "spiffe://test.local/ns/default/sa/web"

// client dials the identity service trusting its bundle, optionally presenting cert.
func client(t *testing.T, s *identitytest.Server, cert *tls.Certificate) identityv1.IdentityClient {
	t.Helper()
	roots := x509.NewCertPool()
	for _, r := range s.CA.Bundle() {
		roots.AddCert(r)
	}
	tc := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Time: s.Clock.Now}
	if cert != nil {
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	conn, err := grpc.NewClient("passthrough:///"+s.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return identityv1.NewIdentityClient(conn)
}

func csrFor(t testing.TB, key crypto.Signer, uri string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	if uri != "" {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestAttestIssuesSVIDAsSpecified(t *testing.T) {
	s := identitytest.Start(t, 30*time.Minute)
	c := client(t, s, nil)
	key := p256(t)
	issued := s.Clock.Now()
	resp, err := c.Attest(context.Background(), &identityv1.AttestRequest{Csr: csrFor(t, key, testID), Evidence: []byte(s.Token(t, testID, time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(resp.CertChain[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != testID {
		t.Fatalf("URI SANs = %v, want only %s", leaf.URIs, testID)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Fatalf("unexpected extra SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() || !pub.Equal(key.Public()) {
		t.Fatalf("leaf key = %T, want the workload's ECDSA P-256 key", leaf.PublicKey)
	}
	if got := leaf.NotAfter.Sub(issued); got != 30*time.Minute {
		t.Fatalf("lifetime = %v, want 30m", got)
	}
	if got := issued.Sub(leaf.NotBefore); got != identity.Backdate {
		t.Fatalf("NotBefore back-dated by %v, want %v", got, identity.Backdate)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature || leaf.IsCA {
		t.Fatalf("key usage = %v, isCA = %v", leaf.KeyUsage, leaf.IsCA)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("ext key usage = %v", leaf.ExtKeyUsage)
	}
	if len(resp.CertChain) != 2 || len(resp.Bundle) != 1 {
		t.Fatalf("chain %d certs, bundle %d roots; want 2 and 1", len(resp.CertChain), len(resp.Bundle))
	}
	if a := s.Audit(); a[len(a)-1].Name != "svid.issued" || a[len(a)-1].Source.Identity != testID {
		t.Fatalf("last audit event = %+v", a[len(a)-1])
	}
}

func TestAttestRefusals(t *testing.T) {
	s := identitytest.Start(t, time.Hour)
	c := client(t, s, nil)
	ctx := context.Background()
	good := func() []byte { return csrFor(t, p256(t), testID) }

	used := s.Token(t, testID, time.Minute)
	if _, err := c.Attest(ctx, &identityv1.AttestRequest{Csr: good(), Evidence: []byte(used)}); err != nil {
		t.Fatal(err)
	}
	expired := s.Token(t, testID, time.Minute)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)

	cases := []struct {
		name   string
		req    func() *identityv1.AttestRequest
		code   codes.Code
		reason string
	}{
		{"reused token", func() *identityv1.AttestRequest {
			return &identityv1.AttestRequest{Csr: good(), Evidence: []byte(used)}
		}, codes.PermissionDenied, "join token already used"},
		{"expired token", func() *identityv1.AttestRequest {
			s.Clock.Advance(2 * time.Minute)
			return &identityv1.AttestRequest{Csr: good(), Evidence: []byte(expired)}
		}, codes.PermissionDenied, "join token expired"},
		{"unknown token", func() *identityv1.AttestRequest {
			return &identityv1.AttestRequest{Csr: good(), Evidence: []byte("mgjt_nope")}
		}, codes.PermissionDenied, "join token not recognised"},
		{"wrong-ID token", func() *identityv1.AttestRequest {
			return &identityv1.AttestRequest{Csr: csrFor(t, p256(t), ""), Evidence: []byte(s.Token(t, testID, time.Minute)), SpiffeId: "spiffe://test.local/ns/default/sa/db"}
		}, codes.PermissionDenied, "join token is bound to " + testID},
		{"CSR SAN differs", func() *identityv1.AttestRequest {
			return &identityv1.AttestRequest{Csr: csrFor(t, p256(t), "spiffe://test.local/ns/default/sa/db"), Evidence: []byte(s.Token(t, testID, time.Minute))}
		}, codes.PermissionDenied, "CSR SAN spiffe://test.local/ns/default/sa/db differs from the attested ID"},
		{"weak RSA key", func() *identityv1.AttestRequest {
			return &identityv1.AttestRequest{Csr: csrFor(t, rsa1024, testID), Evidence: []byte(s.Token(t, testID, time.Minute))}
		}, codes.InvalidArgument, "weak CSR key: RSA 1024 bits"},
		{"weak curve", func() *identityv1.AttestRequest {
			return &identityv1.AttestRequest{Csr: csrFor(t, p224, testID), Evidence: []byte(s.Token(t, testID, time.Minute))}
		}, codes.InvalidArgument, "weak CSR key: ECDSA P-224"},
		{"unsupported curve", func() *identityv1.AttestRequest {
			return &identityv1.AttestRequest{Csr: csrFor(t, p384, testID), Evidence: []byte(s.Token(t, testID, time.Minute))}
		}, codes.InvalidArgument, "unsupported CSR key: ECDSA P-384"},
		{"garbage CSR", func() *identityv1.AttestRequest {
			return &identityv1.AttestRequest{Csr: []byte("\x30\x82garbage"), Evidence: []byte(s.Token(t, testID, time.Minute))}
		}, codes.InvalidArgument, "malformed CSR"},
		{"oversized CSR field", func() *identityv1.AttestRequest {
			return &identityv1.AttestRequest{Csr: make([]byte, identity.MaxCSRBytes+1), Evidence: []byte(s.Token(t, testID, time.Minute))}
		}, codes.InvalidArgument, "exceeds the 8192-byte limit"},
		{"oversized message", func() *identityv1.AttestRequest {
			return &identityv1.AttestRequest{Csr: make([]byte, identity.MaxRequestBytes+1)}
		}, codes.ResourceExhausted, "request larger than 65536 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(s.Audit())
			_, err := c.Attest(ctx, tc.req())
			if status.Code(err) != tc.code {
				t.Fatalf("code = %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if tc.code != codes.ResourceExhausted && !strings.Contains(status.Convert(err).Message(), tc.reason) {
				t.Fatalf("reason = %q, want it to contain %q", status.Convert(err).Message(), tc.reason)
			}
			// The stats hook may record the event just after the client sees the status.
			var ev []string
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
				a := s.Audit()
				if len(a) > before && a[len(a)-1].Action == "refuse" {
					ev = append(ev, a[len(a)-1].Reason)
					break
				}
				runtimeGosched()
			}
			if len(ev) == 0 || !strings.Contains(ev[0], tc.reason) {
				t.Fatalf("no refusal audit event with reason %q (got %v)", tc.reason, ev)
			}
			// The service keeps serving the next good request.
			if _, err := c.Attest(ctx, &identityv1.AttestRequest{Csr: good(), Evidence: []byte(s.Token(t, testID, time.Minute))}); err != nil {
				t.Fatalf("good request after refusal: %v", err)
			}
		})
	}
}

func TestRenewRequiresValidUnrevokedSVID(t *testing.T) {
	s := identitytest.Start(t, time.Hour)
	ctx := context.Background()
	attest := func() *tls.Certificate {
		key := p256(t)
		resp, err := client(t, s, nil).Attest(ctx, &identityv1.AttestRequest{Csr: csrFor(t, key, ""), Evidence: []byte(s.Token(t, testID, time.Minute))})
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Certificate{Certificate: resp.CertChain, PrivateKey: key}
	}
	cert := attest()

	if _, err := client(t, s, nil).Renew(ctx, &identityv1.RenewRequest{Csr: csrFor(t, p256(t), "")}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("renew without SVID: %v, want Unauthenticated", err)
	}
	// A certificate from another CA with the right SPIFFE ID is not an SVID of ours.
	forged := selfSigned(t, testID)
	if _, err := client(t, s, forged).Renew(ctx, &identityv1.RenewRequest{Csr: csrFor(t, p256(t), "")}); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "verify svid") {
		t.Fatalf("renew with a foreign certificate: %v, want Unauthenticated", err)
	}
	resp, err := client(t, s, cert).Renew(ctx, &identityv1.RenewRequest{Csr: csrFor(t, p256(t), "")})
	if err != nil {
		t.Fatalf("renew with valid SVID: %v", err)
	}
	if resp.SpiffeId != testID {
		t.Fatalf("renewed id = %s", resp.SpiffeId)
	}
	if _, err := client(t, s, cert).Renew(ctx, &identityv1.RenewRequest{Csr: csrFor(t, p256(t), "spiffe://test.local/ns/x/sa/y")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("renew for another ID: %v, want PermissionDenied", err)
	}

	// Expired: must attest again.
	s.Clock.Advance(time.Hour + time.Second)
	_, err = client(t, s, cert).Renew(ctx, &identityv1.RenewRequest{Csr: csrFor(t, p256(t), "")})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "svid expired") || !strings.Contains(err.Error(), "attest again") {
		t.Fatalf("renew with expired SVID: %v", err)
	}

	// Revoked: refused; a fresh attestation afterwards renews again.
	cert = attest()
	s.Clock.Advance(time.Second)
	if err := s.Service.Revoke(ctx, testID); err != nil {
		t.Fatal(err)
	}
	_, err = client(t, s, cert).Renew(ctx, &identityv1.RenewRequest{Csr: csrFor(t, p256(t), "")})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "was revoked") {
		t.Fatalf("renew after revoke: %v", err)
	}
	a := s.Audit()
	if last := a[len(a)-1]; last.Name != "svid.renew.refused" || !strings.Contains(last.Reason, "revoked") {
		t.Fatalf("last audit = %+v", last)
	}
	s.Clock.Advance(time.Second)
	cert = attest()
	if _, err := client(t, s, cert).Renew(ctx, &identityv1.RenewRequest{Csr: csrFor(t, p256(t), "")}); err != nil {
		t.Fatalf("renew of SVID attested after the revocation: %v", err)
	}
}

func TestIntermediateRotatesAutomatically(t *testing.T) {
	s := identitytest.Start(t, time.Hour, func(c *identity.Config) { c.MaintainEvery = time.Hour })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := p256(t)
	id := mustID(t, testID)
	before, err := s.CA.SignSVID(key.Public(), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Clock.BlockUntilContext(ctx, 1); err != nil { // the maintenance ticker
		t.Fatal(err)
	}
	s.Clock.Advance(200 * 24 * time.Hour)
	if s.CA.IntermediateDue() {
		t.Fatal("intermediate due after 200 of 365 days")
	}
	s.Clock.Advance(45 * 24 * time.Hour)
	for {
		if a := s.Audit(); len(a) > 0 && a[len(a)-1].Name == "ca.rotated" {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no automatic rotation after two thirds of the intermediate's lifetime")
		}
		runtimeGosched()
	}
	after, err := s.CA.SignSVID(key.Public(), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if string(after.Chain[1]) == string(before.Chain[1]) {
		t.Fatal("intermediate unchanged")
	}
}

func selfSigned(t *testing.T, uri string) *tls.Certificate {
	t.Helper()
	key := p256(t)
	u, _ := url.Parse(uri)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
