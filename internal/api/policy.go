package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/meshguard/meshguard/internal/policy"
)

// maxPolicyBytes bounds an apply (all files together).
const maxPolicyBytes = policy.MaxInputBytes

func (s *Server) policyRoutes() {
	s.HandleRole("GET /api/v1/policy", RoleViewer, s.getPolicy)
	s.HandleRole("POST /api/v1/policy/apply", RoleNamespaceEditor, s.applyPolicy)
	s.HandleRole("POST /api/v1/policy/test", RoleViewer, s.testPolicy)
	s.HandleRole("POST /api/v1/policy/mode", RoleNamespaceEditor, s.setMode)
	s.HandleRole("DELETE /api/v1/policy/{kind}/{namespace}/{name}", RoleNamespaceEditor, s.deleteDoc)
	s.HandleRole("DELETE /api/v1/policy/{kind}/{name}", RoleNamespaceEditor, s.deleteDoc)
	s.HandleRole("POST /api/v1/explain", RoleViewer, s.explain)
	s.HandleRole("GET /api/v1/groups", RoleViewer, s.listGroups)
	s.HandleRole("GET /api/v1/rules", RoleViewer, s.listRules)
}

// getPolicy serves GET /api/v1/policy: the export, which re-applies to the same policy.
func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) {
	set, v := s.cfg.Policy.Current()
	b, err := set.Export()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, PolicyResponse{Version: v, YAML: string(b)})
}

// parseFiles parses every file of an apply into one set; documents keep their file:line.
// A body that is not even JSON has already been answered (ok false, err nil).
func parseFiles(w http.ResponseWriter, r *http.Request) (set *policy.Set, ok bool, err error) {
	var req ApplyRequest
	r.Body = http.MaxBytesReader(w, r.Body, 2*maxPolicyBytes)
	if !decodeLimited(w, r, &req) {
		return nil, false, nil
	}
	if len(req.Files) == 0 {
		return nil, false, Invalid(errors.New("files: at least one file is required"))
	}
	in := &policy.Set{}
	var errs []error
	for i, f := range req.Files {
		name := f.Name
		if name == "" {
			name = "files[" + strconv.Itoa(i) + "]"
		}
		set, err := policy.Parse(name, []byte(f.Content))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		in.Groups = append(in.Groups, set.Groups...)
		in.NetworkRules = append(in.NetworkRules, set.NetworkRules...)
		in.ProcessProfiles = append(in.ProcessProfiles, set.ProcessProfiles...)
		in.FileRules = append(in.FileRules, set.FileRules...)
		in.ResponseRules = append(in.ResponseRules, set.ResponseRules...)
	}
	if len(errs) > 0 {
		return nil, false, Invalid(errors.Join(errs...))
	}
	if in.Len() == 0 {
		return nil, false, Invalid(errors.New("no documents: the files hold no apiVersion/kind documents"))
	}
	return in, true, nil
}

func (s *Server) applyPolicy(w http.ResponseWriter, r *http.Request) {
	p, _ := PrincipalFrom(r.Context())
	in, ok, err := parseFiles(w, r)
	if err != nil {
		s.audit(r.Context(), p, "policy.apply", "refuse", "apply: "+FirstLine(err.Error()))
		s.fail(w, r, err)
		return
	}
	if !ok {
		return
	}
	objs := in.Objects()
	for _, o := range objs {
		if !mayEdit(p, o.Namespace) {
			s.forbidden(w, r, p, fmt.Sprintf("%s %s: %s may only change policy of namespace %q; nothing was applied",
				o.Kind, policy.Key(o.Namespace, o.Name), p.Name, p.Namespace))
			return
		}
	}
	v, err := s.cfg.Policy.Apply(r.Context(), who(p), in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ApplyResponse{Version: v, Objects: objs})
}

func (s *Server) testPolicy(w http.ResponseWriter, r *http.Request) {
	in, ok, err := parseFiles(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !ok {
		return
	}
	resp, err := s.cfg.Policy.Test(r.Context(), in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) setMode(w http.ResponseWriter, r *http.Request) {
	p, _ := PrincipalFrom(r.Context())
	var req ModeRequest
	if !decode(w, r, &req) {
		return
	}
	switch req.Mode {
	case policy.ModeDiscover, policy.ModeMonitor, policy.ModeProtect:
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("mode %q: want discover, monitor or protect", req.Mode))
		return
	}
	ns, name := policy.SplitKey(req.Group)
	if !mayEdit(p, ns) {
		s.forbidden(w, r, p, fmt.Sprintf("group %s: %s may only change policy of namespace %q; mode unchanged", req.Group, p.Name, p.Namespace))
		return
	}
	v, err := s.cfg.Policy.SetMode(r.Context(), who(p), req.Group, req.Mode)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ApplyResponse{Version: v, Objects: []policy.ObjectRef{{Kind: policy.KindGroup, Namespace: ns, Name: name}}})
}

func (s *Server) deleteDoc(w http.ResponseWriter, r *http.Request) {
	p, _ := PrincipalFrom(r.Context())
	kind, ok := policy.KindFromName(r.PathValue("kind"))
	if !ok {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("kind %q: want one of %s", r.PathValue("kind"), strings.Join(policy.Kinds(), ", ")))
		return
	}
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	if !mayEdit(p, ns) {
		s.forbidden(w, r, p, fmt.Sprintf("%s %s: %s may only change policy of namespace %q; nothing was deleted", kind, policy.Key(ns, name), p.Name, p.Namespace))
		return
	}
	v, err := s.cfg.Policy.Delete(r.Context(), who(p), kind, policy.Key(ns, name))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ApplyResponse{Version: v, Objects: []policy.ObjectRef{{Kind: kind, Namespace: ns, Name: name}}})
}

func (s *Server) explain(w http.ResponseWriter, r *http.Request) {
	var req ExplainRequest
	if !decode(w, r, &req) {
		return
	}
	resp, err := s.cfg.Policy.Explain(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// GroupView is one group in GET /api/v1/groups: its document and its current members.
type GroupView struct {
	policy.Group
	Members []string `json:"members"`
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request) {
	ns := r.URL.Query().Get("namespace")
	set, _ := s.cfg.Policy.Current()
	out := []GroupView{}
	for _, g := range set.Groups {
		if ns != "" && g.Metadata.Namespace != ns {
			continue
		}
		g.TypeMeta = policy.TypeMeta{APIVersion: policy.APIVersion, Kind: policy.KindGroup}
		v := GroupView{Group: g, Members: []string{}}
		if s.cfg.Registry != nil {
			if m := s.cfg.Registry.Members(g.Metadata.Key()); m != nil {
				v.Members = m
			}
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b GroupView) int { return strings.Compare(a.Metadata.Key(), b.Metadata.Key()) })
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) listRules(w http.ResponseWriter, r *http.Request) {
	ns := r.URL.Query().Get("namespace")
	set, _ := s.cfg.Policy.Current()
	out := []policy.NetworkRule{}
	for _, nr := range set.NetworkRules {
		if ns != "" && nr.Metadata.Namespace != ns {
			continue
		}
		nr.TypeMeta = policy.TypeMeta{APIVersion: policy.APIVersion, Kind: policy.KindNetworkRule}
		out = append(out, nr)
	}
	slices.SortFunc(out, func(a, b policy.NetworkRule) int { return strings.Compare(a.Metadata.Key(), b.Metadata.Key()) })
	writeJSON(w, http.StatusOK, out)
}

// FirstLine is s up to its first line break, marked as cut: an error fit for an audit reason.
func FirstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " (...)"
	}
	return s
}
