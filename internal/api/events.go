package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/meshguard/meshguard/internal/events"
)

// EventsResponse is the body of GET /api/v1/events.
type EventsResponse struct {
	Events []events.Event `json:"events"`
}

func (s *Server) eventRoutes() {
	s.HandleRole("GET /api/v1/events", RoleViewer, s.listEvents)
}

// listEvents serves GET /api/v1/events?kind=violation&since=10m&limit=100[&follow=true]
// (oldest first). since is a duration back from now or an RFC 3339 time. With follow, the
// response is a stream of JSON lines, one event each, history first, until the client goes.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := events.Query{Kind: events.Kind(q.Get("kind"))}
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
	if sv := q.Get("since"); sv != "" {
		if d, err := time.ParseDuration(sv); err == nil && d >= 0 {
			f.Since = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339, sv); err == nil {
			f.Since = t
		} else {
			writeError(w, http.StatusBadRequest, "since "+strconv.Quote(sv)+": want a duration (10m, 2h) or an RFC 3339 time")
			return
		}
	}
	follow := q.Get("follow") == "true"
	if s.cfg.EventStore == nil {
		if follow || !f.Since.IsZero() {
			writeError(w, http.StatusBadRequest, "since and follow need the persistent event store, which this controller does not run")
			return
		}
		list := s.cfg.Events.List(events.Filter{Kind: f.Kind, Limit: f.Limit})
		if list == nil {
			list = []events.Event{}
		}
		writeJSON(w, http.StatusOK, EventsResponse{Events: list})
		return
	}
	if !follow {
		list, err := s.cfg.EventStore.Query(f)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if list == nil {
			list = []events.Event{}
		}
		writeJSON(w, http.StatusOK, EventsResponse{Events: list})
		return
	}
	// Subscribe before the query so nothing falls between history and the live stream.
	sub := s.cfg.EventStore.Subscribe(r.Context(), events.Query{Kind: f.Kind, Since: f.Since}, 1024)
	list, err := s.cfg.EventStore.Query(f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flush := func() {
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
	}
	var last time.Time
	for _, e := range list {
		_ = enc.Encode(e)
		last = e.Time
	}
	flush()
	for e := range sub {
		if e.Time.Before(last) { // already sent with the history
			continue
		}
		if enc.Encode(e) != nil {
			return
		}
		flush()
	}
}
