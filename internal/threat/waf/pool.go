package waf

import "sync"

// Pool shares WAFs between groups: one rule set per distinct Config.Key(), built on first use.
// Groups without a waf sensor never call Get, so they pay nothing.
type Pool struct {
	mu   sync.Mutex
	wafs map[string]*WAF
}

// NewPool returns an empty pool.
func NewPool() *Pool { return &Pool{wafs: make(map[string]*WAF)} }

// Get returns the WAF for cfg, building it if no group has used that configuration yet. The
// returned WAF carries cfg's Action (actions differ per group; rule sets are shared).
func (p *Pool) Get(cfg Config) (*WAF, error) {
	key := cfg.Key()
	p.mu.Lock()
	defer p.mu.Unlock()
	w, ok := p.wafs[key]
	if !ok {
		var err error
		if w, err = New(cfg); err != nil {
			return nil, err
		}
		p.wafs[key] = w
	}
	if w.cfg.Action == cfg.Action {
		return w, nil
	}
	shared := *w // same compiled rule set, this group's action
	shared.cfg.Action = cfg.Action
	return &shared, nil
}

// Len is how many rule sets are built.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.wafs)
}
