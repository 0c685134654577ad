// Package api is the controller's REST API under /api/v1, served over HTTPS with a certificate
// from the meshguard CA and guarded by the admin bearer token. It is a plain http.ServeMux:
// each resource registers its routes in its own file (identity.go, events.go, ...).
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
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
}

// New builds the server and registers every route.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), tokenHash: sha256.Sum256([]byte(cfg.AdminToken))}
	s.identityRoutes()
	s.eventRoutes()
	return s, nil
}

// Handle registers an admin-authenticated route, e.g. "GET /api/v1/groups".
func (s *Server) Handle(pattern string, h http.HandlerFunc) {
	s.mux.Handle(pattern, s.authenticated(h))
}

// ServeHTTP lets tests drive the API without a listener.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Run serves HTTPS until ctx ends, then shuts down (bounded).
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelDebug),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.cfg.GetCertificate},
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

func (s *Server) authenticated(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(got[:], s.tokenHash[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meshguard"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong admin token; use the token from admin.conf (--config)")
			return
		}
		h(w, r)
	})
}

// decode reads a JSON body strictly (unknown fields are errors, size bounded).
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
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
	s.cfg.Log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error; see the controller log")
}
