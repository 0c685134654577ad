package controller

import (
	"context"
	"fmt"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/policy"
)

var _ api.SensorAdmin = (*PolicyService)(nil)

// SetSensors implements api.SensorAdmin: the same all-or-nothing path as SetMode (validate,
// compile, persist, push to sidecars), audited.
func (p *PolicyService) SetSensors(ctx context.Context, by, groupKey string, edit func(*policy.Sensors)) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, _ := p.Current()
	var after policy.Sensors
	next, err := cur.SetSensors(groupKey, func(s *policy.Sensors) { edit(s); after = *s })
	what := "sensors set " + groupKey + " " + describeSensors(after)
	if err != nil {
		err = api.NotFound(err)
		p.audit(ctx, by, "policy.sensors", "sensors set "+groupKey, err)
		return 0, err
	}
	v, err := p.commit(ctx, next, false)
	p.audit(ctx, by, "policy.sensors", fmt.Sprintf("%s (version %d)", what, v), err)
	return v, err
}

func describeSensors(s policy.Sensors) string {
	out := ""
	if w := s.WAF; w != nil {
		out += fmt.Sprintf("waf(paranoia %d, action %q)", w.ParanoiaLevel, w.Action)
	}
	if d := s.DLP; d != nil {
		if out != "" {
			out += " "
		}
		out += fmt.Sprintf("dlp(%d patterns, %d custom, action %q)", len(d.Patterns), len(d.Custom), d.Action)
	}
	if out == "" {
		return "none"
	}
	return out
}
