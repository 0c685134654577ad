package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/identity"
)

type namedPrincipals struct{ byName map[string]api.Principal }

func (n namedPrincipals) ByTokenHash([32]byte) (api.Principal, bool) { return api.Principal{}, false }
func (n namedPrincipals) ByName(s string) (api.Principal, bool) {
	p, ok := n.byName[s]
	return p, ok
}
func (n namedPrincipals) CreateToken(context.Context, api.Principal) (string, error) { return "", nil }
func (n namedPrincipals) Bind(context.Context, api.Principal) error                  { return nil }

// TestClientCertificatePrincipal: a client presenting an SVID from the CA whose SPIFFE ID is
// bound to a principal acts with that principal's role, without a token; an unbound or
// foreign certificate does not authenticate.
func TestClientCertificatePrincipal(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	td := spiffeid.RequireTrustDomainFromString("td")
	ca, err := identity.LoadCA(identity.CAConfig{Dir: t.TempDir(), TrustDomain: td, Clock: clockwork.NewRealClock(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	other, err := identity.LoadCA(identity.CAConfig{Dir: t.TempDir(), TrustDomain: td, Clock: clockwork.NewRealClock(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ci := "spiffe://td/ns/ops/sa/ci"
	srv, err := api.New(api.Config{Listener: ln, GetCertificate: ca.ServerCertificate([]string{"127.0.0.1"}), AdminToken: admin,
		Identity: &fakeIdentity{}, Events: events.NewRing(10), Log: log, ClientRoots: ca.Bundle,
		Principals: namedPrincipals{byName: map[string]api.Principal{ci: {Name: ci, Role: api.RoleViewer}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()

	roots := x509.NewCertPool()
	for _, r := range ca.Bundle() {
		roots.AddCert(r)
	}
	client := func(signer *identity.CA, id string) *http.Client {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		svid, err := signer.SignSVID(key.Public(), spiffeid.RequireFromString(id), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots,
			Certificates: []tls.Certificate{{Certificate: svid.Chain, PrivateKey: key}}}}}
	}
	get := func(c *http.Client, path string) (int, api.Principal) {
		resp, err := c.Get("https://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p api.Principal
		_ = json.NewDecoder(resp.Body).Decode(&p)
		return resp.StatusCode, p
	}
	if code, p := get(client(ca, ci), "/api/v1/whoami"); code != 200 || p.Name != ci || p.Role != api.RoleViewer {
		t.Fatalf("bound certificate: %d %+v", code, p)
	}
	if code, _ := get(client(ca, ci), "/api/v1/ca/rotate"); code != 403 && code != 405 {
		t.Fatalf("viewer certificate on an admin route: %d", code)
	}
	if code, _ := get(client(ca, "spiffe://td/ns/ops/sa/other"), "/api/v1/whoami"); code != 401 {
		t.Fatalf("unbound certificate: %d", code)
	}
	// A certificate from another CA never authenticates (the client does not even offer it:
	// its issuer is not among the CAs the server asks for; if offered, the handshake fails).
	if resp, err := client(other, ci).Get("https://" + ln.Addr().String() + "/api/v1/whoami"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("a certificate from a foreign CA was accepted: %d", resp.StatusCode)
		}
	}
}
