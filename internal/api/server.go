// Package api is the controller's REST API under /api/v1, served over HTTPS with a certificate
// from the meshguard CA and guarded by the admin bearer token. It is a plain http.ServeMux:
// each resource registers its routes in its own file (identity.go, events.go, ...).
package api

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/identity"
)

// maxBodyBytes bounds every request body.
const maxBodyBytes = 1 << 20

// Config is everything the API server needs.
type Config struct {
	Listener       net.Listener
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	AdminToken     string // bearer token every request must carry
	Identity       IdentityAdmin
	Events         EventLister
	Log            *slog.Logger

	// Optional parts: their routes exist only when they are set.
	Policy      PolicyAdmin      // /api/v1/policy..., /api/v1/explain, groups, rules
	Registry    RegistryView     // workloads, services, group members
	Sidecars    SidecarLister    // /api/v1/sidecars
	Connections ConnectionSource // /api/v1/connections, /api/v1/graph
	EventStore  EventStore       // persistent events with since and follow (else Events)
	Audit       events.Sink      // RBAC refusals and token creation are audited here
	Principals  Principals       // role tokens and client-certificate principals
	// ClientRoots, if set, makes the server ask for client certificates and accept those
	// that chain to these roots (the meshguard CA bundle, read per handshake so rotation
	// applies); the certificate's SPIFFE ID must be a principal in Principals.
	ClientRoots func() []*x509.Certificate
	Metrics     http.Handler // served at /metrics to any authenticated principal
	Quarantines Quarantines  // /api/v1/workloads/.../quarantine, /api/v1/quarantines
	Captures    Captures     // /api/v1/captures..., on-demand workload captures
	Sensors     SensorAdmin  // /api/v1/groups/.../sensors/{sensor}
}

func (c Config) validate() error {
	if c.Listener == nil || c.GetCertificate == nil || c.Identity == nil || c.Events == nil || c.Log == nil {
		return errors.New("api: listener, certificate, identity, events and logger are required")
	}
	if len(c.AdminToken) < 16 {
		return errors.New("api: admin token must be at least 16 characters")
	}
	return nil
}

// IdentityAdmin is what the API needs from the identity service.
type IdentityAdmin interface {
	CreateToken(ctx context.Context, spiffeID string, ttl time.Duration) (string, time.Time, error)
	Rotate(ctx context.Context, root bool) error
	Revoke(ctx context.Context, spiffeID string) error
}

// EventLister is what the API needs from the event store.
type EventLister interface {
	List(events.Filter) []events.Event
}

// Server is the REST API.
type Server struct {
	cfg       Config
	mux       *http.ServeMux
	tokenHash [sha256.Size]byte
	routes    []string // registered patterns, for the OpenAPI consistency test
}

// New builds the server and registers every route.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), tokenHash: sha256.Sum256([]byte(cfg.AdminToken))}
	s.identityRoutes()
	s.eventRoutes()
	s.authRoutes()
	if cfg.Policy != nil {
		s.policyRoutes()
	}
	if cfg.Registry != nil {
		s.registryRoutes()
	}
	if cfg.Sidecars != nil {
		s.HandleRole("GET /api/v1/sidecars", RoleViewer, s.listSidecars)
	}
	if cfg.Connections != nil {
		s.connectionRoutes()
	}
	if cfg.Quarantines != nil {
		s.quarantineRoutes()
	}
	if cfg.Captures != nil {
		s.captureRoutes()
	}
	if cfg.Sensors != nil {
		s.sensorRoutes()
	}
	if cfg.Metrics != nil {
		s.HandleRole("GET /metrics", RoleViewer, cfg.Metrics.ServeHTTP)
	}
	return s, nil
}

// Handle registers an admin-only route, e.g. "POST /api/v1/tokens".
func (s *Server) Handle(pattern string, h http.HandlerFunc) {
	s.HandleRole(pattern, RoleAdmin, h)
}

// HandleRole registers a route open to role and above: viewer routes to every principal,
// namespace-editor routes to editors and admins (handlers check the namespace).
func (s *Server) HandleRole(pattern string, role Role, h http.HandlerFunc) {
	s.routes = append(s.routes, pattern)
	s.mux.Handle(pattern, s.authenticated(role, h))
}

// Routes lists the registered route patterns ("GET /api/v1/groups").
func (s *Server) Routes() []string { return append([]string(nil), s.routes...) }

// ServeHTTP lets tests drive the API without a listener.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Run serves HTTPS until ctx ends, then shuts down (bounded).
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelDebug),
		TLSConfig:         s.tlsConfig(),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(s.cfg.Listener, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	return nil
}

// decode reads a JSON body strictly (unknown fields are errors, size bounded).
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	return decodeLimited(w, r, v)
}

// decodeLimited is decode for handlers that set their own body limit.
func decodeLimited(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, Error{Error: msg})
}

// fail maps an error from a subsystem: refusals are the caller's to fix (400), the rest are
// logged and reported without detail (500).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ref *identity.Refusal
	if errors.As(err, &ref) {
		writeError(w, http.StatusBadRequest, ref.Reason)
		return
	}
	var se *StatusError
	if errors.As(err, &se) {
		writeError(w, se.Status, se.Error())
		return
	}
	s.cfg.Log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error; see the controller log")
}
