package xds

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type serverMetrics struct {
	connected      prometheus.Gauge
	version        prometheus.Gauge
	pushes         prometheus.Counter
	unchanged      prometheus.Counter
	nacks          prometheus.Counter
	generateErrors prometheus.Counter
	pushLatency    prometheus.Histogram
	reports        prometheus.Counter
	reportsDropped prometheus.Counter
	threats        prometheus.Counter
	threatsDropped prometheus.Counter
	captures       prometheus.Counter
}

func newServerMetrics(reg prometheus.Registerer, s *Server) (*serverMetrics, error) {
	m := &serverMetrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshguard_xds_sidecars_connected", Help: "Sidecars with an open config stream.",
		}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshguard_xds_config_version", Help: "Current config version.",
		}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_xds_pushes_total", Help: "Snapshots sent to sidecars.",
		}),
		unchanged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_xds_pushes_skipped_total", Help: "Version bumps that left a sidecar's snapshot unchanged, so nothing was sent.",
		}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_xds_nacks_total", Help: "Snapshots sidecars rejected.",
		}),
		generateErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_xds_generate_errors_total", Help: "Failures building a sidecar's snapshot.",
		}),
		pushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshguard_xds_push_latency_seconds",
			Help:    "Time from a config version bump until a sidecar ACKed it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1ms .. ~8s
		}),
		reports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_xds_connection_reports_total", Help: "Connection reports received from sidecars.",
		}),
		reportsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_xds_connection_reports_dropped_total", Help: "Connection reports sidecars dropped (queue full), as they reported.",
		}),
		threats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_xds_threats_received_total", Help: "Threat events received from sidecars.",
		}),
		threatsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_xds_threats_dropped_total", Help: "Threat events sidecars dropped (queue full or controller unreachable), as they reported.",
		}),
		captures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshguard_xds_captures_received_total", Help: "Packet captures sidecars uploaded (accepted for the sink).",
		}),
	}
	m.version.Set(float64(s.version))
	cs := []prometheus.Collector{
		m.connected, m.version, m.pushes, m.unchanged, m.nacks, m.generateErrors, m.pushLatency, m.reports, m.reportsDropped,
		m.threats, m.threatsDropped, m.captures,
		sidecarCollector{s},
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("xds server: register metrics: %w (one Server per registry)", err)
		}
	}
	return m, nil
}

var (
	descOutOfDate = prometheus.NewDesc("meshguard_xds_sidecars_out_of_date",
		"Connected sidecars that have not applied the current config version.", nil, nil)
	descSidecarVersion = prometheus.NewDesc("meshguard_xds_sidecar_config_version",
		"Config version each connected sidecar applied last.", []string{"sidecar"}, nil)
)

// sidecarCollector reads per-sidecar state at scrape time instead of keeping per-sidecar
// series up to date on every ACK.
type sidecarCollector struct{ s *Server }

func (c sidecarCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descOutOfDate
	ch <- descSidecarVersion
}

func (c sidecarCollector) Collect(ch chan<- prometheus.Metric) {
	cur := c.s.Version()
	stale := 0
	// Two streams of one sidecar (a reconnect racing the old stream's end) would make a
	// duplicate series; Sidecars lists the newer one last and it wins.
	versions := map[string]uint64{}
	for _, st := range c.s.Sidecars() {
		if !st.UpToDate(cur) {
			stale++
		}
		versions[st.Node.Key()] = st.AckedVersion
	}
	for k, v := range versions {
		ch <- prometheus.MustNewConstMetric(descSidecarVersion, prometheus.GaugeValue, float64(v), k)
	}
	ch <- prometheus.MustNewConstMetric(descOutOfDate, prometheus.GaugeValue, float64(stale))
}
