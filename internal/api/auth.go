package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshguard/meshguard/internal/events"
)

// Principals stores the API's non-admin principals: bearer tokens (only their SHA-256 is
// kept) and client-certificate identities (by SPIFFE ID).
type Principals interface {
	ByTokenHash(h [sha256.Size]byte) (Principal, bool)
	ByName(name string) (Principal, bool)
	// CreateToken stores p and returns a new bearer token for it.
	CreateToken(ctx context.Context, p Principal) (string, error)
	// Bind lets a client certificate with SPIFFE ID p.Name act as p.
	Bind(ctx context.Context, p Principal) error
}

type principalKey struct{}

// PrincipalFrom returns the authenticated principal of a request.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

func (s *Server) tlsConfig() *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.cfg.GetCertificate}
	if s.cfg.ClientRoots == nil {
		return c
	}
	c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool := x509.NewCertPool()
		for _, r := range s.cfg.ClientRoots() {
			pool.AddCert(r)
		}
		return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.cfg.GetCertificate,
			ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}, nil
	}
	return c
}

// authenticate finds the principal of r: the admin token, a role token, or a verified client
// certificate whose SPIFFE ID was bound to a principal.
func (s *Server) authenticate(r *http.Request) (Principal, bool) {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		got := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(got[:], s.tokenHash[:]) == 1 {
			return Principal{Name: "admin", Role: RoleAdmin}, true
		}
		if s.cfg.Principals != nil {
			if p, ok := s.cfg.Principals.ByTokenHash(got); ok {
				return p, true
			}
		}
		return Principal{}, false
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && s.cfg.Principals != nil {
		id, err := x509svid.IDFromCert(r.TLS.VerifiedChains[0][0])
		if err != nil {
			return Principal{}, false
		}
		if p, ok := s.cfg.Principals.ByName(id.String()); ok {
			return p, true
		}
	}
	return Principal{}, false
}

func allows(have, want Role) bool {
	switch want {
	case RoleViewer:
		return have.Valid()
	case RoleNamespaceEditor:
		return have == RoleAdmin || have == RoleNamespaceEditor
	default:
		return have == RoleAdmin
	}
}

func (s *Server) authenticated(role Role, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.authenticate(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meshguard"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong token; use the token from admin.conf (--config) or one from 'meshguard apitoken create'")
			return
		}
		if !allows(p.Role, role) {
			s.forbidden(w, r, p, fmt.Sprintf("%s %s needs role %s; %s has role %s", r.Method, r.URL.Path, role, p.Name, p.Role))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// forbidden answers 403 and audits the refusal.
func (s *Server) forbidden(w http.ResponseWriter, r *http.Request, p Principal, msg string) {
	s.audit(r.Context(), p, "api.forbidden", "refuse", msg)
	writeError(w, http.StatusForbidden, msg)
}

func (s *Server) audit(ctx context.Context, p Principal, name, action, reason string) {
	if s.cfg.Audit == nil {
		return
	}
	sev := events.SeverityInfo
	if action == "refuse" {
		sev = events.SeverityMedium
	}
	s.cfg.Audit.Emit(ctx, events.Event{Kind: events.KindAudit, Time: time.Now(), Name: name,
		Source: events.Endpoint{Identity: who(p)}, Action: action, Severity: sev, Reason: reason})
}

// who is how a principal appears in audit records.
func who(p Principal) string {
	if p.Namespace != "" {
		return p.Name + " (" + string(p.Role) + " of " + p.Namespace + ")"
	}
	return p.Name + " (" + string(p.Role) + ")"
}

// mayEdit checks that p may change documents of namespace ns ("" is cluster-scoped).
func mayEdit(p Principal, ns string) bool {
	return p.Role == RoleAdmin || (p.Role == RoleNamespaceEditor && ns != "" && ns == p.Namespace)
}

// TokenRequest is the body of POST /api/v1/apitokens.
type TokenRequest struct {
	Principal
	// CertificateOnly binds the principal to client certificates with SPIFFE ID Name and
	// creates no token.
	CertificateOnly bool `json:"certificateOnly,omitempty"`
}

// TokenResponse carries a new API token; it is shown once and stored only as a hash.
type TokenResponse struct {
	Principal Principal `json:"principal"`
	Token     string    `json:"token,omitempty"`
}

func (s *Server) authRoutes() {
	s.HandleRole("GET /api/v1/whoami", RoleViewer, func(w http.ResponseWriter, r *http.Request) {
		p, _ := PrincipalFrom(r.Context())
		writeJSON(w, http.StatusOK, p)
	})
	if s.cfg.Principals == nil {
		return
	}
	s.Handle("POST /api/v1/apitokens", func(w http.ResponseWriter, r *http.Request) {
		var req TokenRequest
		if !decode(w, r, &req) {
			return
		}
		if err := req.Principal.Validate(); err != nil {
			writeError(w, http.StatusBadRequest, "principal: "+err.Error())
			return
		}
		admin, _ := PrincipalFrom(r.Context())
		resp := TokenResponse{Principal: req.Principal}
		var err error
		if req.CertificateOnly {
			if !strings.HasPrefix(req.Name, "spiffe://") {
				writeError(w, http.StatusBadRequest, "name "+req.Name+": a certificate principal is named by its SPIFFE ID (spiffe://TD/ns/NS/sa/SA)")
				return
			}
			err = s.cfg.Principals.Bind(r.Context(), req.Principal)
		} else {
			resp.Token, err = s.cfg.Principals.CreateToken(r.Context(), req.Principal)
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.audit(r.Context(), admin, "api.principal", "create", "principal "+who(req.Principal))
		writeJSON(w, http.StatusCreated, resp)
	})
}
