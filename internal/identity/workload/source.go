// Package workload is the workload side of meshguard identity: it generates the private key
// locally (it never leaves the process), attests to the controller's identity service with a
// join token, renews over mTLS at half the SVID's lifetime (± jitter), and serves the current
// SVID and trust bundle to TLS configurations for mutual TLS between workloads.
package workload

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	identityv1 "github.com/meshguard/meshguard/api/identity/v1"
	"github.com/meshguard/meshguard/internal/identity"
)

// Config configures a Source.
type Config struct {
	Addr       string              // identity service host:port
	ServerCAs  []*x509.Certificate // roots trusted for the identity service before the first SVID
	ServerName string              // TLS name of the identity service; default: host of Addr
	JoinToken  string              // single-use evidence for the first attestation
	SPIFFEID   string              // optional: the ID the workload expects; refused if the token says otherwise
	Clock      clockwork.Clock
	Log        *slog.Logger
	Jitter     float64 // renew at 50% ± Jitter×lifetime; default 0.1, at most 0.4
	Seed       uint64  // jitter randomness; tests fix it, 0 means random
	// Dialer, if set, opens the connections to the identity service. The sidecar passes one
	// that marks its sockets, so renewals still reach the controller while the pod is
	// quarantined (the quarantine lets only marked traffic to the controller through).
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
}

func (c *Config) validate() error {
	if c.Addr == "" || c.Clock == nil || c.Log == nil {
		return errors.New("workload source: addr, clock and logger are required")
	}
	if len(c.ServerCAs) == 0 {
		return errors.New("workload source: no CA to verify the identity service; pass --ca-file with the controller's bundle")
	}
	if c.Jitter < 0 || c.Jitter > 0.4 {
		return fmt.Errorf("workload source: jitter %v: want 0..0.4", c.Jitter)
	}
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(c.Addr)
		if err != nil {
			return fmt.Errorf("workload source: identity address %q: %w", c.Addr, err)
		}
		c.ServerName = host
	}
	return nil
}

// SVID is a workload's current identity.
type SVID struct {
	ID           spiffeid.ID
	Certificates []*x509.Certificate // leaf first
	PrivateKey   *ecdsa.PrivateKey
}

// Source holds the workload's SVID and bundle and keeps them fresh.
type Source struct {
	cfg Config
	rng *mrand.Rand

	mu      sync.RWMutex
	svid    *SVID
	tlsCert *tls.Certificate
	bundle  []*x509.Certificate
	renewAt time.Time
}

// New builds a Source; call Attest (or Run) to obtain the first SVID.
func New(cfg Config) (*Source, error) {
	if cfg.Jitter == 0 {
		cfg.Jitter = 0.1
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = mrand.Uint64()
	}
	return &Source{cfg: cfg, rng: mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), bundle: cfg.ServerCAs}, nil
}

// Attest obtains an SVID with the join token (usable once).
func (s *Source) Attest(ctx context.Context) error {
	key, csr, err := newKeyAndCSR()
	if err != nil {
		return err
	}
	resp, err := s.call(ctx, false, func(c identityv1.IdentityClient) (*identityv1.SVIDResponse, error) {
		return c.Attest(ctx, &identityv1.AttestRequest{Csr: csr, Attestor: identity.JoinTokenType, Evidence: []byte(s.cfg.JoinToken), SpiffeId: s.cfg.SPIFFEID})
	})
	if err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	return s.install(resp, key)
}

// Renew replaces the SVID (with a new key) authenticating with the current one.
func (s *Source) Renew(ctx context.Context) error {
	if s.SVID() == nil {
		return errors.New("renew: no SVID yet; attest first")
	}
	key, csr, err := newKeyAndCSR()
	if err != nil {
		return err
	}
	resp, err := s.call(ctx, true, func(c identityv1.IdentityClient) (*identityv1.SVIDResponse, error) {
		return c.Renew(ctx, &identityv1.RenewRequest{Csr: csr})
	})
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	return s.install(resp, key)
}

// Run attests if there is no SVID yet, then renews at each RenewAt until ctx ends. Transient
// failures are retried; it returns an error when the SVID expired or renewal was refused for
// good (revoked): the workload must attest again with a new join token.
func (s *Source) Run(ctx context.Context) error {
	if s.SVID() == nil {
		if err := s.Attest(ctx); err != nil {
			return err
		}
	}
	for {
		s.mu.RLock()
		at := s.renewAt
		notAfter := s.svid.Certificates[0].NotAfter
		s.mu.RUnlock()
		if err := s.sleepUntil(ctx, at); err != nil {
			return nil
		}
		err := s.Renew(ctx)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		now := s.cfg.Clock.Now()
		if c := status.Code(err); c == codes.PermissionDenied || c == codes.Unauthenticated || !now.Before(notAfter) {
			return err
		}
		retry := notAfter.Sub(now) / 10
		retry = max(retry, time.Second)
		s.cfg.Log.Warn("svid renewal failed; retrying", "err", err, "retry_in", retry)
		s.mu.Lock()
		s.renewAt = now.Add(retry)
		s.mu.Unlock()
	}
}

func (s *Source) sleepUntil(ctx context.Context, at time.Time) error {
	d := at.Sub(s.cfg.Clock.Now())
	if d <= 0 {
		return ctx.Err()
	}
	t := s.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.Chan():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Source) call(ctx context.Context, withSVID bool, f func(identityv1.IdentityClient) (*identityv1.SVIDResponse, error)) (*identityv1.SVIDResponse, error) {
	s.mu.RLock()
	roots := identityPool(s.bundle, s.cfg.ServerCAs)
	cert := s.tlsCert
	s.mu.RUnlock()
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: s.cfg.ServerName, Time: s.cfg.Clock.Now}
	if withSVID {
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}
	if s.cfg.Dialer != nil {
		opts = append(opts, grpc.WithContextDialer(s.cfg.Dialer))
	}
	conn, err := grpc.NewClient("passthrough:///"+s.cfg.Addr, opts...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return f(identityv1.NewIdentityClient(conn))
}

func identityPool(a, b []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range a {
		p.AddCert(c)
	}
	for _, c := range b {
		p.AddCert(c)
	}
	return p
}

func (s *Source) install(resp *identityv1.SVIDResponse, key *ecdsa.PrivateKey) error {
	if len(resp.GetCertChain()) == 0 || len(resp.GetBundle()) == 0 {
		return errors.New("identity service returned an empty SVID or bundle")
	}
	chain, err := parseDER(resp.GetCertChain())
	if err != nil {
		return fmt.Errorf("svid chain: %w", err)
	}
	bundle, err := parseDER(resp.GetBundle())
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return s.set(chain, bundle, key)
}

// Load installs an SVID kept from an earlier run (PEM chain leaf first, PEM key, PEM bundle),
// so the workload can Renew without a new join token while it is still valid.
func (s *Source) Load(chainPEM, keyPEM, bundlePEM []byte) error {
	chain, err := identity.ParseCertsPEM(chainPEM)
	if err != nil || len(chain) == 0 {
		return fmt.Errorf("svid: no PEM certificate (%v)", err)
	}
	bundle, err := identity.ParseCertsPEM(bundlePEM)
	if err != nil || len(bundle) == 0 {
		return fmt.Errorf("bundle: no PEM certificate (%v)", err)
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return errors.New("key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return fmt.Errorf("key: %T, want ECDSA", k)
	}
	return s.set(chain, bundle, key)
}

func (s *Source) set(chain, bundle []*x509.Certificate, key *ecdsa.PrivateKey) error {
	leaf := chain[0]
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return errors.New("svid certificate does not match the private key")
	}
	now := s.cfg.Clock.Now()
	id, err := identity.VerifyChain(chain, bundle, now, trustDomainOf(leaf))
	if err != nil {
		return fmt.Errorf("returned svid: %w", err)
	}
	raw := make([][]byte, len(chain))
	for i, c := range chain {
		raw[i] = c.Raw
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	jitter := time.Duration((s.rng.Float64()*2 - 1) * s.cfg.Jitter * float64(life))
	s.mu.Lock()
	s.svid = &SVID{ID: id, Certificates: chain, PrivateKey: key}
	s.tlsCert = &tls.Certificate{Certificate: raw, PrivateKey: key, Leaf: leaf}
	s.bundle = bundle
	s.renewAt = leaf.NotBefore.Add(life/2 + jitter)
	s.mu.Unlock()
	s.cfg.Log.Debug("svid installed", "spiffe_id", id.String(), "expires", leaf.NotAfter, "renew_at", s.renewAt)
	return nil
}

func trustDomainOf(leaf *x509.Certificate) spiffeid.TrustDomain {
	if len(leaf.URIs) == 1 {
		if id, err := spiffeid.FromURI(leaf.URIs[0]); err == nil {
			return id.TrustDomain()
		}
	}
	return spiffeid.TrustDomain{}
}

// SVID returns the current SVID, nil before the first attestation.
func (s *Source) SVID() *SVID {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svid
}

// Bundle returns the current trusted roots.
func (s *Source) Bundle() []*x509.Certificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.bundle
}

// RenewAt is when Run will renew next.
func (s *Source) RenewAt() time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.renewAt
}

// Authorizer decides whether a verified peer ID may talk to us; nil allows any ID of the
// trust domain.
type Authorizer func(spiffeid.ID) error

// ServerTLSConfig is a tls.Config for a workload's server side: it presents the current SVID
// and requires a client SVID that verifies against the current bundle.
func (s *Source) ServerTLSConfig(authorize Authorizer) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS12,
		GetCertificate:   func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.certificate() },
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: s.VerifyPeer(authorize),
	}
}

// ClientTLSConfig is a tls.Config for a workload's client side: it presents the current SVID
// and verifies the server's SVID (by SPIFFE ID, not host name) against the current bundle.
func (s *Source) ClientTLSConfig(authorize Authorizer) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return s.certificate() },
		// Host names mean nothing in the mesh; VerifyConnection checks the chain and the ID.
		InsecureSkipVerify: true,
		VerifyConnection:   s.VerifyPeer(authorize),
	}
}

func (s *Source) certificate() (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.tlsCert == nil {
		return nil, errors.New("no SVID yet")
	}
	return s.tlsCert, nil
}

// VerifyPeer returns a tls.Config.VerifyConnection callback that verifies the peer's SVID
// chain against the current bundle at the injected clock, then applies authorize. Unlike
// VerifyPeerCertificate it also runs on resumed sessions, so expiry and bundle changes apply.
func (s *Source) VerifyPeer(authorize Authorizer) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		s.mu.RLock()
		bundle, own := s.bundle, s.svid
		s.mu.RUnlock()
		if own == nil {
			return errors.New("no SVID yet, cannot verify peers")
		}
		id, err := identity.VerifyChain(cs.PeerCertificates, bundle, s.cfg.Clock.Now(), own.ID.TrustDomain())
		if err != nil {
			return err
		}
		if authorize != nil {
			return authorize(id)
		}
		return nil
	}
}

// PEM encodes the SVID for files: chain (leaf first), PKCS#8 key, bundle.
func (s *Source) PEM() (chain, key, bundle []byte, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.svid == nil {
		return nil, nil, nil, errors.New("no SVID yet")
	}
	for _, c := range s.svid.Certificates {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(s.svid.PrivateKey)
	if err != nil {
		return nil, nil, nil, err
	}
	key = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	for _, c := range s.bundle {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return chain, key, bundle, nil
}

func newKeyAndCSR() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	return key, csr, err
}

func parseDER(raw [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
