package api

import (
	"net/http"
	"strconv"

	"github.com/meshguard/meshguard/internal/events"
)

// EventsResponse is the body of GET /api/v1/events.
type EventsResponse struct {
	Events []events.Event `json:"events"`
}

func (s *Server) eventRoutes() {
	s.Handle("GET /api/v1/events", s.listEvents)
}

// listEvents serves GET /api/v1/events?kind=audit&limit=100 (oldest first).
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := events.Filter{Kind: events.Kind(q.Get("kind"))}
	if f.Kind != "" && !f.Kind.Valid() {
		writeError(w, http.StatusBadRequest, "kind "+strconv.Quote(string(f.Kind))+": want connection, violation, threat, incident or audit")
		return
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "limit "+strconv.Quote(l)+": want a non-negative integer")
			return
		}
		f.Limit = n
	}
	list := s.cfg.Events.List(f)
	if list == nil {
		list = []events.Event{}
	}
	writeJSON(w, http.StatusOK, EventsResponse{Events: list})
}
