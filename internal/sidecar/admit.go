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
	pol  *policy.Policy
	self []policy.GroupID
	byID map[string][]string // SPIFFE ID -> groups, for sources not found by address
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

// policyAdmitter decides each inbound stream at connection level (L4: source groups,
// destination groups, port) with the current policy; no policy in the snapshot admits.
func policyAdmitter(view *atomic.Pointer[policyView], index func() *xds.Index) Admitter {
	return func(_ context.Context, s StreamInfo) error {
		v := view.Load()
		if v == nil {
			return nil
		}
		in := policy.Input{DstGroups: v.self, Port: s.DestPort, Transport: dpi.TCP}
		var groups []string
		if x := index(); x != nil && s.SourceAddr.IsValid() {
			if w, ok := x.Workload(s.SourceAddr.Addr()); ok && (!s.Authenticated || w.GetSpiffeId() == s.Source.String()) {
				groups = w.GetGroups()
			}
		}
		if groups == nil && s.Authenticated {
			groups = v.byID[s.Source.String()]
		}
		in.SrcGroups = v.pol.GroupIDsOf(nil, groups...)
		d := v.pol.Decide(&in)
		if d.Verdict == policy.Allow {
			return nil
		}
		return fmt.Errorf("%w: %s", errPolicyDenied, d.String())
	}
}
