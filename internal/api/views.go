package api

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/meshguard/meshguard/internal/registry"
	"github.com/meshguard/meshguard/internal/xds"
)

// WorkloadView is one workload in GET /api/v1/workloads, with its groups.
type WorkloadView struct {
	registry.Workload
	Groups []string `json:"groups"`
}

// SidecarsResponse is GET /api/v1/sidecars.
type SidecarsResponse struct {
	Version  uint64              `json:"version"` // current config version
	Sidecars []xds.SidecarStatus `json:"sidecars"`
}

// Graph is GET /api/v1/graph: who talks to whom with which protocol.
type Graph struct {
	Nodes []GraphNode `json:"nodes"`
	Edges []GraphEdge `json:"edges"`
}

// GraphNode is a workload (or an address outside the registry).
type GraphNode struct {
	ID    string `json:"id"`
	Group string `json:"group,omitempty"`
}

// GraphEdge aggregates the connections between two nodes.
type GraphEdge struct {
	From    string   `json:"from"`
	To      string   `json:"to"`
	Ports   []string `json:"ports"` // "tcp/6379"
	Apps    []string `json:"apps"`
	Count   uint64   `json:"count"`
	Denied  uint64   `json:"denied"`
	System  bool     `json:"system,omitempty"`
	Verdict string   `json:"verdict"` // allow, deny, or mixed
	// Mismatch: some connection carried a protocol on a port registered to another.
	Mismatch bool `json:"mismatch,omitempty"`
	// Unauthenticated counts connections without a verified source identity (plaintext).
	Unauthenticated uint64 `json:"unauthenticated,omitempty"`
}

func (s *Server) registryRoutes() {
	s.HandleRole("GET /api/v1/workloads", RoleViewer, func(w http.ResponseWriter, r *http.Request) {
		ns := r.URL.Query().Get("namespace")
		out := []WorkloadView{}
		for _, wl := range s.cfg.Registry.Workloads() {
			if ns == "" || wl.Namespace == ns {
				g := s.cfg.Registry.GroupsOf(wl.Namespace, wl.Name)
				if g == nil {
					g = []string{}
				}
				out = append(out, WorkloadView{Workload: wl, Groups: g})
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
	s.HandleRole("GET /api/v1/services", RoleViewer, func(w http.ResponseWriter, r *http.Request) {
		ns := r.URL.Query().Get("namespace")
		out := []registry.Service{}
		for _, svc := range s.cfg.Registry.Services() {
			if ns == "" || svc.Namespace == ns {
				out = append(out, svc)
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func (s *Server) listSidecars(w http.ResponseWriter, r *http.Request) {
	ns := r.URL.Query().Get("namespace")
	out := SidecarsResponse{Version: s.cfg.Sidecars.Version(), Sidecars: []xds.SidecarStatus{}}
	for _, sc := range s.cfg.Sidecars.Sidecars() {
		if ns == "" || sc.Node.Namespace == ns {
			out.Sidecars = append(out.Sidecars, sc)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) connectionRoutes() {
	s.HandleRole("GET /api/v1/connections", RoleViewer, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ns, sys := q.Get("namespace"), q.Get("includeSystem") == "true"
		out := []Connection{}
		for _, c := range s.cfg.Connections.Connections() {
			if (c.System && !sys) || (ns != "" && !inNamespace(c.Source, ns) && !inNamespace(c.Destination, ns)) {
				continue
			}
			out = append(out, c)
		}
		writeJSON(w, http.StatusOK, out)
	})
	s.HandleRole("GET /api/v1/graph", RoleViewer, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, BuildGraph(s.cfg.Connections.Connections(), r.URL.Query().Get("includeSystem") == "true"))
	})
}

func inNamespace(key, ns string) bool { return strings.HasPrefix(key, ns+"/") }

// BuildGraph aggregates connections into nodes and edges, sorted; system traffic only if
// asked for.
func BuildGraph(conns []Connection, includeSystem bool) Graph {
	g := Graph{Nodes: []GraphNode{}, Edges: []GraphEdge{}}
	nodes := map[string]string{}
	edges := map[[2]string]*GraphEdge{}
	for _, c := range conns {
		if c.System && !includeSystem {
			continue
		}
		if _, ok := nodes[c.Source]; !ok || nodes[c.Source] == "" {
			nodes[c.Source] = c.SrcGroup
		}
		if _, ok := nodes[c.Destination]; !ok || nodes[c.Destination] == "" {
			nodes[c.Destination] = c.DstGroup
		}
		k := [2]string{c.Source, c.Destination}
		e := edges[k]
		if e == nil {
			e = &GraphEdge{From: c.Source, To: c.Destination, System: c.System}
			edges[k] = e
		}
		port := c.Transport + "/" + strconv.Itoa(int(c.Port))
		if !slices.Contains(e.Ports, port) {
			e.Ports = append(e.Ports, port)
		}
		app := c.App
		if app == "" {
			app = "unknown"
		}
		if !slices.Contains(e.Apps, app) {
			e.Apps = append(e.Apps, app)
		}
		e.Count += c.Count
		if c.Verdict == "deny" {
			e.Denied += c.Count
		}
		e.Mismatch = e.Mismatch || c.Mismatch
		if !c.Authenticated {
			e.Unauthenticated += c.Count
		}
	}
	for id, grp := range nodes {
		g.Nodes = append(g.Nodes, GraphNode{ID: id, Group: grp})
	}
	slices.SortFunc(g.Nodes, func(a, b GraphNode) int { return strings.Compare(a.ID, b.ID) })
	for _, e := range edges {
		slices.Sort(e.Ports)
		slices.Sort(e.Apps)
		switch {
		case e.Denied == 0:
			e.Verdict = "allow"
		case e.Denied == e.Count:
			e.Verdict = "deny"
		default:
			e.Verdict = "mixed"
		}
		g.Edges = append(g.Edges, *e)
	}
	slices.SortFunc(g.Edges, func(a, b GraphEdge) int {
		if x := strings.Compare(a.From, b.From); x != 0 {
			return x
		}
		return strings.Compare(a.To, b.To)
	})
	return g
}

// ServiceView is one service in GET /api/v1/services.
type ServiceView = registry.Service
