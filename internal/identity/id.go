// Package identity is meshguard's workload identity system: a certificate authority (a root and
// an intermediate that signs workload certificates, or the user's own), SPIFFE ID validation,
// CSR checks, X.509-SVID signing, join-token attestation behind the Attestor interface,
// revocation, CA rotation with overlapping trust bundles, and the identity gRPC service that
// workloads call to attest and renew. The workload side lives in identity/workload.
package identity

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ParseWorkloadID parses s as a workload SPIFFE ID of trust domain td in the shape
// spiffe://<td>/ns/<namespace>/sa/<service-account>.
func ParseWorkloadID(td spiffeid.TrustDomain, s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("spiffe id %q: %w", s, err)
	}
	if !id.MemberOf(td) {
		return spiffeid.ID{}, fmt.Errorf("spiffe id %q: trust domain %q, want %q", s, id.TrustDomain(), td)
	}
	if err := checkWorkloadPath(id.Path()); err != nil {
		return spiffeid.ID{}, fmt.Errorf("spiffe id %q: %w", s, err)
	}
	return id, nil
}

func checkWorkloadPath(path string) error {
	seg := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(seg) != 4 || seg[0] != "ns" || seg[2] != "sa" || seg[1] == "" || seg[3] == "" {
		return fmt.Errorf("path %q: want /ns/<namespace>/sa/<service-account>", path)
	}
	return nil
}
