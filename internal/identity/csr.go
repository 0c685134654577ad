package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxCSRBytes bounds a CSR; a P-256 CSR with one URI SAN is a few hundred bytes.
const MaxCSRBytes = 8 << 10

// CheckCSR parses a DER CSR from an untrusted workload and applies meshguard's key policy:
// the SVID key must be ECDSA P-256 (what SVIDs are specified as). RSA below 2048 bits and
// curves below 256 bits are refused as weak; everything else (RSA of any size, P-384, P-521,
// Ed25519) as unsupported. It returns the CSR and the SPIFFE ID it asks for, if any.
func CheckCSR(der []byte) (*x509.CertificateRequest, spiffeid.ID, error) {
	if len(der) == 0 {
		return nil, spiffeid.ID{}, refused(codeInvalid, "empty CSR")
	}
	if len(der) > MaxCSRBytes {
		return nil, spiffeid.ID{}, refused(codeInvalid, "CSR of %d bytes exceeds the %d-byte limit", len(der), MaxCSRBytes)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, spiffeid.ID{}, refused(codeInvalid, "malformed CSR: %v", err)
	}
	if err := checkWorkloadKey(csr.PublicKey); err != nil {
		return nil, spiffeid.ID{}, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, spiffeid.ID{}, refused(codeInvalid, "CSR signature does not verify: %v", err)
	}
	var id spiffeid.ID
	switch len(csr.URIs) {
	case 0:
	case 1:
		if id, err = spiffeid.FromURI(csr.URIs[0]); err != nil {
			return nil, spiffeid.ID{}, refused(codeInvalid, "CSR URI SAN is not a SPIFFE ID: %v", err)
		}
	default:
		return nil, spiffeid.ID{}, refused(codeInvalid, "CSR has %d URI SANs; an SVID carries exactly one SPIFFE ID", len(csr.URIs))
	}
	return csr, id, nil
}

func checkWorkloadKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return nil
		}
		if k.Curve.Params().BitSize < 256 {
			return refused(codeInvalid, "weak CSR key: ECDSA %s; use ECDSA P-256", k.Curve.Params().Name)
		}
		return refused(codeInvalid, "unsupported CSR key: ECDSA %s; SVIDs use ECDSA P-256", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return refused(codeInvalid, "weak CSR key: RSA %d bits; use ECDSA P-256", k.N.BitLen())
		}
		return refused(codeInvalid, "unsupported CSR key: RSA %d bits; SVIDs use ECDSA P-256", k.N.BitLen())
	case ed25519.PublicKey:
		return refused(codeInvalid, "unsupported CSR key: Ed25519; SVIDs use ECDSA P-256")
	default:
		return refused(codeInvalid, "unsupported CSR key type %T; SVIDs use ECDSA P-256", pub)
	}
}

// Refusal is an error caused by the request, not the controller: the reason is safe to show
// to the caller (gRPC status, REST 400) and is recorded in the audit event.
type Refusal struct {
	code   refusalCode
	Reason string
}

type refusalCode int

const (
	codeInvalid refusalCode = iota + 1 // the request itself is bad
	codeDenied                         // the evidence does not entitle the caller
	codeUnauth                         // the caller could not be authenticated (renew)
)

func (r *Refusal) Error() string { return r.Reason }

func refused(code refusalCode, format string, args ...any) *Refusal {
	return &Refusal{code: code, Reason: fmt.Sprintf(format, args...)}
}

// Invalid marks err as caused by the request (REST 400, gRPC InvalidArgument).
func Invalid(err error) *Refusal { return &Refusal{code: codeInvalid, Reason: err.Error()} }
