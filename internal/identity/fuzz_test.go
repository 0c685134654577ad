package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	identityv1 "github.com/meshguard/meshguard/api/identity/v1"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/identity/identitytest"
)

func FuzzCheckCSR(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	r, _ := rsa.GenerateKey(rand.Reader, 1024)
	f.Add(csrFor(f, k, testID))
	f.Add(csrFor(f, k, ""))
	f.Add(csrFor(f, r, testID))
	f.Add([]byte{})
	f.Add([]byte("\x30\x82\xff\xffgarbage"))
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, _, err := identity.CheckCSR(der)
		if err == nil && csr == nil {
			t.Fatal("nil CSR without error")
		}
	})
}

// FuzzAttest drives the whole attestation handler (CSR, token, requested ID) with arbitrary
// bytes: it must refuse cleanly, never panic, and only issue for a real token.
func FuzzAttest(f *testing.F) {
	s := identitytest.Start(f, time.Hour)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := csrFor(f, k, testID)
	f.Add(good, []byte("mgjt_x"), "", "join_token")
	f.Add(good, []byte(s.Token(f, testID, time.Hour)), testID, "")
	f.Add([]byte("junk"), []byte{}, "spiffe://x", "k8s")
	f.Fuzz(func(t *testing.T, csr, evidence []byte, id, attestor string) {
		resp, err := s.Service.Attest(context.Background(), &identityv1.AttestRequest{Csr: csr, Evidence: evidence, SpiffeId: id, Attestor: attestor})
		if err == nil && (resp == nil || resp.SpiffeId != testID) {
			t.Fatalf("issued %v for fuzzed input", resp)
		}
	})
}

// FuzzAttestWire feeds raw bytes through protobuf decoding into the handler, as the gRPC
// server does for a request that fits MaxRequestBytes.
func FuzzAttestWire(f *testing.F) {
	s := identitytest.Start(f, time.Hour)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	seed, _ := proto.Marshal(&identityv1.AttestRequest{Csr: csrFor(f, k, testID), Evidence: []byte("mgjt_x"), Attestor: "join_token"})
	f.Add(seed)
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, wire []byte) {
		if len(wire) > identity.MaxRequestBytes {
			return
		}
		var req identityv1.AttestRequest
		if proto.Unmarshal(wire, &req) != nil {
			return
		}
		if resp, err := s.Service.Attest(context.Background(), &req); err == nil {
			t.Fatalf("issued %v for fuzzed wire input", resp)
		}
	})
}
