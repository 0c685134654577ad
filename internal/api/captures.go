package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/meshguard/meshguard/internal/capture"
)

// On-demand capture bounds, and how long the API waits for the upload beyond the duration.
const (
	MinCaptureDuration = time.Second
	MaxCaptureDuration = 5 * time.Minute
	captureUploadGrace = 30 * time.Second
)

// CaptureRequest is the body of POST /api/v1/workloads/{namespace}/{name}/captures.
type CaptureRequest struct {
	Duration string `json:"duration"` // Go duration, 1s..5m
}

// Captures is what the API needs from the controller's capture store and on-demand requests.
// Get and Open return NotFound for an unknown ID. Request asks the workload's sidecar for a
// capture of d and waits for its upload until ctx ends: NotFound for an unknown workload,
// Conflict when no sidecar of it is connected, ctx's error on timeout.
type Captures interface {
	List() ([]capture.Info, error)
	Get(id string) (capture.Info, error)
	Open(id string) (io.ReadCloser, error)
	Request(ctx context.Context, namespace, name string, d time.Duration) (capture.Info, error)
}

func (s *Server) captureRoutes() {
	s.Handle("POST /api/v1/workloads/{namespace}/{name}/captures", s.requestCapture)
	s.Handle("GET /api/v1/captures", s.listCaptures)
	s.Handle("GET /api/v1/captures/{id}", s.getCapture)
	s.Handle("GET /api/v1/captures/{id}/pcap", s.getPcap)
}

func (s *Server) requestCapture(w http.ResponseWriter, r *http.Request) {
	ns, name, ok := workloadPath(w, r)
	if !ok {
		return
	}
	var req CaptureRequest
	if !decode(w, r, &req) {
		return
	}
	d, err := time.ParseDuration(req.Duration)
	if err != nil || d < MinCaptureDuration || d > MaxCaptureDuration {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("duration %q: want a duration from %v to %v, e.g. \"30s\"", req.Duration, MinCaptureDuration, MaxCaptureDuration))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), d+captureUploadGrace)
	defer cancel()
	info, err := s.cfg.Captures.Request(ctx, ns, name, d)
	if errors.Is(err, context.DeadlineExceeded) {
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("the sidecar of %s/%s did not upload the capture within %v; see its log", ns, name, d+captureUploadGrace))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, _ := PrincipalFrom(r.Context())
	s.audit(r.Context(), p, "api.capture", "capture", fmt.Sprintf("%s/%s for %v: %s", ns, name, d, info.ID))
	writeJSON(w, http.StatusCreated, info)
}

func (s *Server) listCaptures(w http.ResponseWriter, r *http.Request) {
	list, err := s.cfg.Captures.List()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]capture.Info, 0, len(list))
	for i := len(list) - 1; i >= 0; i-- { // the store lists oldest first
		out = append(out, list[i])
	}
	writeJSON(w, http.StatusOK, out)
}

func captureID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !capture.ValidID(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("capture id %q: want an id like 20260101T120000Z-0123456789ab (see 'meshguard capture list')", id))
		return "", false
	}
	return id, true
}

func (s *Server) getCapture(w http.ResponseWriter, r *http.Request) {
	id, ok := captureID(w, r)
	if !ok {
		return
	}
	info, err := s.cfg.Captures.Get(id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) getPcap(w http.ResponseWriter, r *http.Request) {
	id, ok := captureID(w, r)
	if !ok {
		return
	}
	info, err := s.cfg.Captures.Get(id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rc, err := s.cfg.Captures.Open(id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/vnd.tcpdump.pcap")
	w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.pcap"`)
	if info.Bytes > 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(info.Bytes, 10))
	}
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		s.cfg.Log.Debug("capture download ended early", "id", id, "err", err)
	}
}
