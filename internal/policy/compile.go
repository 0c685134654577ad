package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// GroupID is a compact group number used on the decision path. IDs come from a GroupIDs
// table and stay stable across compiles that share the table, so a sidecar may cache the IDs
// of its peers across policy updates.
type GroupID uint32

// GroupIDs hands out stable IDs for group keys; it only grows. Safe for concurrent use.
type GroupIDs struct {
	mu   sync.Mutex
	ids  map[string]GroupID
	keys []string
}

// NewGroupIDs returns an empty table.
func NewGroupIDs() *GroupIDs { return &GroupIDs{ids: map[string]GroupID{}} }

// ID returns the ID of key, assigning the next one if key is new.
func (t *GroupIDs) ID(key string) GroupID {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, ok := t.ids[key]; ok {
		return id
	}
	id := GroupID(len(t.keys))
	t.ids[key] = id
	t.keys = append(t.keys, key)
	return id
}

// CompileOptions tunes Compile.
type CompileOptions struct {
	// IDs keeps group IDs stable across compiles; nil uses a fresh table.
	IDs *GroupIDs
	// DefaultMode decides traffic to destinations that are in no group (unknown egress).
	// Empty means monitor: allowed, never silently.
	DefaultMode Mode
}

// Policy is a compiled, immutable policy. It is safe for concurrent use; replace it as a whole
// (Engine does, atomically) rather than changing it.
type Policy struct {
	groups []cgroup // by GroupID; holes (valid=false) for IDs of groups not in this policy
	strict []uint8  // by GroupID: 1 + mode strictness, 0 for holes
	ids    map[string]GroupID
	// byDst indexes rules by destination GroupID, then by source group: a small array of
	// source IDs scanned linearly (it stays in cache) and their buckets of compact entries.
	byDst       []dstIndex
	apps        map[string]appInfo // application name -> id used in entries, and its L7 sections
	rules       []crule            // sorted by (priority, key): index order is evaluation order
	defaultMode Mode
	set         *Set
	noPolicy    bool // the engine's initial placeholder: nothing loaded yet
}

type cgroup struct {
	key   string
	mode  Mode
	valid bool
}

// bucket holds one (destination, source) pair's rules: denies first, then allows, each in
// evaluation order.
type bucket struct {
	entries []centry
	nDeny   int
}

// centry is the hot part of a rule, inline in its bucket. Rules with more ports or
// applications than fit inline are checked against the full crule.
type centry struct {
	idx    int32 // into Policy.rules; also the evaluation order
	flags  uint8
	nports uint8
	napps  uint8
	l7has  uint8 // the rule's l7 section bits (l7Has*)
	ports  [2]portSpec
	apps   [2]uint16
}

type portSpec struct {
	lo, hi uint16
	tr     uint8 // 0 any, 1 tcp, 2 udp
}

const (
	fAnyPort uint8 = 1 << iota
	fAnyApp
	fL7
	fOverflow // ports or apps did not fit inline: use crule
)

// appInfo is what the decision needs about the input's application.
type appInfo struct {
	id uint16
	l7 uint8 // l7Has* bits of the sections that apply to it
}

// l7Class returns the l7 sections that apply to an application.
func l7Class(app string) uint8 {
	var b uint8
	if isHTTP(app) {
		b |= l7HasHTTP
	}
	if isGRPC(app) {
		b |= l7HasGRPC
	}
	if app == "dns" {
		b |= l7HasDNS
	}
	if app == "redis" {
		b |= l7HasRedis
	}
	if isSQL(app) {
		b |= l7HasSQL
	}
	return b
}

func bucketKey(dst, src GroupID) uint64 { return uint64(dst)<<32 | uint64(src) }

// inlineHeads source groups per destination are found without leaving the dstIndex array,
// which is dense and stays in cache; more spill to a slice.
const inlineHeads = 6

type dstIndex struct {
	n       uint32 // number of heads
	inl     [inlineHeads]head
	more    []head   // heads past inlineHeads
	entries []centry // all buckets of this destination, contiguous
}

// head locates one source group's bucket in dstIndex.entries: [off, deny) are its deny
// rules, [deny, end) its allow rules.
type head struct {
	src            GroupID
	off, deny, end uint32
}

// find returns the head for src.
func (d *dstIndex) find(src GroupID) *head {
	n := min(int(d.n), inlineHeads)
	for i := 0; i < n; i++ {
		if d.inl[i].src == src {
			return &d.inl[i]
		}
	}
	for i := range d.more {
		if d.more[i].src == src {
			return &d.more[i]
		}
	}
	return nil
}

type crule struct {
	id       string
	action   Action
	priority int
	learned  bool
	from, to GroupID
	anyPort  bool
	ports    []PortRange
	anyApp   bool
	apps     []string
	l7       cl7 // inline: one cache miss fewer per L7 rule
	toKey    string
	toMode   Mode
	doc      *NetworkRule
}

// Compile turns a validated set into a Policy. Call Validate first: Compile reports only the
// problems it cannot compile around.
func Compile(s *Set, opts CompileOptions) (*Policy, error) {
	ids := opts.IDs
	if ids == nil {
		ids = NewGroupIDs()
	}
	dm := opts.DefaultMode
	if dm == "" {
		dm = ModeMonitor
	}
	if !validMode(dm) {
		return nil, fmt.Errorf("policy: compile: default mode %q is not a mode (allowed: %s)", dm, strings.Join(Modes(), ", "))
	}
	p := &Policy{ids: make(map[string]GroupID, len(s.Groups)), defaultMode: dm, set: s}
	r := resolver{groups: make(map[string]*Group, len(s.Groups))}
	for i := range s.Groups {
		g := &s.Groups[i]
		key := g.Metadata.Key()
		r.groups[key] = g
		id := ids.ID(key)
		for int(id) >= len(p.groups) {
			p.groups = append(p.groups, cgroup{})
		}
		mode := g.Spec.Mode
		if !validMode(mode) {
			return nil, fmt.Errorf("policy: compile: group %s: mode %q is not a mode; run Validate first", key, mode)
		}
		p.groups[id] = cgroup{key: key, mode: mode, valid: true}
		p.ids[key] = id
	}
	p.strict = make([]uint8, len(p.groups))
	for i, g := range p.groups {
		if g.valid {
			p.strict[i] = uint8(1 + g.mode.strictness())
		}
	}
	p.rules = make([]crule, 0, len(s.NetworkRules))
	for i := range s.NetworkRules {
		nr := &s.NetworkRules[i]
		cr, err := compileRule(nr, &r, p.ids)
		if err != nil {
			return nil, err
		}
		p.rules = append(p.rules, cr)
	}
	sort.Slice(p.rules, func(a, b int) bool {
		if p.rules[a].priority != p.rules[b].priority {
			return p.rules[a].priority < p.rules[b].priority
		}
		return p.rules[a].id < p.rules[b].id
	})
	p.apps = map[string]appInfo{}
	addApp := func(a string) {
		if _, ok := p.apps[a]; !ok && a != "any" {
			p.apps[a] = appInfo{id: uint16(len(p.apps) + 1), l7: l7Class(a)}
		}
	}
	for _, a := range []string{"http", "http2", "grpc", "dns", "redis", "postgres", "postgresql", "mysql", "mariadb"} {
		addApp(a) // so "applications: [any]" rules know which l7 sections apply without the rule
	}
	for i := range p.rules {
		for _, a := range p.rules[i].apps {
			addApp(a)
		}
	}
	lists := map[uint64]*bucket{}
	allows := map[uint64][]centry{}
	for i := range p.rules {
		cr := &p.rules[i]
		k := bucketKey(cr.to, cr.from)
		e := p.entry(int32(i))
		if cr.action == ActionDeny {
			b := lists[k]
			if b == nil {
				b = &bucket{}
				lists[k] = b
			}
			b.entries = append(b.entries, e)
			b.nDeny++
		} else {
			allows[k] = append(allows[k], e)
			if lists[k] == nil {
				lists[k] = &bucket{}
			}
		}
	}
	p.byDst = make([]dstIndex, len(p.groups))
	keys := make([]uint64, 0, len(lists))
	for k := range lists {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b := lists[k]
		d := &p.byDst[k>>32]
		h := head{src: GroupID(uint32(k)), off: uint32(len(d.entries))}
		d.entries = append(d.entries, b.entries...)
		h.deny = uint32(len(d.entries))
		d.entries = append(d.entries, allows[k]...)
		h.end = uint32(len(d.entries))
		if d.n < inlineHeads {
			d.inl[d.n] = h
		} else {
			d.more = append(d.more, h)
		}
		d.n++
	}
	for i := range p.byDst {
		d := &p.byDst[i]
		d.entries = slices.Clip(d.entries)
		d.more = slices.Clip(d.more)
	}
	return p, nil
}

func (p *Policy) entry(i int32) centry {
	cr := &p.rules[i]
	e := centry{idx: i}
	if cr.anyPort {
		e.flags |= fAnyPort
	} else if len(cr.ports) > len(e.ports) {
		e.flags |= fOverflow
	} else {
		for j, pr := range cr.ports {
			ps := portSpec{lo: pr.Lo, hi: pr.Hi}
			switch pr.Transport {
			case "tcp":
				ps.tr = 1
			case "udp":
				ps.tr = 2
			}
			e.ports[j] = ps
		}
		e.nports = uint8(len(cr.ports))
	}
	if cr.anyApp {
		e.flags |= fAnyApp
	} else if len(cr.apps) > len(e.apps) {
		e.flags |= fOverflow
	} else {
		for j, a := range cr.apps {
			e.apps[j] = p.apps[a].id
		}
		e.napps = uint8(len(cr.apps))
	}
	if cr.l7.has != 0 {
		e.flags |= fL7
		e.l7has = cr.l7.has
	}
	return e
}

func compileRule(nr *NetworkRule, r *resolver, ids map[string]GroupID) (crule, error) {
	key := nr.Metadata.Key()
	fail := func(format string, args ...any) (crule, error) {
		return crule{}, fmt.Errorf("policy: compile: network rule %s: %s; run Validate first", key, fmt.Sprintf(format, args...))
	}
	fromKey, ok := r.resolve(nr.Metadata.Namespace, nr.Spec.From)
	if !ok {
		return fail("unknown from group %q", nr.Spec.From.Group)
	}
	toKey, ok := r.resolve(nr.Metadata.Namespace, nr.Spec.To)
	if !ok {
		return fail("unknown to group %q", nr.Spec.To.Group)
	}
	if nr.Spec.Action != ActionAllow && nr.Spec.Action != ActionDeny {
		return fail("action %q", nr.Spec.Action)
	}
	cr := crule{id: key, action: nr.Spec.Action, priority: nr.Spec.Priority, learned: nr.Spec.Learned,
		from: ids[fromKey], to: ids[toKey], toKey: toKey, toMode: r.groups[toKey].Spec.Mode, doc: nr}
	if len(nr.Spec.Ports) == 0 {
		cr.anyPort = true
	}
	for _, ps := range nr.Spec.Ports {
		pr, err := ParsePort(ps)
		if err != nil {
			return fail("%v", err)
		}
		if pr.Transport == "" {
			cr.anyPort = true
		}
		cr.ports = append(cr.ports, pr)
	}
	if len(nr.Spec.Applications) == 0 {
		cr.anyApp = true
	}
	for _, a := range nr.Spec.Applications {
		if a == "any" {
			cr.anyApp = true
		}
		cr.apps = append(cr.apps, a)
		if a == "grpc" && !contains(nr.Spec.Applications, "http2") {
			cr.apps = append(cr.apps, "http2") // DPI reports gRPC as http2
		}
	}
	if nr.Spec.L7 != nil {
		l7, err := compileL7(nr.Spec.L7)
		if err != nil {
			return fail("%v", err)
		}
		cr.l7 = *l7
	}
	return cr, nil
}

// GroupID returns the ID of a group of this policy by key ("ns/name" or "name").
func (p *Policy) GroupID(key string) (GroupID, bool) {
	id, ok := p.ids[key]
	return id, ok
}

// GroupIDsOf appends the IDs of the given group keys that exist in this policy to dst
// (sidecars resolve a peer's groups once per policy version and reuse the slice).
func (p *Policy) GroupIDsOf(dst []GroupID, keys ...string) []GroupID {
	for _, k := range keys {
		if id, ok := p.ids[k]; ok {
			dst = append(dst, id)
		}
	}
	return dst
}

// GroupKey returns the key of an ID, or "" if the ID is not a group of this policy.
func (p *Policy) GroupKey(id GroupID) string {
	if int(id) < len(p.groups) && p.groups[id].valid {
		return p.groups[id].key
	}
	return ""
}

// GroupMode returns a group's mode by key.
func (p *Policy) GroupMode(key string) (Mode, bool) {
	id, ok := p.ids[key]
	if !ok {
		return "", false
	}
	return p.groups[id].mode, true
}

// Set returns the documents this policy was compiled from (read-only).
func (p *Policy) Set() *Set { return p.set }

// NumRules is the number of compiled network rules.
func (p *Policy) NumRules() int { return len(p.rules) }

// Engine holds the current Policy behind an atomic pointer: Decide never takes a lock, and an
// update is one pointer swap. Its group ID table is shared by every compile it does.
type Engine struct {
	ids  *GroupIDs
	cur  atomic.Pointer[Policy]
	opts CompileOptions
}

// NewEngine returns an engine whose initial policy denies everything (a sidecar that has never
// received config admits nothing) until the first Update.
func NewEngine(opts CompileOptions) *Engine {
	if opts.IDs == nil {
		opts.IDs = NewGroupIDs()
	}
	e := &Engine{ids: opts.IDs, opts: opts}
	e.cur.Store(&Policy{ids: map[string]GroupID{}, defaultMode: ModeProtect, set: &Set{}, noPolicy: true})
	return e
}

// Update compiles s and makes it current. s must have passed Validate.
func (e *Engine) Update(s *Set) (*Policy, error) {
	p, err := Compile(s, e.opts)
	if err != nil {
		return nil, err
	}
	e.cur.Store(p)
	return p, nil
}

// Policy returns the current policy. Resolve group IDs and decide against the same Policy.
func (e *Engine) Policy() *Policy { return e.cur.Load() }

// Decide evaluates in against the current policy.
func (e *Engine) Decide(in *Input) Decision { return e.cur.Load().Decide(in) }

// ForDestinations returns the part of s a sidecar needs to decide traffic to a workload in
// the given groups: every group (so source groups resolve) and the network rules whose to side
// is one of them. Compiling it gives the same decisions for that workload as the whole policy,
// at a fraction of the memory.
func (s *Set) ForDestinations(groupKeys ...string) *Set {
	want := make(map[string]bool, len(groupKeys))
	for _, k := range groupKeys {
		want[k] = true
	}
	r := resolver{groups: make(map[string]*Group, len(s.Groups))}
	for i := range s.Groups {
		r.groups[s.Groups[i].Metadata.Key()] = &s.Groups[i]
	}
	out := &Set{Groups: s.Groups}
	for _, nr := range s.NetworkRules {
		if k, ok := r.resolve(nr.Metadata.Namespace, nr.Spec.To); ok && want[k] {
			out.NetworkRules = append(out.NetworkRules, nr)
		}
	}
	return out
}
