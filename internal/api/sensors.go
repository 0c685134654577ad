package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/meshguard/meshguard/internal/policy"
)

// Sensor names in /api/v1/groups/{namespace}/{name}/sensors/{sensor}.
const (
	SensorWAF = "waf"
	SensorDLP = "dlp"
)

// SensorAdmin changes a group's sensors through the policy (validate, persist, push), like
// PolicyAdmin.SetMode; an unknown group is NotFound, an invalid result Invalid.
type SensorAdmin interface {
	SetSensors(ctx context.Context, by, groupKey string, edit func(*policy.Sensors)) (uint64, error)
}

// VersionResponse is the answer to a sensor change: the policy version it made.
type VersionResponse struct {
	Version uint64 `json:"version"`
}

func (s *Server) sensorRoutes() {
	s.HandleRole("PUT /api/v1/groups/{namespace}/{name}/sensors/{sensor}", RoleNamespaceEditor, s.putSensor)
	s.HandleRole("DELETE /api/v1/groups/{namespace}/{name}/sensors/{sensor}", RoleNamespaceEditor, s.deleteSensor)
}

// sensorTarget checks the path and the principal's namespace; false when it has answered.
func (s *Server) sensorTarget(w http.ResponseWriter, r *http.Request) (group, sensor string, ok bool) {
	ns, name, sensor := r.PathValue("namespace"), r.PathValue("name"), r.PathValue("sensor")
	if sensor != SensorWAF && sensor != SensorDLP {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("sensor %q: want waf or dlp", sensor))
		return "", "", false
	}
	p, _ := PrincipalFrom(r.Context())
	group = policy.Key(ns, name)
	if !mayEdit(p, ns) {
		s.forbidden(w, r, p, fmt.Sprintf("group %s: %s may only change policy of namespace %q; sensors unchanged", group, p.Name, p.Namespace))
		return "", "", false
	}
	return group, sensor, true
}

func validAction(a policy.SensorAction) bool {
	return a == "" || a == policy.SensorAlert || a == policy.SensorBlock
}

func (s *Server) putSensor(w http.ResponseWriter, r *http.Request) {
	group, sensor, ok := s.sensorTarget(w, r)
	if !ok {
		return
	}
	var edit func(*policy.Sensors)
	switch sensor {
	case SensorWAF:
		var waf policy.WAFSensor
		if !decode(w, r, &waf) {
			return
		}
		switch {
		case waf.ParanoiaLevel < 0 || waf.ParanoiaLevel > 4:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("paranoiaLevel %d: want 1, 2, 3 or 4 (omit for 1)", waf.ParanoiaLevel))
			return
		case waf.AnomalyThreshold < 0 || waf.BodyLimit < 0:
			writeError(w, http.StatusBadRequest, "anomalyThreshold and bodyLimit must not be negative (omit for the defaults)")
			return
		case !validAction(waf.Action):
			writeError(w, http.StatusBadRequest, fmt.Sprintf("action %q: want alert or block (omit to follow the group's mode)", waf.Action))
			return
		}
		edit = func(se *policy.Sensors) { se.WAF = &waf }
	case SensorDLP:
		var dlp policy.DLPSensor
		if !decode(w, r, &dlp) {
			return
		}
		for _, p := range dlp.Patterns {
			if !slices.Contains(policy.DLPPatterns(), p) {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("patterns: unknown pattern %q (known: %s; or use custom)", p, strings.Join(policy.DLPPatterns(), ", ")))
				return
			}
		}
		if len(dlp.Patterns) == 0 && len(dlp.Custom) == 0 {
			writeError(w, http.StatusBadRequest, "patterns: give at least one pattern ("+strings.Join(policy.DLPPatterns(), ", ")+") or a custom regex")
			return
		}
		if !validAction(dlp.Action) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("action %q: want alert or block (omit to follow the group's mode)", dlp.Action))
			return
		}
		edit = func(se *policy.Sensors) { se.DLP = &dlp }
	}
	p, _ := PrincipalFrom(r.Context())
	v, err := s.cfg.Sensors.SetSensors(r.Context(), who(p), group, edit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, VersionResponse{Version: v})
}

func (s *Server) deleteSensor(w http.ResponseWriter, r *http.Request) {
	group, sensor, ok := s.sensorTarget(w, r)
	if !ok {
		return
	}
	p, _ := PrincipalFrom(r.Context())
	v, err := s.cfg.Sensors.SetSensors(r.Context(), who(p), group, func(se *policy.Sensors) {
		if sensor == SensorWAF {
			se.WAF = nil
		} else {
			se.DLP = nil
		}
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, VersionResponse{Version: v})
}
