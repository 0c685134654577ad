package sidecar

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// alpnTunnel is the only protocol the tunnel port speaks.
const alpnTunnel = "h2"

// Credentials are where the sidecar's own X.509 SVID and the trust bundles come from. Both are
// read on every TLS handshake, so a rotated SVID is used by the next connection while
// connections made with the previous one keep running. The identity service's workload client
// (or go-spiffe's workloadapi.X509Source) implements both.
type Credentials struct {
	SVID   x509svid.Source
	Bundle x509bundle.Source
}

func (c Credentials) validate() error {
	if c.SVID == nil || c.Bundle == nil {
		return errors.New("credentials: SVID and Bundle sources are required (the identity service's workload client provides both)")
	}
	return nil
}

// tlsCertificate turns the current SVID into a tls.Certificate.
func tlsCertificate(src x509svid.Source) (*tls.Certificate, *x509svid.SVID, error) {
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, nil, fmt.Errorf("get own SVID: %w", err)
	}
	if svid == nil || len(svid.Certificates) == 0 {
		return nil, nil, errors.New("own SVID has no certificate")
	}
	cert := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, svid, nil
}

// verifyPeer checks the peer's chain against the trust bundle at the clock's time and returns
// its SPIFFE ID. It runs from VerifyConnection, which (unlike VerifyPeerCertificate) also runs
// on resumed sessions.
func verifyPeer(certs []*x509.Certificate, bundles x509bundle.Source, clock clockwork.Clock) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, errors.New("peer presented no certificate")
	}
	id, _, err := x509svid.Verify(certs, bundles, x509svid.WithTime(clock.Now()))
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("peer SVID: %w", err)
	}
	return id, nil
}

// clientTLS is the config for one dial to a peer that must present want. onCert learns which
// SVID this side presented, so the pool can retire connections made with a rotated-out one.
func clientTLS(creds Credentials, clock clockwork.Clock, want spiffeid.ID, onCert func(*x509svid.SVID)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{alpnTunnel},
		// Chain and name are verified against the SPIFFE bundle and ID in VerifyConnection;
		// peers are addressed by IP, so hostname verification does not apply.
		InsecureSkipVerify: true, //nolint:gosec // replaced by VerifyConnection below
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, svid, err := tlsCertificate(creds.SVID)
			if err != nil {
				return nil, err
			}
			onCert(svid)
			return cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := verifyPeer(cs.PeerCertificates, creds.Bundle, clock)
			if err != nil {
				return err
			}
			if id != want {
				return fmt.Errorf("%w: peer is %s, config expects %s", ErrWrongPeer, id, want)
			}
			return nil
		},
	}
}

// serverTLS requires a client SVID from a trusted domain; which identities may do what is the
// policy hook's decision, made per stream.
func serverTLS(creds Credentials, clock clockwork.Clock) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		NextProtos:             []string{alpnTunnel},
		ClientAuth:             tls.RequireAnyClientCert,
		SessionTicketsDisabled: true, // every connection proves its identity with a full handshake
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, _, err := tlsCertificate(creds.SVID)
			return cert, err
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := verifyPeer(cs.PeerCertificates, creds.Bundle, clock)
			return err
		},
	}
}

// ErrWrongPeer means the peer's SVID is valid but is not the identity the config expects.
var ErrWrongPeer = errors.New("peer identity mismatch")
