package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/jonboulle/clockwork"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/dpi"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/registry"
	"github.com/meshguard/meshguard/internal/store"
)

// storedPolicyName is the file name errors give for documents loaded from the store.
const storedPolicyName = "stored-policy"

// Workloads is what the policy service reads from the registry to explain and replay.
type Workloads interface {
	Workload(namespace, name string) (registry.Workload, bool)
	Services() []registry.Service
	GroupsOf(namespace, name string) []string
	Members(groupKey string) []string
}

// FlowHistory gives the recorded flows `policy test` replays.
type FlowHistory interface {
	Recorded() []RecordedFlow
}

// PolicyConfig configures a PolicyService.
type PolicyConfig struct {
	Store    store.Policies
	Registry Workloads
	History  FlowHistory // may be nil: nothing to replay
	// Forget, if set, is told the keys of deleted learned rules (learn.Learner.Forget), so
	// their flows are learned again while the group is still in discover mode.
	Forget func(ctx context.Context, keys ...string) error
	Audit  events.Sink
	Clock  clockwork.Clock
	Log    *slog.Logger
}

// PolicyService owns the policy: it loads it from the store, applies changes all-or-nothing
// (validate, persist, compile, swap), numbers versions, audits every change and tells
// watchers (xds, registry membership) through Changed.
type PolicyService struct {
	cfg    PolicyConfig
	engine *policy.Engine

	mu      sync.Mutex // serialises changes; readers use the snapshot under rmu
	rmu     sync.RWMutex
	set     *policy.Set
	version uint64
	changed chan struct{}
}

// NewPolicyService validates cfg; Load fills it.
func NewPolicyService(cfg PolicyConfig) (*PolicyService, error) {
	if cfg.Store == nil || cfg.Registry == nil || cfg.Audit == nil || cfg.Clock == nil || cfg.Log == nil {
		return nil, errors.New("controller: policy service needs store, registry, audit, clock and logger")
	}
	return &PolicyService{cfg: cfg, engine: policy.NewEngine(policy.CompileOptions{}), set: &policy.Set{}, changed: make(chan struct{})}, nil
}

var _ api.PolicyAdmin = (*PolicyService)(nil)

// Load reads the stored policy and compiles it. A stored policy that no longer validates is
// an error: the controller must not start enforcing a half-understood policy.
func (p *PolicyService) Load(ctx context.Context) error {
	rec, err := p.cfg.Store.LoadPolicy(ctx)
	if err != nil {
		return fmt.Errorf("load policy: %w", err)
	}
	set := &policy.Set{}
	if len(rec.Doc) > 0 {
		if set, err = policy.Parse(storedPolicyName, rec.Doc); err != nil {
			return fmt.Errorf("stored policy does not parse: %w", err)
		}
		if err := set.Validate(); err != nil {
			return fmt.Errorf("stored policy does not validate: %w", err)
		}
	}
	if _, err := p.engine.Update(set); err != nil {
		return fmt.Errorf("compile stored policy: %w", err)
	}
	p.rmu.Lock()
	p.set, p.version = set, rec.Version
	p.rmu.Unlock()
	p.cfg.Log.Info("policy loaded", "version", rec.Version, "documents", set.Len())
	return nil
}

// Current implements api.PolicyAdmin.
func (p *PolicyService) Current() (*policy.Set, uint64) {
	p.rmu.RLock()
	defer p.rmu.RUnlock()
	return p.set, p.version
}

// PolicySet is the current set (xdsgen.PolicySource): a new pointer after every change.
func (p *PolicyService) PolicySet() *policy.Set {
	s, _ := p.Current()
	return s
}

// Policy is the current compiled policy.
func (p *PolicyService) Policy() *policy.Policy { return p.engine.Policy() }

// GroupMode implements learn.ModeSource from the current policy.
func (p *PolicyService) GroupMode(key string) (policy.Mode, bool) {
	return p.engine.Policy().GroupMode(key)
}

// Changed returns a channel closed at the next change.
func (p *PolicyService) Changed() <-chan struct{} {
	p.rmu.RLock()
	defer p.rmu.RUnlock()
	return p.changed
}

// commit validates next (unless done), persists it, compiles it and makes it current. The
// caller holds p.mu. On any error nothing changed.
func (p *PolicyService) commit(ctx context.Context, next *policy.Set, validated bool) (uint64, error) {
	if !validated {
		if err := next.Validate(); err != nil {
			return 0, api.Invalid(err)
		}
	}
	doc, err := next.Export()
	if err != nil {
		return 0, fmt.Errorf("export policy: %w", err)
	}
	cur, version := p.Current()
	version++
	// Compile (and swap) first, so a policy that cannot compile is never stored; if storing
	// fails, the previous policy goes back (one compile on the normal path, two on failure).
	if _, err := p.engine.Update(next); err != nil {
		return 0, api.Invalid(err)
	}
	if err := p.cfg.Store.SavePolicy(ctx, store.PolicyRecord{Version: version, Doc: doc}); err != nil {
		if _, rerr := p.engine.Update(cur); rerr != nil {
			p.cfg.Log.Error("restoring the previous policy failed", "err", rerr)
		}
		return 0, fmt.Errorf("save policy: %w", err)
	}
	p.rmu.Lock()
	p.set, p.version = next, version
	close(p.changed)
	p.changed = make(chan struct{})
	p.rmu.Unlock()
	return version, nil
}

func (p *PolicyService) audit(ctx context.Context, by, name, what string, err error) {
	e := events.Event{Kind: events.KindAudit, Time: p.cfg.Clock.Now(), Name: name,
		Source: events.Endpoint{Identity: by}, Action: "change", Severity: events.SeverityInfo, Reason: what}
	if err != nil {
		e.Action, e.Severity = "refuse", events.SeverityLow
		e.Reason = what + ": " + api.FirstLine(err.Error())
	}
	p.cfg.Audit.Emit(ctx, e)
}

func describe(objs []policy.ObjectRef) string {
	parts := make([]string, 0, len(objs))
	for _, o := range objs {
		parts = append(parts, o.Kind+" "+policy.Key(o.Namespace, o.Name))
	}
	return strings.Join(parts, ", ")
}

// Apply implements api.PolicyAdmin: all-or-nothing.
func (p *PolicyService) Apply(ctx context.Context, by string, incoming *policy.Set) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, _ := p.Current()
	what := "apply " + describe(incoming.Objects())
	next, err := policy.Apply(cur, incoming)
	if err != nil {
		err = api.Invalid(err)
		p.audit(ctx, by, "policy.apply", what, err)
		return 0, err
	}
	v, err := p.commit(ctx, next, true)
	p.audit(ctx, by, "policy.apply", fmt.Sprintf("%s (version %d)", what, v), err)
	return v, err
}

// Delete implements api.PolicyAdmin.
func (p *PolicyService) Delete(ctx context.Context, by, kind, key string) (uint64, error) {
	v, learned, err := p.delete(ctx, by, kind, key)
	// Outside the lock: the learner may be waiting for it in WriteLearned.
	if err == nil && learned && p.cfg.Forget != nil {
		if ferr := p.cfg.Forget(ctx, key); ferr != nil {
			p.cfg.Log.Warn("learner did not take the deleted learned rule", "rule", key, "err", ferr)
		}
	}
	return v, err
}

func (p *PolicyService) delete(ctx context.Context, by, kind, key string) (uint64, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, _ := p.Current()
	what := "delete " + kind + " " + key
	next, ok := cur.Delete(kind, key)
	if !ok {
		err := api.NotFound(fmt.Errorf("no %s %q in the policy (see 'meshguard get %s')", kind, key, strings.ToLower(kind)+"s"))
		p.audit(ctx, by, "policy.delete", what, err)
		return 0, false, err
	}
	v, err := p.commit(ctx, next, false)
	p.audit(ctx, by, "policy.delete", fmt.Sprintf("%s (version %d)", what, v), err)
	return v, kind == policy.KindNetworkRule && wasLearned(cur, key), err
}

// SetMode implements api.PolicyAdmin.
func (p *PolicyService) SetMode(ctx context.Context, by, groupKey string, m policy.Mode) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, _ := p.Current()
	what := fmt.Sprintf("mode set %s %s", groupKey, m)
	next, err := cur.SetMode(groupKey, m)
	if err != nil {
		if _, ok := cur.Group(groupKey); !ok {
			err = api.NotFound(err)
		} else {
			err = api.Invalid(err)
		}
		p.audit(ctx, by, "policy.mode", what, err)
		return 0, err
	}
	v, err := p.commit(ctx, next, false)
	p.audit(ctx, by, "policy.mode", fmt.Sprintf("%s (version %d)", what, v), err)
	return v, err
}

// AddMissing applies documents the controller generates (automatic groups) that do not exist
// yet; existing documents are left as the user made them.
func (p *PolicyService) AddMissing(ctx context.Context, by string, groups []policy.Group) error {
	if len(groups) == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, _ := p.Current()
	in := &policy.Set{}
	for _, g := range groups {
		if _, ok := cur.Group(g.Metadata.Key()); !ok {
			in.Groups = append(in.Groups, g)
		}
	}
	if len(in.Groups) == 0 {
		return nil
	}
	what := "add automatic " + describe(in.Objects())
	next, err := policy.Apply(cur, in)
	if err == nil {
		_, err = p.commit(ctx, next, true)
	}
	p.audit(ctx, by, "policy.auto", what, err)
	return err
}

// WriteLearned implements learn.RuleWriter: rules that already exist stay as they are (the
// user may have edited them); a rule that would not validate is skipped and logged.
func (p *PolicyService) WriteLearned(ctx context.Context, rules []policy.NetworkRule) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, _ := p.Current()
	have := map[string]bool{}
	for _, r := range cur.NetworkRules {
		have[r.Metadata.Key()] = true
	}
	var fresh []policy.NetworkRule
	for _, r := range rules {
		if !have[r.Metadata.Key()] {
			fresh = append(fresh, r)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	// Usually the whole batch validates at once; only then fall back to rule by rule.
	next := cur
	var added []policy.ObjectRef
	if all, err := policy.Apply(cur, &policy.Set{NetworkRules: fresh}); err == nil {
		next = all
		for _, r := range fresh {
			added = append(added, policy.ObjectRef{Kind: policy.KindNetworkRule, Namespace: r.Metadata.Namespace, Name: r.Metadata.Name})
		}
		fresh = nil
	}
	for _, r := range fresh {
		if have[r.Metadata.Key()] {
			continue
		}
		try, err := policy.Apply(next, &policy.Set{NetworkRules: []policy.NetworkRule{r}})
		if err != nil {
			p.cfg.Log.Warn("learned rule skipped", "rule", r.Metadata.Key(), "err", err)
			continue
		}
		next, have[r.Metadata.Key()] = try, true
		added = append(added, policy.ObjectRef{Kind: policy.KindNetworkRule, Namespace: r.Metadata.Namespace, Name: r.Metadata.Name})
	}
	if len(added) == 0 {
		return nil
	}
	_, err := p.commit(ctx, next, true)
	p.audit(ctx, "system:learner", "policy.learn", "learn "+describe(added), err)
	return err
}

// Explain implements api.PolicyAdmin.
func (p *PolicyService) Explain(_ context.Context, q api.ExplainRequest) (api.ExplainResponse, error) {
	from, err := p.groupsOf("from", q.From)
	if err != nil {
		return api.ExplainResponse{}, err
	}
	to, err := p.groupsOf("to", q.To)
	if err != nil {
		return api.ExplainResponse{}, err
	}
	f := policy.Flow{SrcGroups: from, DstGroups: to, Port: q.Port, Transport: dpi.TCP, App: q.App}
	if q.UDP {
		f.Transport = dpi.UDP
	}
	if q.Method != "" || q.Path != "" {
		if q.App == "" {
			f.App = "http"
		}
		var kv []string
		if q.Method != "" {
			kv = append(kv, dpi.AttrMethod, strings.ToUpper(q.Method))
		}
		if q.Path != "" {
			kv = append(kv, dpi.AttrPath, q.Path)
		}
		f.L7 = policy.Request(kv...)
	}
	pol := p.engine.Policy()
	in := pol.Input(&f)
	d, text := pol.Explain(&in)
	return api.ExplainResponse{Decision: api.ViewOf(d), Summary: d.String(), Explanation: text, FromGroups: from, ToGroups: to}, nil
}

// groupsOf resolves "ns/workload" to the workload's groups.
func (p *PolicyService) groupsOf(field, ref string) ([]string, error) {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" {
		return nil, api.Invalid(fmt.Errorf("%s %q: want NAMESPACE/WORKLOAD", field, ref))
	}
	groups := p.cfg.Registry.GroupsOf(ns, name)
	if groups == nil && field == "to" {
		// A service stands for its endpoints: decide for the first (they share a selector).
		for _, svc := range p.cfg.Registry.Services() {
			if svc.Namespace == ns && svc.Name == name && len(svc.Endpoints) > 0 {
				groups = p.cfg.Registry.GroupsOf(policy.SplitKey(svc.Endpoints[0]))
				break
			}
		}
	}
	if groups == nil {
		return nil, api.NotFound(fmt.Errorf("%s %q: no such workload (see 'meshguard get workloads')", field, ref))
	}
	return groups, nil
}

// Test implements api.PolicyAdmin: the proposed documents are applied to a copy of the
// current policy and the recorded flows replayed against it. Workload group membership is
// recomputed with the proposed groups (a new group with a selector counts), in a scratch
// registry holding the workloads the flows name.
func (p *PolicyService) Test(_ context.Context, proposed *policy.Set) (api.PolicyTestResponse, error) {
	cur, _ := p.Current()
	next, err := policy.Apply(cur, proposed)
	if err != nil {
		return api.PolicyTestResponse{}, api.Invalid(err)
	}
	compiled, err := policy.Compile(next, policy.CompileOptions{})
	if err != nil {
		return api.PolicyTestResponse{}, api.Invalid(err)
	}
	var recorded []RecordedFlow
	if p.cfg.History != nil {
		recorded = p.cfg.History.Recorded()
	}
	scratch, err := registry.New(registry.Config{Log: p.cfg.Log})
	if err != nil {
		return api.PolicyTestResponse{}, err
	}
	for _, rf := range recorded {
		for _, key := range []string{rf.Src, rf.Dst} {
			if key == "" {
				continue
			}
			if w, ok := p.cfg.Registry.Workload(policy.SplitKey(key)); ok {
				_ = scratch.UpsertWorkload(w)
			}
		}
	}
	scratch.SetGroups(next.Groups)
	groupsOf := func(key string, recorded []string) []string {
		if key == "" {
			return recorded
		}
		ns, name := policy.SplitKey(key)
		if g := scratch.GroupsOf(ns, name); g != nil {
			return g
		}
		return recorded
	}
	flows := make([]policy.Flow, 0, len(recorded))
	for _, rf := range recorded {
		f := rf.Flow
		f.SrcGroups, f.DstGroups = groupsOf(rf.Src, f.SrcGroups), groupsOf(rf.Dst, f.DstGroups)
		flows = append(flows, f)
	}
	out := api.PolicyTestResponse{Flows: len(flows), Changes: []api.FlowChange{}}
	for _, c := range policy.Replay(flows, compiled) {
		out.Changes = append(out.Changes, api.FlowChange{Flow: c.Flow.ID, App: c.Flow.App, Before: c.Before, After: c.After.Verdict, Why: c.After.String(), Detail: api.ViewOf(c.After)})
	}
	return out, nil
}

func wasLearned(s *policy.Set, key string) bool {
	for _, r := range s.NetworkRules {
		if r.Metadata.Key() == key {
			return r.Spec.Learned
		}
	}
	return false
}
