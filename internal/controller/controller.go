// Package controller wires the control plane: it opens the store and the CA in the data
// directory, binds the listeners, builds each subsystem from its Config and runs them all under
// one supervisor. Adding a subsystem is building it in Run and adding one Subsystem line.
package controller

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/capture"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/learn"
	"github.com/meshguard/meshguard/internal/registry"
	"github.com/meshguard/meshguard/internal/registry/labfeed"
	"github.com/meshguard/meshguard/internal/response"
	"github.com/meshguard/meshguard/internal/store"
	"github.com/meshguard/meshguard/internal/xds"
	"github.com/meshguard/meshguard/internal/xds/xdsgen"
)

// Defaults for the controller's flags.
const (
	DefaultTrustDomain    = "cluster.local"
	DefaultListenAPI      = "127.0.0.1:7443"
	DefaultListenIdentity = "127.0.0.1:7444"
	DefaultTunnelPort     = 15008
	DefaultEventRetention = 7 * 24 * time.Hour
	EgressAllowAny        = "allow-any"
	EgressRegistryOnly    = "registry-only"
	eventRingSize         = 10000
	learnDebounce         = 2 * time.Second
)

// Config is everything the controller needs; the CLI fills it from flags.
type Config struct {
	DataDir        string        // state: store, CA, admin.conf (created 0700)
	TrustDomain    string        // SPIFFE trust domain, e.g. cluster.local
	ListenAPI      string        // REST API address (HTTPS); port 0 picks a free one
	ListenIdentity string        // identity gRPC address; port 0 picks a free one
	ListenXDS      string        // config distribution gRPC address (mTLS); empty: the API's host, a free port
	LabStateDir    string        // if set, workloads and services come from this lab's state file
	TunnelPort     uint16        // the port every sidecar's mTLS tunnel listens on
	EventRetention time.Duration // events older than this are deleted
	SVIDTTL        time.Duration // workload certificate lifetime, 5m..24h
	// Bring your own CA: a root or intermediate certificate (PEM) and its key; CABundleFile
	// holds the roots when CACertFile is an intermediate. Read on first start only.
	CACertFile, CAKeyFile, CABundleFile string
	// PermissiveNamespaces accept plaintext from pods without a sidecar (reported as
	// unauthenticated) so they can migrate; every other namespace is STRICT.
	PermissiveNamespaces []string
	// Egress is what sidecars do with destinations outside the registry: EgressAllowAny or
	// EgressRegistryOnly (empty means registry-only).
	Egress string
	// Response notifications: threat events whose response rules name webhook or syslog go
	// here. WebhookURL needs WebhookSecretFile (the HMAC key); SyslogAddr is host:port (UDP)
	// or udp:// / tcp:// host:port.
	WebhookURL, WebhookSecretFile, SyslogAddr string
	// SidecarMark is the SO_MARK of sidecar sockets a quarantine lets reach the controller;
	// 0 means DefaultSidecarMark.
	SidecarMark uint32
	// Quarantiner isolates workloads; nil: nftables in the lab pod's network namespace
	// (response.NetnsQuarantiner). Tests and a future node agent set their own.
	Quarantiner response.Quarantiner
	Clock       clockwork.Clock
	Log         *slog.Logger
}

func (c Config) validate() error {
	if c.DataDir == "" {
		return errors.New("controller: --data-dir is required")
	}
	if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
		return fmt.Errorf("controller: --trust-domain %q: %w", c.TrustDomain, err)
	}
	for flag, a := range map[string]string{"--listen-api": c.ListenAPI, "--listen-identity": c.ListenIdentity, "--listen-xds": c.ListenXDS} {
		if a == "" && flag == "--listen-xds" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("controller: %s %q: want host:port (%v)", flag, a, err)
		}
	}
	if c.SVIDTTL < identity.MinSVIDTTL || c.SVIDTTL > identity.MaxSVIDTTL {
		return fmt.Errorf("controller: --svid-ttl %v: want between %v and %v", c.SVIDTTL, identity.MinSVIDTTL, identity.MaxSVIDTTL)
	}
	if c.TunnelPort == 0 {
		return errors.New("controller: --sidecar-tunnel-port must be 1-65535")
	}
	if c.EventRetention <= 0 {
		return fmt.Errorf("controller: --event-retention %v must be positive", c.EventRetention)
	}
	if (c.CACertFile == "") != (c.CAKeyFile == "") {
		return errors.New("controller: --ca-cert and --ca-key must be given together")
	}
	if c.CABundleFile != "" && c.CACertFile == "" {
		return errors.New("controller: --ca-bundle needs --ca-cert and --ca-key")
	}
	if (c.WebhookURL == "") != (c.WebhookSecretFile == "") {
		return errors.New("controller: --webhook-url and --webhook-secret-file must be given together (receivers verify the HMAC signature)")
	}
	if _, _, err := c.meshModes(); err != nil {
		return err
	}
	if c.Clock == nil || c.Log == nil {
		return errors.New("controller: clock and logger are required")
	}
	return nil
}

// Controller is the control plane process.
type Controller struct{ cfg Config }

// New validates cfg; nothing is touched until Run.
func New(cfg Config) (*Controller, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Controller{cfg: cfg}, nil
}

// AdminConfigPath is where Run writes the admin config for CLI verbs.
func (c *Controller) AdminConfigPath() string { return filepath.Join(c.cfg.DataDir, "admin.conf") }

// Run starts every subsystem, logs "controller ready" once all listeners are bound and
// admin.conf is written, and blocks until ctx ends (clean shutdown) or a subsystem fails.
func (c *Controller) Run(ctx context.Context) error {
	cfg, log := c.cfg, c.cfg.Log
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("controller: --data-dir %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("controller: --data-dir %s: %w", dir, err)
	}
	td := spiffeid.RequireTrustDomainFromString(cfg.TrustDomain)

	st, err := store.OpenBolt(filepath.Join(dir, "state.db"))
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	defer st.Close()

	caCfg := identity.CAConfig{Dir: filepath.Join(dir, "ca"), TrustDomain: td, Clock: cfg.Clock, Log: log}
	for _, f := range []struct {
		path string
		dst  *[]byte
	}{{cfg.CACertFile, &caCfg.CertPEM}, {cfg.CAKeyFile, &caCfg.KeyPEM}, {cfg.CABundleFile, &caCfg.BundlePEM}} {
		if f.path == "" {
			continue
		}
		if *f.dst, err = os.ReadFile(f.path); err != nil {
			return fmt.Errorf("controller: %w", err)
		}
	}
	ca, err := identity.LoadCA(caCfg)
	if err != nil {
		return err
	}

	apiLn, err := net.Listen("tcp", cfg.ListenAPI)
	if err != nil {
		return fmt.Errorf("controller: --listen-api %s: %w", cfg.ListenAPI, err)
	}
	defer apiLn.Close()
	idLn, err := net.Listen("tcp", cfg.ListenIdentity)
	if err != nil {
		return fmt.Errorf("controller: --listen-identity %s: %w", cfg.ListenIdentity, err)
	}
	defer idLn.Close()
	hosts := serverHosts(cfg.ListenAPI, cfg.ListenIdentity)

	if cfg.ListenXDS == "" {
		h, _, _ := net.SplitHostPort(cfg.ListenAPI)
		cfg.ListenXDS = net.JoinHostPort(h, "0")
	}
	xdsLn, err := net.Listen("tcp", cfg.ListenXDS)
	if err != nil {
		return fmt.Errorf("controller: --listen-xds %s: %w", cfg.ListenXDS, err)
	}
	defer xdsLn.Close()
	hosts = append(hosts, serverHosts(cfg.ListenXDS)...)

	// Metrics live in a registry the controller owns (never the global default).
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ring := events.NewRing(eventRingSize)
	evStore, err := events.OpenStore(events.StoreConfig{Path: filepath.Join(dir, "events.db"), Clock: cfg.Clock,
		Log: log.With("component", "events"), MaxAge: cfg.EventRetention})
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	defer evStore.Close()
	pipeline, err := events.NewPipeline(events.PipelineConfig{Exporters: []events.Exporter{evStore}, Registry: metrics, Log: log.With("component", "events")})
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	sink := events.Multi{ring, pipeline, quietLogger{events.Logger{Log: log.With("component", "events")}}}

	idSvc, err := identity.New(identity.Config{
		CA:          ca,
		JoinTokens:  &identity.JoinTokens{Store: st, Clock: cfg.Clock, TrustDomain: td},
		Revocations: st,
		Events:      sink,
		Clock:       cfg.Clock,
		Log:         log.With("component", "identity"),
		SVIDTTL:     cfg.SVIDTTL,
		Listener:    idLn,
		ServerHosts: hosts,
		// Hourly: cheap, and far inside the intermediate's year-long lifetime.
		MaintainEvery: time.Hour,
	})
	if err != nil {
		return err
	}

	reg, err := registry.New(registry.Config{Log: log.With("component", "registry"), TrustDomain: td.Name()})
	if err != nil {
		return err
	}
	var feeders []registry.Feeder
	if cfg.LabStateDir != "" {
		host, _ := os.Hostname()
		lf, err := labfeed.New(labfeed.Config{StateDir: cfg.LabStateDir, Clock: cfg.Clock, Log: log.With("component", "labfeed"), Node: host})
		if err != nil {
			return err
		}
		feeders = append(feeders, lf)
	}

	var (
		conns   *Connections
		learner *learn.Learner
	)
	pol, err := NewPolicyService(PolicyConfig{Store: st, Registry: reg, History: flowHistory{&conns}, Audit: sink,
		Clock: cfg.Clock, Log: log.With("component", "policy"),
		Forget: func(ctx context.Context, keys ...string) error { return learner.Forget(ctx, keys...) }})
	if err != nil {
		return err
	}
	if err := pol.Load(ctx); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	learner, err = learn.New(learn.Config{Writer: pol, Modes: pol, Clock: cfg.Clock, Log: log.With("component", "learn"), Debounce: learnDebounce})
	if err != nil {
		return err
	}
	conns, err = NewConnections(ConnectionsConfig{Directory: reg, Policy: pol, Learner: learner, Events: sink,
		Clock: cfg.Clock, Log: log.With("component", "connections"), Metrics: metrics,
		SystemPorts: []uint16{portOf(apiLn.Addr()), portOf(idLn.Addr()), portOf(xdsLn.Addr())}})
	if err != nil {
		return err
	}
	// A restarted controller keeps the history `policy test` replays.
	if past, err := evStore.Query(events.Query{Kind: events.KindConnection, Limit: maxFlows}); err == nil {
		conns.Seed(past)
	} else {
		log.Warn("connection history not loaded", "err", err)
	}
	webhook, syslog, err := cfg.notifiers(metrics, cfg.Clock, log)
	if err != nil {
		return err
	}
	mark := cfg.SidecarMark
	if mark == 0 {
		mark = DefaultSidecarMark
	}
	respCfg := response.Config{Clock: cfg.Clock, Log: log.With("component", "response"), Events: sink, Registry: metrics, Modes: pol,
		Quarantiner: cfg.Quarantiner}
	if respCfg.Quarantiner == nil {
		respCfg.Quarantiner = netnsQuarantiner(cfg.LabStateDir, mark, []net.Addr{xdsLn.Addr(), idLn.Addr()}, log.With("component", "quarantine"))
	}
	// Typed nils would make the engine call a nil pipeline: set only configured notifiers.
	if webhook != nil {
		respCfg.Webhook = webhook
	}
	if syslog != nil {
		respCfg.Syslog = syslog
	}
	engine, err := response.New(respCfg)
	if err != nil {
		return err
	}
	if cfg.Quarantiner == nil && cfg.LabStateDir != "" {
		adoptLabQuarantines(cfg.LabStateDir, engine, log.With("component", "quarantine"))
	}
	rules := &ruleFollower{pol: pol, eng: engine}
	threats, err := newThreatSink(engine, cfg.Clock, log.With("component", "threats"), metrics)
	if err != nil {
		return err
	}
	threats.rules = rules.sync
	capStore, err := capture.OpenStore(filepath.Join(dir, "captures"), captureMaxFiles, captureMaxBytes)
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	known := func(ns, name string) bool { _, ok := reg.Workload(ns, name); return ok }
	captures := &captureService{store: capStore, workloads: known, clock: cfg.Clock, log: log.With("component", "captures"),
		waiting: map[string]chan captureResult{}}

	nsMTLS, egress, _ := cfg.meshModes() // validated in New
	gen, err := xdsgen.New(xdsgen.Config{Registry: reg, Policy: pol, TunnelPort: uint32(cfg.TunnelPort), TrustDomain: td.Name(),
		NamespaceMTLS: nsMTLS, Egress: egress,
		// Pods without a sidecar are plaintext endpoints: sidecars call them directly.
		HasSidecar: func(w registry.Workload) bool { return w.Sidecar }})
	if err != nil {
		return err
	}
	xdsSrv, err := xds.NewServer(xds.ServerConfig{Generator: gen, Clock: cfg.Clock, Log: log.With("component", "xds"),
		Metrics: metrics, Reports: conns, TrustDomain: td, Listener: xdsLn, Threats: threats, Captures: captures,
		ServerOptions: []grpc.ServerOption{grpc.Creds(credentials.NewTLS(sidecarTLS(ca, hosts))), grpc.MaxRecvMsgSize(xds.MaxMessageSize)}})
	if err != nil {
		return err
	}
	captures.commands = xdsSrv
	if err := registerControllerMetrics(metrics, pol, xdsSrv); err != nil {
		return err
	}

	adminPath := c.AdminConfigPath()
	token, err := adminToken(adminPath)
	if err != nil {
		return err
	}
	apiSrv, err := api.New(api.Config{
		Listener: apiLn, GetCertificate: ca.ServerCertificate(hosts), AdminToken: token,
		Identity: idSvc, Events: ring, Log: log.With("component", "api"),
		Policy: pol, Registry: reg, Sidecars: xdsSrv, Connections: conns, EventStore: evStore, Audit: sink,
		Principals:  principals{st: st, clock: cfg.Clock, log: log.With("component", "api")},
		ClientRoots: ca.Bundle,
		Quarantines: quarantines{engine: engine, workloads: known}, Captures: captures, Sensors: pol,
		Metrics: promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}),
	})
	if err != nil {
		return err
	}

	adm := api.AdminConfig{Server: "https://" + dialable(apiLn.Addr()), CAFile: ca.BundlePath(), Token: token,
		Identity: dialable(idLn.Addr()), XDS: dialable(xdsLn.Addr())}
	if err := api.WriteAdminConfig(adminPath, adm); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	_, pv := pol.Current()
	log.Info("controller ready", "api", adm.Server, "identity", adm.Identity, "xds", adm.XDS, "trust_domain", td.String(),
		"admin_config", adminPath, "data_dir", dir, "policy_version", pv)

	subs := []Subsystem{
		Subsystem{Name: "identity", Run: idSvc.Run},
		Subsystem{Name: "api", Run: apiSrv.Run},
		Subsystem{Name: "events", Run: pipeline.Run},
		Subsystem{Name: "event-retention", Run: evStore.Run},
		Subsystem{Name: "registry", Run: func(ctx context.Context) error {
			if err := reg.Run(ctx, feeders...); err != nil {
				return err
			}
			<-ctx.Done()
			return nil
		}},
		Subsystem{Name: "membership", Run: func(ctx context.Context) error { return syncMembership(ctx, log, reg, pol) }},
		Subsystem{Name: "learn", Run: learner.Run},
		Subsystem{Name: "xds", Run: xdsSrv.Run},
		Subsystem{Name: "xds-bump", Run: func(ctx context.Context) error { return xdsSrv.BumpOn(ctx, reg.Changed, pol.Changed) }},
		Subsystem{Name: "response", Run: engine.Run},
		Subsystem{Name: "response-rules", Run: rules.Run},
	}
	if webhook != nil {
		subs = append(subs, Subsystem{Name: "webhook", Run: webhook.Run})
	}
	if syslog != nil {
		subs = append(subs, Subsystem{Name: "syslog", Run: syslog.Run})
	}
	err = Supervise(ctx, log, subs...)
	log.Info("controller stopped")
	return err
}

// meshModes turns --mtls-permissive and --egress into what the config generator sends.
func (c Config) meshModes() (map[string]xdsv1.MTLSMode, xdsv1.EgressMode, error) {
	var ns map[string]xdsv1.MTLSMode
	for _, n := range c.PermissiveNamespaces {
		if n == "" || len(n) > 63 || !namespaceRE.MatchString(n) {
			return nil, 0, fmt.Errorf("controller: --mtls-permissive %q: not a namespace name (lower-case letters, digits and '-', at most 63)", n)
		}
		if ns == nil {
			ns = map[string]xdsv1.MTLSMode{}
		}
		ns[n] = xdsv1.MTLSMode_MTLS_MODE_PERMISSIVE
	}
	switch c.Egress {
	case "", EgressRegistryOnly:
		return ns, xdsv1.EgressMode_EGRESS_MODE_REGISTRY_ONLY, nil
	case EgressAllowAny:
		return ns, xdsv1.EgressMode_EGRESS_MODE_ALLOW_ANY, nil
	}
	return nil, 0, fmt.Errorf("controller: --egress %q: want %s or %s", c.Egress, EgressAllowAny, EgressRegistryOnly)
}

var namespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// adminToken reuses the token of an existing admin.conf so CLI configs survive restarts.
func adminToken(path string) (string, error) {
	if old, err := api.LoadAdminConfig(path); err == nil && len(old.Token) >= 32 {
		return old.Token, nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "mgadm_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// serverHosts are the names the controller's TLS certificate covers.
func serverHosts(addrs ...string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	for _, a := range addrs {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" {
			if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
				hosts = append(hosts, h)
			}
		}
	}
	return hosts
}

// dialable turns a bound address into one clients can dial (0.0.0.0 -> 127.0.0.1).
func dialable(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	ip := ta.IP
	if ip.IsUnspecified() {
		if ip.To4() != nil {
			ip = net.IPv4(127, 0, 0, 1)
		} else {
			ip = net.IPv6loopback
		}
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(ta.Port))
}
