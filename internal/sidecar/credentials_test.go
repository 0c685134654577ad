package sidecar

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/identity/workload"
)

// The identity service's workload client plugs into the tunnel through WorkloadCredentials.
func TestWorkloadCredentials(t *testing.T) {
	m := newMesh(t)
	app := echoServer(t)
	src, err := workload.New(workload.Config{
		Addr: "127.0.0.1:1", ServerCAs: []*x509.Certificate{m.ca.cert},
		Clock: clockwork.NewRealClock(), Log: quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	creds := WorkloadCredentials(src)
	if _, err := creds.SVID.GetX509SVID(); err == nil {
		t.Fatal("SVID before attestation")
	}
	svid := m.ca.svid(t, "/ns/shop/sa/web")
	keyDER, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	if err := src.Load(pemOf("CERTIFICATE", svid.Certificates[0].Raw), pemOf("PRIVATE KEY", keyDER), pemOf("CERTIFICATE", m.ca.cert.Raw)); err != nil {
		t.Fatal(err)
	}
	if _, err := creds.Bundle.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("other.org")); err == nil {
		t.Fatal("bundle for a foreign trust domain")
	}
	client, err := NewTunnelClient(TunnelClientConfig{Creds: creds, Clock: clockwork.NewRealClock(), Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close(context.Background())
	s, err := client.Open(openCtx(t), m.peer, fmt.Sprintf(":%d", app.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := roundTrip(s, []byte("via workload source"))
	if err != nil || string(got) != "via workload source" {
		t.Fatalf("got %q, %v", got, err)
	}
	if r := m.reports.next(t); r.Source != svid.ID {
		t.Fatalf("server saw %v, want %v", r.Source, svid.ID)
	}
}
