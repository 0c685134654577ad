package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/registry"
	"github.com/meshguard/meshguard/internal/xds"
)

// quietLogger logs every event but connection summaries, which would flood the log.
type quietLogger struct{ events.Logger }

func (q quietLogger) Emit(ctx context.Context, e events.Event) {
	if e.Kind != events.KindConnection {
		q.Logger.Emit(ctx, e)
	}
}

// flowHistory breaks the construction cycle policy service -> connections -> policy.
type flowHistory struct{ c **Connections }

func (h flowHistory) Recorded() []RecordedFlow {
	if *h.c == nil {
		return nil
	}
	return (*h.c).Recorded()
}

func portOf(a net.Addr) uint16 {
	if ta, ok := a.(*net.TCPAddr); ok {
		return uint16(ta.Port)
	}
	return 0
}

// sidecarTLS is the config server's TLS: sidecars must present an SVID that chains to the
// current bundle (checked per handshake, so CA rotation applies at once).
func sidecarTLS(ca *identity.CA, hosts []string) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: ca.ServerCertificate(hosts),
		ClientAuth:     tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			chain := make([]*x509.Certificate, 0, len(raw))
			for _, b := range raw {
				c, err := x509.ParseCertificate(b)
				if err != nil {
					return fmt.Errorf("client certificate: %w", err)
				}
				chain = append(chain, c)
			}
			if len(chain) == 0 {
				return errors.New("a client certificate (the sidecar's SVID) is required")
			}
			_, _, err := ca.VerifySVID(chain)
			return err
		},
	}
}

// registerControllerMetrics adds what the controller itself knows: the policy version and
// each connected sidecar's applied config version. The xds server registers its own
// (sidecars connected, config version, push latency); the connections, violations by group.
func registerControllerMetrics(reg prometheus.Registerer, pol *PolicyService, srv *xds.Server) error {
	policyVersion := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshguard_policy_version", Help: "Version of the current policy (increments on every change).",
	}, func() float64 { _, v := pol.Current(); return float64(v) })
	policyDocs := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshguard_policy_documents", Help: "Documents in the current policy.",
	}, func() float64 { s, _ := pol.Current(); return float64(s.Len()) })
	for _, c := range []prometheus.Collector{policyVersion, policyDocs, sidecarVersions{srv: srv, desc: prometheus.NewDesc(
		"meshguard_sidecar_config_version", "Config version each connected sidecar applied (ACKed).", []string{"sidecar"}, nil)}} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("controller: register metrics: %w", err)
		}
	}
	return nil
}

type sidecarVersions struct {
	srv  *xds.Server
	desc *prometheus.Desc
}

func (s sidecarVersions) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }
func (s sidecarVersions) Collect(ch chan<- prometheus.Metric) {
	for _, sc := range s.srv.Sidecars() {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, float64(sc.AckedVersion), sc.Node.Key())
	}
}

// syncMembership keeps the registry's groups in step with the policy, and puts an automatic
// group document into the policy for every workload that has none (so users can see it,
// set its mode, and learning has a group to learn about).
func syncMembership(ctx context.Context, log *slog.Logger, reg *registry.Registry, pol *PolicyService) error {
	var applied *policy.Set
	for {
		regCh, polCh := reg.Changed(), pol.Changed()
		if set := pol.PolicySet(); set != applied { // SetGroups is itself a registry change
			reg.SetGroups(set.Groups)
			applied = set
			regCh = reg.Changed()
		}
		if missing := reg.MissingAutoGroups(); len(missing) > 0 {
			if err := pol.AddMissing(ctx, "system:registry", missing); err != nil {
				log.Warn("automatic groups not added", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-regCh:
		case <-polCh:
		}
	}
}
