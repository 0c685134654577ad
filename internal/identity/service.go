package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	identityv1 "github.com/meshguard/meshguard/api/identity/v1"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/store"
)

// MaxRequestBytes caps any identity gRPC message; larger ones are refused before decoding.
const MaxRequestBytes = 64 << 10

// Config is everything the identity service needs.
type Config struct {
	CA          *CA
	JoinTokens  *JoinTokens
	Attestors   []Attestor // by Type(); JoinTokens is added if not listed
	Revocations store.Revocations
	Events      events.Sink
	Clock       clockwork.Clock
	Log         *slog.Logger
	SVIDTTL     time.Duration
	Listener    net.Listener // where the gRPC service is served
	ServerHosts []string     // names and IPs in the service's TLS certificate
	// MaintainEvery is how often the CA is checked: the intermediate is rotated at two thirds
	// of its lifetime and expired roots leave the bundle file. 0 disables (tests).
	MaintainEvery time.Duration
}

func (c Config) validate() error {
	if c.CA == nil || c.JoinTokens == nil || c.Revocations == nil || c.Events == nil || c.Clock == nil || c.Log == nil || c.Listener == nil {
		return errors.New("identity service: ca, join tokens, revocations, events, clock, logger and listener are required")
	}
	if c.SVIDTTL < MinSVIDTTL || c.SVIDTTL > MaxSVIDTTL {
		return fmt.Errorf("identity service: --svid-ttl %v: want between %v and %v", c.SVIDTTL, MinSVIDTTL, MaxSVIDTTL)
	}
	return nil
}

// Service is the identity gRPC service plus the admin operations (tokens, rotation,
// revocation) the REST API exposes. Every decision emits an audit event.
type Service struct {
	identityv1.UnimplementedIdentityServer
	cfg       Config
	attestors map[string]Attestor
}

// New builds the service from a validated config.
func New(cfg Config) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, attestors: map[string]Attestor{cfg.JoinTokens.Type(): cfg.JoinTokens}}
	for _, a := range cfg.Attestors {
		s.attestors[a.Type()] = a
	}
	return s, nil
}

// Run serves the identity gRPC service until ctx ends, then stops gracefully (bounded).
func (s *Service) Run(ctx context.Context) error {
	tlsCfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.cfg.CA.ServerCertificate(s.cfg.ServerHosts),
		// Renew authenticates with the SVID as client certificate. The handshake only proves
		// key possession; Renew verifies the chain itself against the current bundle at the
		// injected clock, so it can say "expired, attest again" instead of a TLS alert.
		ClientAuth: tls.RequestClientCert,
	}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.MaxRecvMsgSize(MaxRequestBytes),
		grpc.StatsHandler(oversizeAuditor{s}),
	)
	identityv1.RegisterIdentityServer(srv, s)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.cfg.Listener) }()
	if s.cfg.MaintainEvery > 0 {
		mctx, stop := context.WithCancel(ctx)
		maintained := make(chan struct{})
		go func() { s.maintain(mctx); close(maintained) }()
		defer func() { stop(); <-maintained }() // no file writes after Run returns
	}
	select {
	case err := <-errc:
		return fmt.Errorf("identity service: %w", err)
	case <-ctx.Done():
	}
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second): // real time: shutdown must not hang on a stuck client
		srv.Stop()
		<-done // Stop makes GracefulStop return
	}
	<-errc // and Serve: no goroutine outlives Run
	return nil
}

// Attest implements identityv1.IdentityServer.
func (s *Service) Attest(ctx context.Context, req *identityv1.AttestRequest) (*identityv1.SVIDResponse, error) {
	id, resp, err := s.attest(ctx, req)
	if err != nil {
		return nil, s.refuse(ctx, "svid.attest.refused", id, err)
	}
	s.audit(ctx, events.Event{Name: "svid.issued", Source: events.Endpoint{Identity: id.String()}, Action: "issue", Severity: events.SeverityInfo, Reason: "attested by " + attestorName(req.GetAttestor())})
	return resp, nil
}

func attestorName(t string) string {
	if t == "" {
		return JoinTokenType
	}
	return t
}

func (s *Service) attest(ctx context.Context, req *identityv1.AttestRequest) (spiffeid.ID, *identityv1.SVIDResponse, error) {
	// The CSR is checked before the evidence so a malformed request never burns a token.
	csr, csrID, err := CheckCSR(req.GetCsr())
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	att, ok := s.attestors[attestorName(req.GetAttestor())]
	if !ok {
		return spiffeid.ID{}, nil, refused(codeInvalid, "unknown attestor %q", req.GetAttestor())
	}
	id, err := att.Attest(ctx, req.GetEvidence())
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	if want := req.GetSpiffeId(); want != "" && want != id.String() {
		return id, nil, refused(codeDenied, "join token is bound to %s, not %s", id, want)
	}
	if !csrID.IsZero() && csrID != id {
		return id, nil, refused(codeDenied, "CSR SAN %s differs from the attested ID %s", csrID, id)
	}
	resp, err := s.sign(csr.PublicKey, id)
	return id, resp, err
}

// Renew implements identityv1.IdentityServer.
func (s *Service) Renew(ctx context.Context, req *identityv1.RenewRequest) (*identityv1.SVIDResponse, error) {
	id, resp, err := s.renew(ctx, req)
	if err != nil {
		return nil, s.refuse(ctx, "svid.renew.refused", id, err)
	}
	s.audit(ctx, events.Event{Name: "svid.renewed", Source: events.Endpoint{Identity: id.String()}, Action: "renew", Severity: events.SeverityInfo})
	return resp, nil
}

func (s *Service) renew(ctx context.Context, req *identityv1.RenewRequest) (spiffeid.ID, *identityv1.SVIDResponse, error) {
	chain := peerChain(ctx)
	if len(chain) == 0 {
		return spiffeid.ID{}, nil, refused(codeUnauth, "renew needs the current SVID as TLS client certificate; without one, attest with a join token")
	}
	id, leaf, err := s.cfg.CA.VerifySVID(chain)
	if err != nil {
		return spiffeid.ID{}, nil, refused(codeUnauth, "%v", err)
	}
	at, revoked, err := s.cfg.Revocations.RevokedAt(ctx, id.String())
	if err != nil {
		return id, nil, fmt.Errorf("revocation lookup: %w", err)
	}
	// NotBefore has second precision and is back-dated; an SVID issued in the same second as
	// the revocation counts as revoked (safe side).
	if revoked && !leaf.NotBefore.Add(Backdate).After(at) {
		return id, nil, refused(codeDenied, "%s was revoked at %s; attest again with a new join token", id, at.UTC().Format(time.RFC3339))
	}
	csr, csrID, err := CheckCSR(req.GetCsr())
	if err != nil {
		return id, nil, err
	}
	if !csrID.IsZero() && csrID != id {
		return id, nil, refused(codeDenied, "CSR SAN %s differs from the authenticated ID %s", csrID, id)
	}
	resp, err := s.sign(csr.PublicKey, id)
	return id, resp, err
}

func (s *Service) sign(pub any, id spiffeid.ID) (*identityv1.SVIDResponse, error) {
	svid, err := s.cfg.CA.SignSVID(pub, id, s.cfg.SVIDTTL)
	if err != nil {
		return nil, err
	}
	resp := &identityv1.SVIDResponse{CertChain: svid.Chain, SpiffeId: id.String()}
	for _, r := range s.cfg.CA.Bundle() {
		resp.Bundle = append(resp.Bundle, r.Raw)
	}
	return resp, nil
}

func peerChain(ctx context.Context) []*x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return ti.State.PeerCertificates
}

// refuse records the audit event and maps err to a gRPC status with a one-line reason.
func (s *Service) refuse(ctx context.Context, name string, id spiffeid.ID, err error) error {
	var r *Refusal
	if !errors.As(err, &r) {
		s.cfg.Log.Error("identity request failed", "err", err)
		r = &Refusal{Reason: "internal error; see the controller log"}
	}
	ev := events.Event{Name: name, Action: "refuse", Severity: events.SeverityMedium, Reason: r.Reason}
	if !id.IsZero() {
		ev.Source.Identity = id.String()
	}
	s.audit(ctx, ev)
	code := codes.Internal
	switch r.code {
	case codeInvalid:
		code = codes.InvalidArgument
	case codeDenied:
		code = codes.PermissionDenied
	case codeUnauth:
		code = codes.Unauthenticated
	}
	return status.Error(code, r.Reason)
}

func (s *Service) audit(ctx context.Context, e events.Event) {
	e.Kind, e.Time = events.KindAudit, s.cfg.Clock.Now()
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil && e.Source.Address == "" {
		e.Source.Address = p.Addr.String()
	}
	s.cfg.Events.Emit(ctx, e)
}

func (s *Service) maintain(ctx context.Context) {
	t := s.cfg.Clock.NewTicker(s.cfg.MaintainEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		if s.cfg.CA.IntermediateDue() {
			if err := s.Rotate(ctx, false); err != nil {
				s.cfg.Log.Error("automatic intermediate rotation failed", "err", err)
			}
		}
		if err := s.cfg.CA.writeBundle(); err != nil {
			s.cfg.Log.Error("rewrite bundle file", "err", err)
		}
	}
}

// CreateToken makes a join token for id (admin operation).
func (s *Service) CreateToken(ctx context.Context, id string, ttl time.Duration) (string, time.Time, error) {
	tok, exp, err := s.cfg.JoinTokens.Create(ctx, id, ttl)
	if err != nil {
		return "", time.Time{}, err
	}
	s.audit(ctx, events.Event{Name: "token.created", Source: events.Endpoint{Identity: id}, Action: "create", Severity: events.SeverityInfo, Reason: "expires " + exp.UTC().Format(time.RFC3339)})
	return tok, exp, nil
}

// Rotate rotates the CA (admin operation).
func (s *Service) Rotate(ctx context.Context, root bool) error {
	if err := s.cfg.CA.Rotate(root); err != nil {
		s.audit(ctx, events.Event{Name: "ca.rotate.refused", Action: "refuse", Severity: events.SeverityMedium, Reason: err.Error()})
		return err
	}
	what := "intermediate"
	if root {
		what = "root and intermediate"
	}
	s.audit(ctx, events.Event{Name: "ca.rotated", Action: "rotate", Severity: events.SeverityInfo, Reason: "new " + what})
	return nil
}

// Revoke stops every SVID issued so far for id from renewing (admin operation).
func (s *Service) Revoke(ctx context.Context, id string) error {
	sid, err := ParseWorkloadID(s.cfg.CA.TrustDomain(), id)
	if err != nil {
		return refused(codeInvalid, "%v", err)
	}
	if err := s.cfg.Revocations.Revoke(ctx, sid.String(), s.cfg.Clock.Now()); err != nil {
		return fmt.Errorf("store revocation: %w", err)
	}
	s.audit(ctx, events.Event{Name: "svid.revoked", Source: events.Endpoint{Identity: sid.String()}, Action: "revoke", Severity: events.SeverityMedium})
	return nil
}

// oversizeAuditor records an audit event for requests gRPC refused as too large: they never
// reach a handler, so this stats hook is the only place that sees them.
type oversizeAuditor struct{ s *Service }

func (oversizeAuditor) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (oversizeAuditor) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (oversizeAuditor) HandleConn(context.Context, stats.ConnStats) {}
func (a oversizeAuditor) HandleRPC(ctx context.Context, st stats.RPCStats) {
	if end, ok := st.(*stats.End); ok && status.Code(end.Error) == codes.ResourceExhausted {
		a.s.audit(ctx, events.Event{Name: "svid.request.refused", Action: "refuse", Severity: events.SeverityMedium,
			Reason: fmt.Sprintf("request larger than %d bytes", MaxRequestBytes)})
	}
}
