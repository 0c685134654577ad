package cli

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/jonboulle/clockwork"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/sidecar"
	"github.com/meshguard/meshguard/internal/version"
)

// newSidecarCommand runs a pod's sidecar inside the pod's network namespace.
func newSidecarCommand(g *globals) *cobra.Command {
	var (
		cfg                sidecar.RuntimeConfig
		spiffeID, caFile   string
		tokenFile          string
		outbound, inbound  uint16
		tunnel, dns, admin uint16
		exclIn, exclOut    []uint
		noIntercept        bool
		procs, gcPercent   int
		memLimit           int64
		trimImage          bool
	)
	cmd := &cobra.Command{
		Use:   "sidecar --spiffe-id ID --namespace NS --workload POD --identity ADDR --xds ADDR --ca-file FILE --join-token-file FILE",
		Short: "Run a pod's sidecar (transparent mTLS, DPI, reports) in the current network namespace",
		Long: `Run a pod's sidecar in the current network namespace: it installs the interception rules,
gets its SVID from the identity service with the join token read from --join-token-file, takes
its config from the controller and proxies the pod's traffic through mutual TLS tunnels.
It logs "sidecar ready" once it has identity and config; SIGTERM drains and removes the rules.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			id, err := spiffeid.FromString(spiffeID)
			if err != nil {
				return fmt.Errorf("--spiffe-id %q: %w", spiffeID, err)
			}
			roots, err := readCerts(caFile)
			if err != nil {
				return fmt.Errorf("--ca-file: %w", err)
			}
			if tokenFile != "" {
				tok, err := readSecretFile(tokenFile)
				if err != nil {
					return fmt.Errorf("--join-token-file: %w", err)
				}
				cfg.JoinToken = tok
			}
			for _, p := range exclIn {
				cfg.ExcludeInboundPorts = append(cfg.ExcludeInboundPorts, uint16(p))
			}
			for _, p := range exclOut {
				cfg.ExcludeOutboundPorts = append(cfg.ExcludeOutboundPorts, uint16(p))
			}
			cfg.SPIFFEID, cfg.ServerCAs, cfg.Intercept = id, roots, !noIntercept
			cfg.OutboundPort, cfg.InboundPort, cfg.TunnelPort, cfg.DNSPort, cfg.AdminPort = outbound, inbound, tunnel, dns, admin
			cfg.BuildVersion = version.Get().Version
			cfg.Clock, cfg.Log = clockwork.NewRealClock(), log
			if cfg.Node == "" {
				cfg.Node, _ = os.Hostname()
			}
			rt, err := sidecar.NewRuntime(cfg)
			if err != nil {
				return err
			}
			tuneRuntime(os.Getenv, procs, gcPercent, memLimit)
			if trimImage {
				go func() {
					select {
					case <-rt.Ready():
						n, err := sidecar.TrimImage()
						log.Debug("unused pages of the executable given back", "mapped_bytes", n, "err", err)
					case <-cmd.Context().Done():
					}
				}()
			}
			return rt.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&spiffeID, "spiffe-id", "", "this workload's SPIFFE ID, spiffe://<td>/ns/<ns>/sa/<sa> (required)")
	f.StringVar(&cfg.Namespace, "namespace", "", "the pod's namespace (required)")
	f.StringVar(&cfg.Workload, "workload", "", "the pod's name (required)")
	f.StringVar(&cfg.Node, "node", "", "node name reported to the controller (default: hostname)")
	f.StringVar(&cfg.IdentityAddr, "identity", "", "identity service host:port (required)")
	f.StringVar(&cfg.XDSAddr, "xds", "", "config service host:port (required)")
	f.StringVar(&caFile, "ca-file", "", "PEM bundle of the controller's roots (required)")
	f.StringVar(&tokenFile, "join-token-file", "", "file holding the single-use join token (mode 0600; never pass the token itself)")
	f.StringVar(&cfg.UpstreamDNS, "upstream-dns", "", "host:port the DNS proxy forwards to; empty: DNS is not intercepted")
	f.StringVar(&cfg.CaptureDir, "capture-dir", "", "capture store (created 0700): decrypted streams are kept in memory and written here as pcap when a response rule or meshguard capture asks; empty: capture disabled")
	f.StringVar(&cfg.StateFile, "state-file", "", "where the last applied config is kept for restarts without the controller")
	f.Uint16Var(&outbound, "outbound-port", sidecar.DefaultOutboundPort, "outbound listener port")
	f.Uint16Var(&inbound, "inbound-port", sidecar.DefaultInboundPort, "inbound plaintext listener port")
	f.Uint16Var(&tunnel, "tunnel-port", sidecar.DefaultTunnelPort, "mTLS tunnel port (must match the controller's --sidecar-tunnel-port)")
	f.Uint16Var(&dns, "dns-port", sidecar.DefaultDNSPort, "DNS proxy port on loopback")
	f.Uint16Var(&admin, "admin-port", sidecar.DefaultAdminPort, "health and metrics port on 127.0.0.1 (/healthz, /readyz, /metrics)")
	f.Uint32Var(&cfg.Mark, "mark", sidecar.DefaultMark, "SO_MARK of the sidecar's own sockets, excluded from interception")
	f.UintSliceVar(&exclIn, "exclude-inbound-ports", nil, "app ports whose inbound traffic is not intercepted")
	f.UintSliceVar(&exclOut, "exclude-outbound-ports", nil, "destination ports whose outbound traffic is not intercepted")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", 0, "how long connections may finish after SIGTERM (default 10s)")
	f.DurationVar(&cfg.ResolveTimeout, "ready-timeout", 0, "how long the app's connections wait for the sidecar to be ready (default 10s)")
	f.BoolVar(&noIntercept, "no-intercept", false, "do not install interception rules (testing)")
	f.IntVar(&procs, "procs", 1, "OS threads running Go code at once (GOMAXPROCS; the environment variable wins; 0: one per CPU): with one, a proxy that mostly waits does not pay for waking and spinning a second thread per request (bench/mesh.sh: 21 % of a core per 1,000 qps with one, 24 % with two; one held 1,000 qps with both cores busy)")
	f.IntVar(&gcPercent, "gc-percent", 25, "GOGC for the sidecar (the environment variable wins): its live heap is a few MiB, so collecting often costs little CPU and keeps its RSS under 30 MB (bench/RESULTS.md)")
	f.Int64Var(&memLimit, "memory-limit", 0, "soft Go memory limit in bytes (GOMEMLIMIT; the environment variable wins; 0: none). Mind that it counts all of the runtime's memory: 24 MiB made the collector run nonstop (3x the CPU)")
	f.BoolVar(&trimImage, "trim-image", true, "once ready, give back the pages of the meshguard executable the sidecar does not use (see sidecar.TrimImage)")
	threatDetection := f.Bool("threat-detection", true, "run the built-in threat detectors and the groups' sensors on allowed traffic; false only to measure their cost (bench/threats.sh)")
	cmd.PreRun = func(*cobra.Command, []string) { cfg.NoThreatDetection = !*threatDetection }
	for _, n := range []string{"spiffe-id", "namespace", "workload", "identity", "xds", "ca-file"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

// tuneRuntime applies the sidecar's Go runtime settings, except those the environment
// already set (the runtime read GOMAXPROCS, GOGC and GOMEMLIMIT at start).
func tuneRuntime(getenv func(string) string, procs, gcPercent int, memLimit int64) {
	runtime.MemProfileRate = 0 // the sidecar serves no heap profiles: no sampling cost
	if getenv("GOMAXPROCS") == "" && procs > 0 {
		runtime.GOMAXPROCS(procs)
	}
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if getenv("GOMEMLIMIT") == "" && memLimit > 0 {
		debug.SetMemoryLimit(memLimit)
	}
}

// readSecretFile reads a token file, refusing one that others can read.
func readSecretFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s has mode %v; want 0600 (chmod 600 it)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return tok, nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New(path + ": no PEM certificate found")
	}
	return out, nil
}
