package controller

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/internal/events"
)

// notifiers builds the response engine's webhook and syslog targets: one event pipeline each
// (bounded queues, counted drops), so a slow receiver never holds up the engine. Their
// metrics carry the prefix notify_webhook_ / notify_syslog_ (the meshguard_events_* names
// are the main pipeline's).
// Unset flags give nil pipelines: the engine then counts the action as unconfigured.
func (c Config) notifiers(reg prometheus.Registerer, clock clockwork.Clock, log *slog.Logger) (webhook, syslog *events.Pipeline, err error) {
	if c.WebhookURL != "" {
		secret, err := os.ReadFile(c.WebhookSecretFile)
		if err != nil {
			return nil, nil, fmt.Errorf("controller: --webhook-secret-file: %w (the HMAC key receivers verify; required with --webhook-url)", err)
		}
		secret = bytes.TrimSpace(secret)
		x, err := events.NewWebhook(events.WebhookConfig{URL: c.WebhookURL, Secret: secret, Clock: clock,
			Client: &http.Client{Timeout: 15 * time.Second}})
		if err != nil {
			return nil, nil, fmt.Errorf("controller: --webhook-url: %w", err)
		}
		if webhook, err = events.NewPipeline(events.PipelineConfig{Exporters: []events.Exporter{x},
			Registry: prometheus.WrapRegistererWithPrefix("notify_webhook_", reg), Log: log.With("component", "webhook")}); err != nil {
			return nil, nil, fmt.Errorf("controller: %w", err)
		}
	}
	if c.SyslogAddr != "" {
		network, addr := "udp", c.SyslogAddr
		if n, a, ok := strings.Cut(c.SyslogAddr, "://"); ok {
			network, addr = n, a
		}
		host, _ := os.Hostname()
		x, err := events.NewSyslog(events.SyslogConfig{Network: network, Addr: addr, Hostname: host})
		if err != nil {
			return nil, nil, fmt.Errorf("controller: --syslog-addr %q (want host:port, udp://host:port or tcp://host:port): %w", c.SyslogAddr, err)
		}
		if syslog, err = events.NewPipeline(events.PipelineConfig{Exporters: []events.Exporter{x},
			Registry: prometheus.WrapRegistererWithPrefix("notify_syslog_", reg), Log: log.With("component", "syslog")}); err != nil {
			return nil, nil, fmt.Errorf("controller: %w", err)
		}
	}
	return webhook, syslog, nil
}
