package cli

import (
	"github.com/jonboulle/clockwork"
	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/controller"
	"github.com/meshguard/meshguard/internal/identity"
)

func newControllerCommand(g *globals) *cobra.Command {
	cfg := controller.Config{}
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the control plane: identity, policy, config distribution, REST API",
		Long: `Run the meshguard controller. State (store, CA, admin.conf) lives in --data-dir; the
same CA is used after a restart. Once serving it logs a line containing "ready" and writes
DATA-DIR/admin.conf, which other verbs read with --config.

Mesh-wide modes are read at start: changing --mtls-permissive or --egress needs a controller
restart (sidecars then get the new config pushed). Every namespace is STRICT (plaintext from
pods without a sidecar is refused) unless listed in --mtls-permissive, where it is accepted and
reported as unauthenticated. --egress decides whether sidecars let their pods reach
destinations the registry does not know (allow-any) or refuse them (registry-only).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			cfg.Clock, cfg.Log = clockwork.NewRealClock(), log
			c, err := controller.New(cfg)
			if err != nil {
				return err
			}
			return c.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the controller's state (created 0700; required)")
	f.StringVar(&cfg.TrustDomain, "trust-domain", controller.DefaultTrustDomain, "SPIFFE trust domain")
	f.StringVar(&cfg.ListenAPI, "listen-api", controller.DefaultListenAPI, "REST API address (HTTPS); port 0 picks a free port")
	f.StringVar(&cfg.ListenIdentity, "listen-identity", controller.DefaultListenIdentity, "identity gRPC address; port 0 picks a free port")
	f.StringVar(&cfg.ListenXDS, "listen-xds", "", "config distribution gRPC address for sidecars (mTLS; default: the API's host, a free port, written to admin.conf as xds)")
	f.StringVar(&cfg.LabStateDir, "lab-state", "", "lab state dir: register the lab's pods and services as workloads (set by 'lab up')")
	f.Uint16Var(&cfg.TunnelPort, "sidecar-tunnel-port", controller.DefaultTunnelPort, "port every sidecar's mTLS tunnel listens on")
	f.DurationVar(&cfg.EventRetention, "event-retention", controller.DefaultEventRetention, "delete events older than this")
	f.DurationVar(&cfg.SVIDTTL, "svid-ttl", identity.DefaultSVIDTTL, "workload certificate lifetime, 5m to 24h")
	f.StringVar(&cfg.CACertFile, "ca-cert", "", "bring your own CA: PEM root or intermediate certificate (first start only)")
	f.StringVar(&cfg.CAKeyFile, "ca-key", "", "bring your own CA: PEM private key of --ca-cert")
	f.StringVar(&cfg.CABundleFile, "ca-bundle", "", "bring your own CA: PEM roots when --ca-cert is an intermediate")
	f.StringSliceVar(&cfg.PermissiveNamespaces, "mtls-permissive", nil, "namespaces (NS[,NS...]) that accept plaintext from pods without a sidecar, reported as unauthenticated; restart to change")
	f.StringVar(&cfg.Egress, "egress", controller.EgressRegistryOnly, "destinations outside the registry: allow-any or registry-only; restart to change")
	f.StringVar(&cfg.WebhookURL, "webhook-url", "", "send events chosen by ResponseRules with the webhook action here (JSON POST, HMAC-SHA256 signed, retried with backoff)")
	f.StringVar(&cfg.WebhookSecretFile, "webhook-secret-file", "", "file holding the webhook's HMAC key (required with --webhook-url; keep it 0600)")
	f.StringVar(&cfg.SyslogAddr, "syslog-addr", "", "send events chosen by ResponseRules with the syslog action here, RFC 5424: host:port (UDP), udp://host:port or tcp://host:port")
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}
