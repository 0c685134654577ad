package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/fileutil"
)

// Lifetimes and limits of what the CA issues.
const (
	DefaultSVIDTTL = time.Hour
	MinSVIDTTL     = 5 * time.Minute
	MaxSVIDTTL     = 24 * time.Hour
	// Backdate is how far NotBefore is set in the past so peers with slightly slow clocks
	// accept a fresh certificate.
	Backdate        = time.Minute
	rootTTL         = 10 * 365 * 24 * time.Hour
	intermediateTTL = 365 * 24 * time.Hour
	serverCertTTL   = 24 * time.Hour
)

// CA modes: who owns the root.
const (
	modeManaged         = "managed"          // meshguard generated the root
	modeBYORoot         = "byo-root"         // user's root; meshguard makes intermediates
	modeBYOIntermediate = "byo-intermediate" // user's intermediate signs directly
)

// CAConfig configures LoadCA.
type CAConfig struct {
	Dir         string // where the CA state lives; created 0700
	TrustDomain spiffeid.TrustDomain
	Clock       clockwork.Clock
	Log         *slog.Logger
	// Bring your own CA (first start only): a PEM certificate (a root, or an intermediate
	// followed by its chain) with its PEM private key; BundlePEM holds the roots when
	// CertPEM is an intermediate.
	CertPEM, KeyPEM, BundlePEM []byte
}

func (c CAConfig) validate() error {
	if c.Dir == "" || c.TrustDomain.IsZero() || c.Clock == nil || c.Log == nil {
		return errors.New("identity ca: dir, trust domain, clock and logger are required")
	}
	if (len(c.CertPEM) == 0) != (len(c.KeyPEM) == 0) {
		return errors.New("identity ca: --ca-cert and --ca-key must be given together")
	}
	return nil
}

// CA issues SVIDs and server certificates. It is safe for concurrent use; rotation swaps the
// signer atomically under a lock that signing only reads.
type CA struct {
	cfg CAConfig

	mu    sync.RWMutex
	st    caState
	gen   uint64 // bumped on every rotation; server certificates re-issue when it changes
	chain [][]byte

	srvMu   sync.Mutex
	srvCert *tls.Certificate
	srvGen  uint64
}

// caState is the CA in memory; persisted as caFile.
type caState struct {
	mode     string
	roots    []*x509.Certificate // every trusted root, oldest first
	root     *x509.Certificate   // current root (nil for byo-intermediate)
	rootKey  crypto.Signer
	inter    *x509.Certificate
	interKey crypto.Signer
	extra    []*x509.Certificate // chain after the intermediate: cross-signed root, BYO parents
}

// caFile is the on-disk form (0600).
type caFile struct {
	Mode             string   `json:"mode"`
	Roots            []string `json:"roots"`
	RootCert         string   `json:"rootCert,omitempty"`
	RootKey          string   `json:"rootKey,omitempty"`
	IntermediateCert string   `json:"intermediateCert"`
	IntermediateKey  string   `json:"intermediateKey"`
	Chain            []string `json:"chain,omitempty"`
}

// LoadCA loads the CA from cfg.Dir, creating (or importing, for bring-your-own) it on first start.
func LoadCA(cfg CAConfig) (*CA, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity ca: create %s: %w", cfg.Dir, err)
	}
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity ca: chmod %s: %w", cfg.Dir, err)
	}
	ca := &CA{cfg: cfg}
	raw, err := os.ReadFile(ca.statePath())
	switch {
	case err == nil:
		if err := ca.decode(raw); err != nil {
			return nil, fmt.Errorf("identity ca: %s: %w (restore it from backup, or move it away to start a new CA)", ca.statePath(), err)
		}
		if len(cfg.CertPEM) > 0 && !bytes.Equal(firstPEM(cfg.CertPEM), certPEM(ca.signingParent())) {
			return nil, fmt.Errorf("identity ca: %s already holds a different CA; move %s away to import --ca-cert", cfg.Dir, ca.statePath())
		}
		cfg.Log.Info("loaded CA", "mode", ca.st.mode, "roots", len(ca.st.roots), "dir", cfg.Dir)
	case errors.Is(err, os.ErrNotExist):
		if len(cfg.CertPEM) > 0 {
			err = ca.importCA()
		} else {
			err = ca.createManaged()
		}
		if err != nil {
			return nil, err
		}
		if err := ca.save(); err != nil {
			return nil, err
		}
		cfg.Log.Info("created CA", "mode", ca.st.mode, "dir", cfg.Dir)
	default:
		return nil, fmt.Errorf("identity ca: read %s: %w", ca.statePath(), err)
	}
	ca.rebuildChain()
	if err := ca.writeBundle(); err != nil {
		return nil, err
	}
	return ca, nil
}

func (ca *CA) statePath() string { return filepath.Join(ca.cfg.Dir, "ca.json") }

// BundlePath is the PEM file of trusted roots, rewritten on every change.
func (ca *CA) BundlePath() string { return filepath.Join(ca.cfg.Dir, "bundle.pem") }

// TrustDomain is the trust domain the CA issues for.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.cfg.TrustDomain }

func (ca *CA) signingParent() *x509.Certificate {
	if ca.st.mode == modeBYOIntermediate {
		return ca.st.inter
	}
	return ca.st.root
}

func (ca *CA) createManaged() error {
	root, key, err := ca.newRoot()
	if err != nil {
		return err
	}
	ca.st = caState{mode: modeManaged, roots: []*x509.Certificate{root}, root: root, rootKey: key}
	return ca.newIntermediate()
}

func (ca *CA) newRoot() (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := ca.cfg.Clock.Now()
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshguard"}, CommonName: fmt.Sprintf("meshguard root CA %s %x", ca.cfg.TrustDomain, serial.Bytes()[:4])},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(rootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{ca.cfg.TrustDomain.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("identity ca: create root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// newIntermediate makes a fresh intermediate under the current root.
func (ca *CA) newIntermediate() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := ca.cfg.Clock.Now()
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	notAfter := now.Add(intermediateTTL)
	if notAfter.After(ca.st.root.NotAfter) {
		notAfter = ca.st.root.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshguard"}, CommonName: fmt.Sprintf("meshguard intermediate CA %s %x", ca.cfg.TrustDomain, serial.Bytes()[:4])},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{ca.cfg.TrustDomain.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.st.root, key.Public(), ca.st.rootKey)
	if err != nil {
		return fmt.Errorf("identity ca: create intermediate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	ca.st.inter, ca.st.interKey = cert, key
	return nil
}

// importCA adopts the user's root or intermediate.
func (ca *CA) importCA() error {
	certs, err := parseCertsPEM(ca.cfg.CertPEM)
	if err != nil || len(certs) == 0 {
		return fmt.Errorf("identity ca: --ca-cert: no PEM certificate found (%v)", err)
	}
	key, err := parseKeyPEM(ca.cfg.KeyPEM)
	if err != nil {
		return fmt.Errorf("identity ca: --ca-key: %w", err)
	}
	c := certs[0]
	if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("identity ca: --ca-cert is not a CA certificate (needs basicConstraints CA:TRUE and keyUsage keyCertSign)")
	}
	if !publicKeysEqual(c.PublicKey, key.Public()) {
		return errors.New("identity ca: --ca-key does not match --ca-cert")
	}
	if err := checkSigningKey(key); err != nil {
		return fmt.Errorf("identity ca: --ca-key: %w", err)
	}
	if bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil {
		ca.st = caState{mode: modeBYORoot, roots: []*x509.Certificate{c}, root: c, rootKey: key}
		return ca.newIntermediate()
	}
	var roots, extra []*x509.Certificate
	for _, p := range certs[1:] {
		if bytes.Equal(p.RawSubject, p.RawIssuer) {
			roots = append(roots, p)
		} else {
			extra = append(extra, p)
		}
	}
	if len(ca.cfg.BundlePEM) > 0 {
		b, err := parseCertsPEM(ca.cfg.BundlePEM)
		if err != nil {
			return fmt.Errorf("identity ca: --ca-bundle: %w", err)
		}
		roots = append(roots, b...)
	}
	if len(roots) == 0 {
		return errors.New("identity ca: --ca-cert is an intermediate; give its root with --ca-bundle (or append it to --ca-cert)")
	}
	opts := x509.VerifyOptions{Roots: pool(roots), Intermediates: pool(extra), CurrentTime: ca.cfg.Clock.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if _, err := c.Verify(opts); err != nil {
		return fmt.Errorf("identity ca: --ca-cert does not chain to the given roots: %w", err)
	}
	ca.st = caState{mode: modeBYOIntermediate, roots: roots, inter: c, interKey: key, extra: extra}
	return nil
}

// Rotate replaces the intermediate, and with newRoot also the root. Old roots stay in the
// bundle until they expire, and the new root is cross-signed by the old one and sent in every
// chain, so peers holding only the old bundle still verify the new certificates.
func (ca *CA) Rotate(newRoot bool) error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	prev := ca.st
	switch {
	case ca.st.mode == modeBYOIntermediate:
		return refused(codeInvalid, "ca rotate: the signing CA is your own intermediate (--ca-cert); rotate it by restarting with a new one in a fresh --data-dir")
	case newRoot && ca.st.mode != modeManaged:
		return refused(codeInvalid, "ca rotate --root: the root is your own (--ca-cert); only the intermediate can be rotated (omit --root)")
	}
	if newRoot {
		root, key, err := ca.newRoot()
		if err != nil {
			return err
		}
		cross, err := ca.crossSign(root, prev.root, prev.rootKey)
		if err != nil {
			return err
		}
		ca.st.roots = append(append([]*x509.Certificate(nil), prev.roots...), root)
		ca.st.root, ca.st.rootKey = root, key
		ca.st.extra = []*x509.Certificate{cross}
	}
	if err := ca.newIntermediate(); err != nil {
		ca.st = prev
		return err
	}
	if err := ca.save(); err != nil {
		ca.st = prev
		return err
	}
	ca.gen++
	ca.rebuildChain()
	ca.cfg.Log.Info("rotated CA", "root", newRoot, "intermediate", ca.st.inter.Subject.CommonName)
	return ca.writeBundleLocked()
}

// crossSign issues newRoot's subject and key under oldRoot so old bundles chain to the new root.
func (ca *CA) crossSign(newRoot, oldRoot *x509.Certificate, oldKey crypto.Signer) (*x509.Certificate, error) {
	tmpl := *newRoot
	if tmpl.NotAfter.After(oldRoot.NotAfter) {
		tmpl.NotAfter = oldRoot.NotAfter
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, oldRoot, newRoot.PublicKey, oldKey)
	if err != nil {
		return nil, fmt.Errorf("identity ca: cross-sign new root: %w", err)
	}
	return x509.ParseCertificate(der)
}

// IntermediateDue reports whether the intermediate has used two thirds of its lifetime and
// can be rotated here (not a user-provided intermediate).
func (ca *CA) IntermediateDue() bool {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	if ca.st.mode == modeBYOIntermediate {
		return false
	}
	in := ca.st.inter
	return !ca.cfg.Clock.Now().Before(in.NotBefore.Add(in.NotAfter.Sub(in.NotBefore) * 2 / 3))
}

// rebuildChain caches the DER chain sent after every leaf; caller holds mu (or is LoadCA).
func (ca *CA) rebuildChain() {
	now := ca.cfg.Clock.Now()
	chain := [][]byte{ca.st.inter.Raw}
	for _, c := range ca.st.extra {
		if now.Before(c.NotAfter) {
			chain = append(chain, c.Raw)
		}
	}
	ca.chain = chain
}

// Bundle returns the roots a workload should trust now: every unexpired root.
func (ca *CA) Bundle() []*x509.Certificate {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	return ca.bundleLocked()
}

func (ca *CA) bundleLocked() []*x509.Certificate {
	now := ca.cfg.Clock.Now()
	out := make([]*x509.Certificate, 0, len(ca.st.roots))
	for _, r := range ca.st.roots {
		if now.Before(r.NotAfter) {
			out = append(out, r)
		}
	}
	return out
}

// BundlePEM returns Bundle as PEM.
func (ca *CA) BundlePEM() []byte { return certsPEM(ca.Bundle()) }

func (ca *CA) writeBundle() error {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	return ca.writeBundleLocked()
}

func (ca *CA) writeBundleLocked() error {
	return fileutil.WriteAtomic(ca.BundlePath(), certsPEM(ca.bundleLocked()), 0o644)
}

// SVID is a signed workload certificate chain, DER, leaf first.
type SVID struct {
	Chain    [][]byte
	NotAfter time.Time
}

// SignSVID issues an X.509-SVID for id over the workload's public key pub, valid for ttl
// (clamped to the intermediate's lifetime). pub must already have passed CheckCSR.
func (ca *CA) SignSVID(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration) (SVID, error) {
	if ttl < MinSVIDTTL || ttl > MaxSVIDTTL {
		return SVID{}, fmt.Errorf("svid ttl %v: want between %v and %v", ttl, MinSVIDTTL, MaxSVIDTTL)
	}
	serial, err := randomSerial()
	if err != nil {
		return SVID{}, err
	}
	now := ca.cfg.Clock.Now().Truncate(time.Second)
	ca.mu.RLock()
	inter, key, chain := ca.st.inter, ca.st.interKey, ca.chain
	ca.mu.RUnlock()
	notAfter := now.Add(ttl)
	if notAfter.After(inter.NotAfter) {
		notAfter = inter.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshguard"}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter, pub, key)
	if err != nil {
		return SVID{}, fmt.Errorf("sign svid for %s: %w", id, err)
	}
	out := make([][]byte, 0, 1+len(chain))
	out = append(out, der)
	out = append(out, chain...)
	return SVID{Chain: out, NotAfter: notAfter}, nil
}

// ServerCertificate returns a GetCertificate callback for the controller's own TLS listeners:
// a certificate for hosts (DNS names or IPs) issued by the current intermediate, re-issued after
// a rotation or at half its lifetime.
func (ca *CA) ServerCertificate(hosts []string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		ca.srvMu.Lock()
		defer ca.srvMu.Unlock()
		ca.mu.RLock()
		gen := ca.gen
		ca.mu.RUnlock()
		now := ca.cfg.Clock.Now()
		if c := ca.srvCert; c != nil && ca.srvGen == gen && now.Before(c.Leaf.NotBefore.Add(c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)/2)) {
			return c, nil
		}
		c, err := ca.issueServerCert(hosts)
		if err != nil {
			return nil, err
		}
		ca.srvCert, ca.srvGen = c, gen
		return c, nil
	}
}

func (ca *CA) issueServerCert(hosts []string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := ca.cfg.Clock.Now()
	ca.mu.RLock()
	inter, ikey, chain := ca.st.inter, ca.st.interKey, ca.chain
	ca.mu.RUnlock()
	id, _ := spiffeid.FromSegments(ca.cfg.TrustDomain, "meshguard", "controller")
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshguard"}, CommonName: "meshguard controller"},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(serverCertTTL),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	if tmpl.NotAfter.After(inter.NotAfter) {
		tmpl.NotAfter = inter.NotAfter
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter, key.Public(), ikey)
	if err != nil {
		return nil, fmt.Errorf("issue controller server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: append([][]byte{der}, chain...), PrivateKey: key, Leaf: leaf}, nil
}

// ErrExpired marks an SVID whose lifetime is over: the workload must attest again.
var ErrExpired = errors.New("svid expired")

// VerifySVID checks a presented chain (leaf first) against the current bundle at the CA's
// clock and returns the leaf's SPIFFE ID.
func (ca *CA) VerifySVID(chain []*x509.Certificate) (spiffeid.ID, *x509.Certificate, error) {
	if len(chain) == 0 {
		return spiffeid.ID{}, nil, errors.New("no certificate presented")
	}
	leaf := chain[0]
	now := ca.cfg.Clock.Now()
	if now.After(leaf.NotAfter) {
		return spiffeid.ID{}, nil, fmt.Errorf("%w at %s; attest again with a new join token", ErrExpired, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	id, err := VerifyChain(chain, ca.Bundle(), now, ca.cfg.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	// Only workload SVIDs renew; the controller's own certificates never do.
	if err := checkWorkloadPath(id.Path()); err != nil {
		return spiffeid.ID{}, nil, fmt.Errorf("%s is not a workload identity: %w", id, err)
	}
	if !hasEKU(leaf, x509.ExtKeyUsageClientAuth) {
		return spiffeid.ID{}, nil, fmt.Errorf("%s: certificate lacks clientAuth extended key usage", id)
	}
	return id, leaf, nil
}

func hasEKU(c *x509.Certificate, want x509.ExtKeyUsage) bool {
	for _, u := range c.ExtKeyUsage {
		if u == want {
			return true
		}
	}
	return false
}

// VerifyChain verifies an SVID chain (leaf first) against roots at time now and returns the
// leaf's SPIFFE ID, which must be its only URI SAN and belong to td.
func VerifyChain(chain []*x509.Certificate, roots []*x509.Certificate, now time.Time, td spiffeid.TrustDomain) (spiffeid.ID, error) {
	if len(chain) == 0 {
		return spiffeid.ID{}, errors.New("no certificate presented")
	}
	leaf := chain[0]
	if leaf.IsCA {
		return spiffeid.ID{}, errors.New("leaf certificate is a CA")
	}
	if len(leaf.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("leaf has %d URI SANs, want exactly one SPIFFE ID", len(leaf.URIs))
	}
	id, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("leaf URI SAN: %w", err)
	}
	if !id.MemberOf(td) {
		return spiffeid.ID{}, fmt.Errorf("spiffe id %s is not in trust domain %s", id, td)
	}
	opts := x509.VerifyOptions{Roots: pool(roots), Intermediates: pool(chain[1:]), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if _, err := leaf.Verify(opts); err != nil {
		return spiffeid.ID{}, fmt.Errorf("verify svid %s: %w", id, err)
	}
	return id, nil
}

func (ca *CA) save() error {
	f := caFile{
		Mode:             ca.st.mode,
		IntermediateCert: string(certPEM(ca.st.inter)),
	}
	for _, r := range ca.st.roots {
		f.Roots = append(f.Roots, string(certPEM(r)))
	}
	for _, c := range ca.st.extra {
		f.Chain = append(f.Chain, string(certPEM(c)))
	}
	var err error
	if f.IntermediateKey, err = keyPEM(ca.st.interKey); err != nil {
		return err
	}
	if ca.st.root != nil {
		f.RootCert = string(certPEM(ca.st.root))
		if f.RootKey, err = keyPEM(ca.st.rootKey); err != nil {
			return err
		}
	}
	raw, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return fileutil.WriteAtomic(ca.statePath(), raw, 0o600)
}

func (ca *CA) decode(raw []byte) error {
	var f caFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return err
	}
	st := caState{mode: f.Mode}
	var err error
	for _, r := range f.Roots {
		c, err := parseOneCert(r)
		if err != nil {
			return fmt.Errorf("roots: %w", err)
		}
		st.roots = append(st.roots, c)
	}
	for _, r := range f.Chain {
		c, err := parseOneCert(r)
		if err != nil {
			return fmt.Errorf("chain: %w", err)
		}
		st.extra = append(st.extra, c)
	}
	if st.inter, err = parseOneCert(f.IntermediateCert); err != nil {
		return fmt.Errorf("intermediate: %w", err)
	}
	if st.interKey, err = parseKeyPEM([]byte(f.IntermediateKey)); err != nil {
		return fmt.Errorf("intermediate key: %w", err)
	}
	if f.RootCert != "" {
		if st.root, err = parseOneCert(f.RootCert); err != nil {
			return fmt.Errorf("root: %w", err)
		}
		if st.rootKey, err = parseKeyPEM([]byte(f.RootKey)); err != nil {
			return fmt.Errorf("root key: %w", err)
		}
	}
	switch {
	case len(st.roots) == 0:
		return errors.New("no roots")
	case st.mode != modeBYOIntermediate && st.root == nil:
		return errors.New("no root key")
	}
	ca.st = st
	return nil
}

// checkSigningKey refuses CA keys too weak to sign meshguard certificates.
func checkSigningKey(k crypto.Signer) error {
	switch pk := k.Public().(type) {
	case *ecdsa.PublicKey:
		if pk.Curve != elliptic.P256() && pk.Curve != elliptic.P384() && pk.Curve != elliptic.P521() {
			return errors.New("ECDSA curve not supported; use P-256, P-384 or P-521")
		}
	case *rsa.PublicKey:
		if pk.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too weak; use at least 2048", pk.N.BitLen())
		}
	default:
		return fmt.Errorf("key type %T not supported; use ECDSA or RSA", pk)
	}
	return nil
}

func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	b[0] &= 0x7f
	b[0] |= 0x01 // keep 16 bytes and positive
	return new(big.Int).SetBytes(b), nil
}

func pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func certPEM(c *x509.Certificate) []byte {
	if c == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func certsPEM(cs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range cs {
		b = append(b, certPEM(c)...)
	}
	return b
}

// firstPEM re-encodes the first certificate of a PEM file canonically for comparison.
func firstPEM(raw []byte) []byte {
	cs, err := parseCertsPEM(raw)
	if err != nil || len(cs) == 0 {
		return nil
	}
	return certPEM(cs[0])
}

func keyPEM(k crypto.Signer) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

func parseOneCert(s string) (*x509.Certificate, error) {
	cs, err := parseCertsPEM([]byte(s))
	if err != nil {
		return nil, err
	}
	if len(cs) != 1 {
		return nil, fmt.Errorf("want one certificate, found %d", len(cs))
	}
	return cs[0], nil
}

// ParseCertsPEM parses every CERTIFICATE block in raw.
func ParseCertsPEM(raw []byte) ([]*x509.Certificate, error) { return parseCertsPEM(raw) }

func parseCertsPEM(raw []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, raw = pem.Decode(raw)
		if b == nil {
			return out, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

func parseKeyPEM(raw []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, raw = pem.Decode(raw)
		if b == nil {
			return nil, errors.New("no PEM private key found")
		}
		var k any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("key type %T cannot sign", k)
		}
		return s, nil
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type eq interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(eq)
	return ok && e.Equal(b)
}
