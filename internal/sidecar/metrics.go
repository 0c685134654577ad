package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the sidecar data path's Prometheus metrics. Observe is a Reporter, so it can be
// chained with the controller reporter in the proxies' Report hook.
type Metrics struct {
	conns    *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the data-path metrics on reg, and the inbound proxy's counters if in is
// not nil.
func NewMetrics(reg prometheus.Registerer, in *InboundProxy) (*Metrics, error) {
	m := &Metrics{
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "meshguard", Subsystem: "sidecar", Name: "connections_total",
			Help: "Proxied connections (tunnel streams and plaintext connections) by direction, close reason and authentication.",
		}, []string{"direction", "reason", "authenticated"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "meshguard", Subsystem: "sidecar", Name: "bytes_total",
			Help: "Bytes proxied, by direction of the connection and of the bytes (sent: source to destination).",
		}, []string{"direction", "flow"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "meshguard", Subsystem: "sidecar", Name: "connection_duration_seconds",
			Help:    "Lifetime of proxied connections.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"direction"}),
	}
	for _, c := range []prometheus.Collector{m.conns, m.bytes, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	if in != nil {
		if err := RegisterInboundStats(reg, in); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// RegisterInboundStats registers the inbound proxy's tunnel counters, for a proxy created
// after NewMetrics (the sidecar opens its inbound listeners only once it is ready).
func RegisterInboundStats(reg prometheus.Registerer, in *InboundProxy) error {
	stat := func(name, help string, f func(InboundStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "meshguard", Subsystem: "sidecar", Name: name, Help: help},
			func() float64 { return float64(f(in.Stats())) })
	}
	for _, c := range []prometheus.Collector{
		stat("tunnel_connections_total", "Tunnel connections that completed the mTLS handshake.", func(s InboundStats) uint64 { return s.TLSConns }),
		stat("tunnel_handshake_failures_total", "Tunnel handshakes refused (no, untrusted or expired client SVID).", func(s InboundStats) uint64 { return s.HandshakeFailures }),
		stat("inbound_streams_total", "Tunnel streams delivered to the app.", func(s InboundStats) uint64 { return s.Streams }),
		stat("inbound_plaintext_connections_total", "Plaintext connections seen on the app's ports (refused in STRICT).", func(s InboundStats) uint64 { return s.PlainConns }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Observe counts one finished connection.
func (m *Metrics) Observe(r ConnReport) {
	d := string(r.Direction)
	auth := "false"
	if r.Authenticated {
		auth = "true"
	}
	m.conns.WithLabelValues(d, string(r.Reason), auth).Inc()
	m.bytes.WithLabelValues(d, "sent").Add(float64(r.BytesSent))
	m.bytes.WithLabelValues(d, "received").Add(float64(r.BytesReceived))
	m.duration.WithLabelValues(d).Observe(r.Duration.Seconds())
}
