package api

import (
	"net/http"
	"time"

	"github.com/meshguard/meshguard/internal/identity"
)

// CreateTokenRequest is the body of POST /api/v1/tokens.
type CreateTokenRequest struct {
	SPIFFEID string `json:"spiffeId"`
	TTL      string `json:"ttl,omitempty"` // Go duration, default 10m
}

// CreateTokenResponse carries the token; it is shown once and stored only hashed.
type CreateTokenResponse struct {
	Token     string    `json:"token"`
	SPIFFEID  string    `json:"spiffeId"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// RotateRequest is the body of POST /api/v1/ca/rotate.
type RotateRequest struct {
	Root bool `json:"root"` // also replace the root (old root stays trusted until it expires)
}

// RevokeRequest is the body of POST /api/v1/svids/revoke.
type RevokeRequest struct {
	SPIFFEID string `json:"spiffeId"`
}

// Status is the body of a successful action without other output.
type Status struct {
	Status string `json:"status"`
}

func (s *Server) identityRoutes() {
	s.Handle("POST /api/v1/tokens", s.createToken)
	s.Handle("POST /api/v1/ca/rotate", s.rotateCA)
	s.Handle("POST /api/v1/svids/revoke", s.revokeSVID)
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	var req CreateTokenRequest
	if !decode(w, r, &req) {
		return
	}
	ttl := identity.DefaultJoinTokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeError(w, http.StatusBadRequest, "ttl: "+err.Error()+" (e.g. 10m)")
			return
		}
		ttl = d
	}
	tok, exp, err := s.cfg.Identity.CreateToken(r.Context(), req.SPIFFEID, ttl)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, CreateTokenResponse{Token: tok, SPIFFEID: req.SPIFFEID, ExpiresAt: exp})
}

func (s *Server) rotateCA(w http.ResponseWriter, r *http.Request) {
	var req RotateRequest
	if !decode(w, r, &req) {
		return
	}
	if err := s.cfg.Identity.Rotate(r.Context(), req.Root); err != nil {
		s.fail(w, r, err)
		return
	}
	what := "rotated intermediate"
	if req.Root {
		what = "rotated root and intermediate"
	}
	writeJSON(w, http.StatusOK, Status{Status: what})
}

func (s *Server) revokeSVID(w http.ResponseWriter, r *http.Request) {
	var req RevokeRequest
	if !decode(w, r, &req) {
		return
	}
	if err := s.cfg.Identity.Revoke(r.Context(), req.SPIFFEID); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, Status{Status: "revoked " + req.SPIFFEID})
}
