// Package learn turns observed connections into learned network rules: while a destination
// group is in discover mode, every connection no rule covered becomes an allow rule
// {from group, to group, application} (or {port} when the application is unknown). Rules are
// de-duplicated, named deterministically, batched over a debounce window and written through
// a RuleWriter; switching the group out of discover freezes its learning, pending rules
// included. Learned rules are ordinary NetworkRules with learned: true.
package learn

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/meshguard/meshguard/internal/dpi"
	"github.com/meshguard/meshguard/internal/policy"
)

// Observation is one connection the policy let through in discover mode without a rule
// (policy.Decision.Learn).
type Observation struct {
	SrcWorkload string // "ns/name", for the rule's comment
	SrcGroup    string // key of the source's group (its automatic group): the rule's from
	DstGroup    string // key of the destination group: the rule's to
	Port        uint16
	Transport   dpi.Transport
	App         string // detected application; "" or "unknown" when not detected
	L7          string // short request summary ("GET /api/items"), for the comment
}

// RuleWriter stores learned rules. Implementations must leave a rule that already exists
// (same namespace and name) as it is: the user may have edited it.
type RuleWriter interface {
	WriteLearned(ctx context.Context, rules []policy.NetworkRule) error
}

// ModeSource tells a group's current mode (*policy.Policy implements it; so does ModeFunc).
type ModeSource interface {
	GroupMode(key string) (policy.Mode, bool)
}

// ModeFunc adapts a function to ModeSource (e.g. one reading the engine's current policy).
type ModeFunc func(key string) (policy.Mode, bool)

// GroupMode implements ModeSource.
func (f ModeFunc) GroupMode(key string) (policy.Mode, bool) { return f(key) }

// Config is everything the learner needs.
type Config struct {
	Writer   RuleWriter
	Modes    ModeSource
	Clock    clockwork.Clock
	Log      *slog.Logger
	Debounce time.Duration // observations are written this long after the first of a batch
	Queue    int           // observations buffered before Observe drops; default 4096
}

func (c *Config) validate() error {
	if c.Writer == nil || c.Modes == nil || c.Clock == nil || c.Log == nil {
		return errors.New("learn: config: Writer, Modes, Clock and Log are required")
	}
	if c.Debounce <= 0 {
		return fmt.Errorf("learn: config: Debounce must be positive, got %v", c.Debounce)
	}
	if c.Queue == 0 {
		c.Queue = 4096
	}
	if c.Queue < 0 {
		return fmt.Errorf("learn: config: Queue must be positive, got %d", c.Queue)
	}
	return nil
}

// Stats counts what the learner did.
type Stats struct {
	Observed, Learned, Duplicates, Frozen, Dropped, WriteErrors uint64
}

// item is an observation, a Sync marker (done set) or a Forget (forget set).
type item struct {
	obs    Observation
	done   chan struct{}
	forget []string
}

// Learner is the learning subsystem.
type Learner struct {
	cfg   Config
	in    chan item
	stats struct {
		observed, learned, duplicates, frozen, dropped, writeErrors atomic.Uint64
	}
}

// New builds a learner; Run starts it.
func New(cfg Config) (*Learner, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Learner{cfg: cfg, in: make(chan item, cfg.Queue)}, nil
}

// Observe queues an observation without blocking; it reports false (and counts a drop) when
// the queue is full.
func (l *Learner) Observe(o Observation) bool {
	select {
	case l.in <- item{obs: o}:
		return true
	default:
		l.stats.dropped.Add(1)
		return false
	}
}

// Sync waits until every observation queued before it has been taken into a batch (or
// discarded). It needs Run to be running.
func (l *Learner) Sync(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case l.in <- item{done: done}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Forget tells the learner that learned rules were deleted (keys "ns/name"), so flows they
// covered are learned again while their group is still in discover mode. It blocks until the
// learner has taken the request, or ctx ends.
func (l *Learner) Forget(ctx context.Context, keys ...string) error {
	select {
	case l.in <- item{forget: keys}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats returns the counters.
func (l *Learner) Stats() Stats {
	return Stats{
		Observed: l.stats.observed.Load(), Learned: l.stats.learned.Load(), Duplicates: l.stats.duplicates.Load(),
		Frozen: l.stats.frozen.Load(), Dropped: l.stats.dropped.Load(), WriteErrors: l.stats.writeErrors.Load(),
	}
}

// Run learns until ctx ends. Pending rules are written once more on the way out.
func (l *Learner) Run(ctx context.Context) error {
	written := map[string]bool{}               // rule keys already stored
	pending := map[string]policy.NetworkRule{} // rule key -> rule
	var timer clockwork.Timer
	var fire <-chan time.Time
	arm := func() {
		if timer == nil {
			timer = l.cfg.Clock.NewTimer(l.cfg.Debounce)
			fire = timer.Chan()
		}
	}
	flush := func(ctx context.Context) {
		timer, fire = nil, nil
		batch := make([]policy.NetworkRule, 0, len(pending))
		for k, r := range pending {
			// Switching out of discover freezes learning, pending rules included.
			if !l.discovering(r.Spec.To, r.Metadata.Namespace) {
				delete(pending, k)
				l.stats.frozen.Add(1)
				continue
			}
			batch = append(batch, r)
		}
		if len(batch) == 0 {
			return
		}
		sort.Slice(batch, func(i, j int) bool { return batch[i].Metadata.Key() < batch[j].Metadata.Key() })
		if err := l.cfg.Writer.WriteLearned(ctx, batch); err != nil {
			l.stats.writeErrors.Add(1)
			l.cfg.Log.Warn("learn: writing learned rules failed; will retry", "rules", len(batch), "err", err)
			if ctx.Err() == nil {
				arm()
			}
			return
		}
		for _, r := range batch {
			k := r.Metadata.Key()
			written[k] = true
			delete(pending, k)
		}
		l.stats.learned.Add(uint64(len(batch)))
		l.cfg.Log.Info("learn: rules learned", "count", len(batch))
	}
	for {
		select {
		case <-ctx.Done():
			if len(pending) > 0 {
				fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				flush(fctx)
				cancel()
			}
			if timer != nil {
				timer.Stop()
			}
			return nil
		case it := <-l.in:
			if it.done != nil {
				close(it.done)
				continue
			}
			if it.forget != nil {
				for _, k := range it.forget {
					delete(written, k)
				}
				continue
			}
			o := it.obs
			l.stats.observed.Add(1)
			mode, ok := l.cfg.Modes.GroupMode(o.DstGroup)
			if !ok || mode != policy.ModeDiscover {
				l.stats.frozen.Add(1)
				continue
			}
			r, err := Rule(o)
			if err != nil {
				l.cfg.Log.Debug("learn: observation skipped", "err", err)
				continue
			}
			k := r.Metadata.Key()
			if written[k] {
				l.stats.duplicates.Add(1)
				continue
			}
			if _, ok := pending[k]; ok {
				l.stats.duplicates.Add(1)
				continue
			}
			pending[k] = r
			arm()
		case <-fire:
			flush(ctx)
		}
	}
}

func (l *Learner) discovering(to policy.GroupRef, ruleNS string) bool {
	ns := to.Namespace
	if ns == "" {
		ns = ruleNS
	}
	if m, ok := l.cfg.Modes.GroupMode(policy.Key(ns, to.Group)); ok {
		return m == policy.ModeDiscover
	}
	m, ok := l.cfg.Modes.GroupMode(to.Group)
	return ok && m == policy.ModeDiscover
}

// Rule builds the learned rule for an observation: in the destination's namespace (the
// protected side; the source's for a cluster-scoped destination), allowing the application on
// any port when it is known, else the port with any application. Its name is
// learned-<from>-<to>-<app> or learned-<from>-<to>-<tcp|udp><port>.
func Rule(o Observation) (policy.NetworkRule, error) {
	srcNS, src := policy.SplitKey(o.SrcGroup)
	dstNS, dst := policy.SplitKey(o.DstGroup)
	if src == "" || dst == "" {
		return policy.NetworkRule{}, fmt.Errorf("learn: observation needs source and destination groups (got %q -> %q)", o.SrcGroup, o.DstGroup)
	}
	ns := dstNS
	if ns == "" {
		ns = srcNS
	}
	from := policy.GroupRef{Group: src}
	fromPart := src
	if srcNS != ns {
		from.Namespace = srcNS
		if srcNS != "" {
			fromPart = srcNS + "." + src
		}
	}
	to := policy.GroupRef{Group: dst}
	if dstNS != ns {
		to.Namespace = dstNS
	}
	spec := policy.NetworkRuleSpec{From: from, To: to, Action: policy.ActionAllow, Learned: true}
	var what string
	if app := o.App; app != "" && app != "unknown" && app != "any" {
		spec.Ports, spec.Applications = []string{"any"}, []string{app}
		what = app
	} else {
		tr := "tcp"
		if o.Transport == dpi.UDP {
			tr = "udp"
		}
		if o.Port == 0 {
			return policy.NetworkRule{}, errors.New("learn: observation without application needs a port")
		}
		spec.Ports, spec.Applications = []string{tr + "/" + strconv.Itoa(int(o.Port))}, []string{"any"}
		what = tr + strconv.Itoa(int(o.Port))
	}
	var c strings.Builder
	c.WriteString("learned from")
	if o.SrcWorkload != "" {
		c.WriteString(" " + o.SrcWorkload)
	}
	c.WriteString(" " + o.Transport.String() + "/" + strconv.Itoa(int(o.Port)))
	if o.L7 != "" {
		l7 := o.L7
		if len(l7) > 120 {
			l7 = l7[:120]
		}
		c.WriteString(": " + strings.ToValidUTF8(l7, "?"))
	}
	spec.Comment = c.String()
	return policy.NetworkRule{
		TypeMeta: policy.TypeMeta{APIVersion: policy.APIVersion, Kind: policy.KindNetworkRule},
		Metadata: policy.ObjectMeta{Name: ruleName(fromPart, dst, what), Namespace: ns},
		Spec:     spec,
	}, nil
}

func ruleName(from, to, what string) string {
	n := strings.ToLower("learned-" + from + "-" + to + "-" + what)
	n = strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, n)
	n = strings.TrimRight(n, "-.")
	if len(n) > 253 {
		h := fnv.New64a()
		h.Write([]byte(n))
		n = strings.TrimRight(n[:236], "-.") + "-" + strconv.FormatUint(h.Sum64(), 16)
	}
	return n
}
