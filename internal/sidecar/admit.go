package sidecar

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	"github.com/meshguard/meshguard/internal/dpi"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/xds"
)

// policyView is one applied snapshot's compiled policy with the lookups admission needs.
type policyView struct {
	pol *policy.Policy
	// appScoped: some rule names applications or has an l7 section, so a connection the
	// port-level decision refuses may still be allowed once DPI has named its application.
	appScoped bool
	self      []policy.GroupID
	byID      map[string][]string // SPIFFE ID -> groups, for sources not found by address
}

// compilePolicy compiles the snapshot's policy; nil (no enforcement) when it carries none.
func compilePolicy(eng *policy.Engine, s *xdsv1.Snapshot) (*policyView, error) {
	if len(s.GetPolicy()) == 0 {
		return nil, nil
	}
	if f := s.GetPolicyFormat(); f != "" && f != "yaml" {
		return nil, fmt.Errorf("policy format %q is not supported (want yaml)", f)
	}
	set, err := policy.Parse("snapshot", s.GetPolicy())
	if err != nil {
		return nil, err
	}
	pol, err := eng.Update(set)
	if err != nil {
		return nil, err
	}
	v := &policyView{pol: pol, byID: map[string][]string{}}
	for i := range set.NetworkRules {
		sp := &set.NetworkRules[i].Spec
		if sp.L7 != nil {
			v.appScoped = true
		}
		for _, a := range sp.Applications {
			if a != "any" {
				v.appScoped = true
			}
		}
	}
	v.self = pol.GroupIDsOf(nil, s.GetSelf().GetGroups()...)
	for _, w := range s.GetPeers() {
		if _, dup := v.byID[w.GetSpiffeId()]; !dup {
			v.byID[w.GetSpiffeId()] = w.GetGroups()
		}
	}
	return v, nil
}

// errPolicyDenied wraps a policy refusal; its text is the decision's explanation.
var errPolicyDenied = errors.New("denied by policy")

// policyDenial is a refusal by the policy: the decision, and the protocol-native answer to
// send the client (nil: just cut).
type policyDenial struct {
	d     policy.Decision
	why   string // overrides the decision's explanation (the request could not be decided)
	reply []byte
}

func (e *policyDenial) text() string {
	if e.why != "" {
		return e.why
	}
	return e.d.String()
}

func (e *policyDenial) Error() string        { return errPolicyDenied.Error() + ": " + e.text() }
func (e *policyDenial) Is(target error) bool { return target == errPolicyDenied }
func (e *policyDenial) Reply() []byte        { return e.reply }

// sourceGroups resolves an inbound stream's source to its groups: by address in the index
// (when the authenticated identity agrees), else by its SPIFFE ID.
func sourceGroups(v *policyView, index func() *xds.Index, s StreamInfo) []policy.GroupID {
	var groups []string
	if x := index(); x != nil && s.SourceAddr.IsValid() {
		if w, ok := x.Workload(s.SourceAddr.Addr()); ok && (!s.Authenticated || w.GetSpiffeId() == s.Source.String()) {
			groups = w.GetGroups()
		}
	}
	if groups == nil && s.Authenticated {
		groups = v.byID[s.Source.String()]
	}
	return v.pol.GroupIDsOf(nil, groups...)
}

// policyAdmitter decides each inbound stream at connection level (L4: source groups,
// destination groups, port) with the current policy; no policy in the snapshot admits.
// A refusal that an application-scoped rule could still lift (the port-level decision
// knows no application) is left to the enforcing inspector, which decides again once DPI
// has named the application, so the inbound proxy must run with EnforcingInspector.
func policyAdmitter(view *atomic.Pointer[policyView], index func() *xds.Index) Admitter {
	return func(_ context.Context, s StreamInfo) error {
		v := view.Load()
		if v == nil {
			return nil
		}
		in := policy.Input{DstGroups: v.self, Port: s.DestPort, Transport: dpi.TCP, SrcGroups: sourceGroups(v, index, s)}
		d := v.pol.Decide(&in)
		if d.Verdict == policy.Allow || (v.appScoped && d.Reason != policy.ReasonDenyRule) {
			return nil
		}
		return &policyDenial{d: d}
	}
}
