package capture

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterMetrics exposes the manager's Stats as gauges on reg (read at scrape time, so the
// data path pays nothing).
func (m *Manager) RegisterMetrics(reg prometheus.Registerer) error {
	gauges := []struct {
		name, help string
		v          func(Stats) float64
	}{
		{"meshguard_capture_connections", "Connections whose plaintext is being recorded.", func(s Stats) float64 { return float64(s.Open) }},
		{"meshguard_capture_lingering_connections", "Closed connections still held for late triggers.", func(s Stats) float64 { return float64(s.Lingering) }},
		{"meshguard_capture_recording", "Captures recording their after-trigger window.", func(s Stats) float64 { return float64(s.Recording) }},
		{"meshguard_capture_buffered_bytes", "Ring buffer bytes held against the global budget.", func(s Stats) float64 { return float64(s.BufferedBytes) }},
		{"meshguard_capture_budget_bytes", "The global ring buffer budget.", func(s Stats) float64 { return float64(s.GlobalBytes) }},
	}
	for _, g := range gauges {
		c := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: g.name, Help: g.help}, func() float64 { return g.v(m.Stats()) })
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("capture: register %s: %w", g.name, err)
		}
	}
	return nil
}
