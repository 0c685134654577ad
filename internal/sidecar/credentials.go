package sidecar

import (
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshguard/meshguard/internal/identity/workload"
)

// WorkloadCredentials adapts the identity service's workload client to Credentials. Each
// handshake reads the source's current SVID and bundle, so renewals by its Run loop apply to
// new tunnel connections without touching established ones.
func WorkloadCredentials(src *workload.Source) Credentials {
	a := workloadAdapter{src: src}
	return Credentials{SVID: a, Bundle: a}
}

type workloadAdapter struct{ src *workload.Source }

// errNoSVID is returned before the first attestation; the sidecar is not ready then.
var errNoSVID = errors.New("no SVID yet: the workload client has not attested")

func (a workloadAdapter) GetX509SVID() (*x509svid.SVID, error) {
	s := a.src.SVID()
	if s == nil {
		return nil, errNoSVID
	}
	return &x509svid.SVID{ID: s.ID, Certificates: s.Certificates, PrivateKey: s.PrivateKey}, nil
}

// GetX509BundleForTrustDomain serves the workload's bundle for its own trust domain; the mesh
// does not federate yet.
func (a workloadAdapter) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s := a.src.SVID()
	if s == nil {
		return nil, errNoSVID
	}
	if own := s.ID.TrustDomain(); own != td {
		return nil, fmt.Errorf("no bundle for trust domain %q (this workload trusts %q only)", td, own)
	}
	return x509bundle.FromX509Authorities(td, a.src.Bundle()), nil
}
