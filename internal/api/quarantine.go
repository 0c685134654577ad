package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/meshguard/meshguard/internal/policy"
)

// maxReasonLen bounds an operator's quarantine reason (it lands in events and status).
const maxReasonLen = 512

// QuarantineStatus is one quarantined workload (GET /api/v1/quarantines, `meshguard status`).
type QuarantineStatus struct {
	Workload string    `json:"workload"` // "ns/name"
	Since    time.Time `json:"since"`
	Reason   string    `json:"reason,omitempty"`
}

// QuarantineRequest is the body of POST /api/v1/workloads/{namespace}/{name}/quarantine.
type QuarantineRequest struct {
	Reason string `json:"reason,omitempty"`
}

// ReleaseResponse is the answer to DELETE /api/v1/workloads/{namespace}/{name}/quarantine.
type ReleaseResponse struct {
	Workload string `json:"workload"`
	Released bool   `json:"released"`
}

// Quarantines is what the API needs from the response engine. Quarantine and Release return
// NotFound for a workload the registry does not know.
type Quarantines interface {
	Quarantine(ctx context.Context, namespace, name, reason string) (QuarantineStatus, error)
	Release(ctx context.Context, namespace, name string) error
	Quarantined() []QuarantineStatus
}

func (s *Server) quarantineRoutes() {
	s.Handle("POST /api/v1/workloads/{namespace}/{name}/quarantine", s.quarantine)
	s.Handle("DELETE /api/v1/workloads/{namespace}/{name}/quarantine", s.release)
	s.HandleRole("GET /api/v1/quarantines", RoleViewer, func(w http.ResponseWriter, r *http.Request) {
		out := s.cfg.Quarantines.Quarantined()
		if out == nil {
			out = []QuarantineStatus{}
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// workloadPath reads and checks {namespace}/{name}; false when it has answered 400.
func workloadPath(w http.ResponseWriter, r *http.Request) (string, string, bool) {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	for field, v := range map[string]string{"namespace": ns, "name": name} {
		if v == "" || len(v) > 253 || strings.ContainsAny(v, "/ \t\r\n") {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("workload %s %q: want a pod %s (see 'meshguard get workloads')", field, v, field))
			return "", "", false
		}
	}
	return ns, name, true
}

func (s *Server) quarantine(w http.ResponseWriter, r *http.Request) {
	ns, name, ok := workloadPath(w, r)
	if !ok {
		return
	}
	var req QuarantineRequest
	if r.ContentLength != 0 && !decode(w, r, &req) {
		return
	}
	if len(req.Reason) > maxReasonLen {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("reason: %d bytes, at most %d", len(req.Reason), maxReasonLen))
		return
	}
	p, _ := PrincipalFrom(r.Context())
	reason := "manual by " + who(p)
	if req.Reason != "" {
		reason = req.Reason + " (" + reason + ")"
	}
	st, err := s.cfg.Quarantines.Quarantine(r.Context(), ns, name, reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.audit(r.Context(), p, "api.quarantine", "quarantine", policy.Key(ns, name)+": "+reason)
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) {
	ns, name, ok := workloadPath(w, r)
	if !ok {
		return
	}
	if err := s.cfg.Quarantines.Release(r.Context(), ns, name); err != nil {
		s.fail(w, r, err)
		return
	}
	p, _ := PrincipalFrom(r.Context())
	s.audit(r.Context(), p, "api.quarantine", "release", policy.Key(ns, name))
	writeJSON(w, http.StatusOK, ReleaseResponse{Workload: policy.Key(ns, name), Released: true})
}
