package sidecar

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	mgcap "github.com/meshguard/meshguard/internal/capture"
	"github.com/meshguard/meshguard/internal/dpi"
	"github.com/meshguard/meshguard/internal/identity/workload"
	"github.com/meshguard/meshguard/internal/intercept"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/threat"
	"github.com/meshguard/meshguard/internal/xds"
)

// Default ports of the sidecar's listeners inside the pod.
const (
	DefaultOutboundPort = 15001
	DefaultInboundPort  = 15006
	DefaultTunnelPort   = 15008
	DefaultAdminPort    = 15020
	DefaultDNSPort      = 15053
	DefaultMark         = 0x539
)

// RuntimeConfig is everything one pod's sidecar process needs.
type RuntimeConfig struct {
	SPIFFEID            spiffeid.ID // the identity the join token is for
	Namespace, Workload string      // the pod this sidecar serves (xds Hello)
	Node                string

	IdentityAddr string              // the controller's identity service host:port
	XDSAddr      string              // the controller's config service host:port (mTLS)
	ServerCAs    []*x509.Certificate // roots for the controller's server certificates
	JoinToken    string              // single-use; never logged

	OutboundPort, InboundPort, TunnelPort, DNSPort, AdminPort uint16
	Mark                                                      uint32 // SO_MARK of the sidecar's own sockets
	UpstreamDNS                                               string // host:port the DNS proxy forwards to; "" disables the DNS proxy
	// Intercept installs the redirect rules in the current netns (off only in tests that
	// drive the listeners directly).
	Intercept            bool
	ExcludeInboundPorts  []uint16
	ExcludeOutboundPorts []uint16

	StateFile string // last applied config, for fail-static restarts; "" = none
	// CaptureDir is the capture store (0700; pcaps 0600): streams are recorded in memory and
	// triggered or on-demand captures written there. "" disables capture (response rules
	// asking for one log a warning).
	CaptureDir string
	// NoThreatDetection turns the built-in detectors and the sensors off (inbound streams get
	// policy enforcement only, DNS no tunnel detector): the baseline of the threat benchmarks.
	NoThreatDetection bool
	ResolveTimeout    time.Duration // how long the app's connections wait for readiness; default 10s
	DrainTimeout      time.Duration // default 10s
	BuildVersion      string

	Clock clockwork.Clock
	Log   *slog.Logger
}

func (c *RuntimeConfig) validate() error {
	if c.SPIFFEID.IsZero() {
		return errors.New("sidecar: --spiffe-id is required")
	}
	if c.Namespace == "" || c.Workload == "" {
		return errors.New("sidecar: --namespace and --workload are required")
	}
	if c.IdentityAddr == "" || c.XDSAddr == "" {
		return errors.New("sidecar: --identity and --xds (controller addresses) are required")
	}
	if len(c.ServerCAs) == 0 {
		return errors.New("sidecar: no CA for the controller; pass --ca-file with the controller's bundle")
	}
	if c.Clock == nil || c.Log == nil {
		return errors.New("sidecar: clock and logger are required")
	}
	if c.Mark == 0 {
		c.Mark = DefaultMark
	}
	for _, p := range []*uint16{&c.OutboundPort, &c.InboundPort, &c.TunnelPort, &c.AdminPort} {
		if *p == 0 {
			return errors.New("sidecar: outbound, inbound, tunnel and admin ports must be set")
		}
	}
	switch {
	case c.UpstreamDNS == "":
		c.DNSPort = 0 // no proxy, so DNS must not be redirected to it
	case c.DNSPort == 0:
		c.DNSPort = DefaultDNSPort
	}
	if c.ResolveTimeout == 0 {
		c.ResolveTimeout = 10 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 10 * time.Second
	}
	return nil
}

// Runtime is one pod's sidecar: identity, interception, proxies, DNS proxy, config client,
// reports and the admin endpoints, wired together.
type Runtime struct {
	cfg   RuntimeConfig
	ready chan struct{}
	index atomic.Pointer[xds.Index]
	peng  *policy.Engine
	pview atomic.Pointer[policyView]

	mu      sync.Mutex
	in      *InboundProxy
	threats *Threats // set in Run before the config client starts
}

// NewRuntime validates cfg; nothing is touched until Run.
func NewRuntime(cfg RuntimeConfig) (*Runtime, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Runtime{cfg: cfg, ready: make(chan struct{}), peng: policy.NewEngine(policy.CompileOptions{})}, nil
}

// Ready is closed once the sidecar has its SVID and a config.
func (r *Runtime) Ready() <-chan struct{} { return r.ready }

// Run starts everything and blocks until ctx ends, then drains and removes the rules. If it
// fails instead, the rules stay: the pod's traffic is refused rather than sent unprotected.
func (r *Runtime) Run(ctx context.Context) error {
	cfg, log := r.cfg, r.cfg.Log
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mark := int(cfg.Mark)

	// Intercept first, so no connection of the app escapes the sidecar. The controller's ports
	// are excluded as well as the mark: the sidecar's first attestation must not depend on the
	// mark being honoured (it predates the identity client's marked dialer).
	if cfg.Intercept {
		excl := append([]uint16(nil), cfg.ExcludeOutboundPorts...)
		for _, a := range []string{cfg.IdentityAddr, cfg.XDSAddr} {
			if p, err := portOf(a); err == nil {
				excl = append(excl, p)
			}
		}
		rules, err := intercept.New(intercept.Config{OutboundPort: cfg.OutboundPort, InboundPort: cfg.InboundPort,
			TunnelPort: cfg.TunnelPort, DNSPort: cfg.DNSPort, ExcludeMark: cfg.Mark,
			ExcludeInboundPorts: append([]uint16{cfg.AdminPort}, cfg.ExcludeInboundPorts...), ExcludeOutboundPorts: excl})
		if err != nil {
			return err
		}
		if err := rules.Install(); err != nil {
			return err
		}
		defer func() {
			if parent.Err() == nil {
				log.Error("sidecar failed; keeping the interception rules so the pod's traffic is refused, not unprotected (restart the sidecar)")
				return
			}
			if err := rules.Remove(); err != nil {
				log.Error("removing interception rules", "err", err)
			}
		}()
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := NewMetrics(reg, nil)
	if err != nil {
		return err
	}

	var captures *mgcap.Manager
	if cfg.CaptureDir != "" {
		if captures, err = mgcap.New(mgcap.Config{Dir: cfg.CaptureDir, Clock: cfg.Clock, Log: log.With("component", "capture")}); err != nil {
			return fmt.Errorf("sidecar: --capture-dir: %w", err)
		}
		if err := captures.RegisterMetrics(reg); err != nil {
			return err
		}
	} else {
		log.Warn("capture disabled: no --capture-dir; response rules with a capture action will only log")
	}

	// The sidecar's connections to the controller are marked: not redirected back into the
	// sidecar, and let through while the pod is quarantined (reports, uploads, SVID renewals).
	controllerDial := func(ctx context.Context, addr string) (net.Conn, error) {
		return (&net.Dialer{Control: intercept.MarkControl(mark)}).DialContext(ctx, "tcp", addr)
	}
	src, err := workload.New(workload.Config{Addr: cfg.IdentityAddr, ServerCAs: cfg.ServerCAs, JoinToken: cfg.JoinToken,
		SPIFFEID: cfg.SPIFFEID.String(), Clock: cfg.Clock, Log: log.With("component", "identity"), Dialer: controllerDial})
	if err != nil {
		return err
	}
	creds := WorkloadCredentials(src)
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "meshguard", Subsystem: "sidecar",
		Name: "svid_expiry_timestamp_seconds", Help: "When the sidecar's current SVID expires (it changes at each rotation)."},
		func() float64 {
			if s := src.SVID(); s != nil {
				return float64(s.Certificates[0].NotAfter.Unix())
			}
			return 0
		})); err != nil {
		return err
	}

	var wg sync.WaitGroup
	errc := make(chan error, 16) // at least one slot per spawned subsystem: a failing one never blocks
	spawn := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	// On the way out: stop everything, let the proxies drain, and only then close what they
	// use (tunnel pool, config connection); the interception rules go last (deferred above).
	var closers []func()
	defer func() {
		cancel()
		wg.Wait()
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()

	admin, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(cfg.AdminPort))))
	if err != nil {
		return fmt.Errorf("sidecar: admin port %d: %w", cfg.AdminPort, err)
	}
	spawn("admin", func(ctx context.Context) error { return r.serveAdmin(ctx, admin, reg, src) })

	// The outbound listener is open from the start: the app's connections wait (bounded) for
	// readiness instead of failing.
	outLn, err := (&net.ListenConfig{}).Listen(ctx, "tcp", ":"+strconv.Itoa(int(cfg.OutboundPort)))
	if err != nil {
		return fmt.Errorf("sidecar: outbound port %d: %w", cfg.OutboundPort, err)
	}
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		return err
	}
	self := policy.Key(cfg.Namespace, cfg.Workload)

	log.Info("attesting", "identity", cfg.IdentityAddr, "spiffe_id", cfg.SPIFFEID.String())
	if err := attest(ctx, src, cfg.Clock, log); err != nil {
		outLn.Close()
		return err
	}
	log.Info("svid obtained", "spiffe_id", src.SVID().ID.String(), "renew_at", src.RenewAt())
	// Losing the SVID (expired while the controller was away, or revoked) must not remove the
	// interception rules by exiting: the sidecar stays and fails closed (handshakes fail,
	// /readyz says why) until it is restarted with a new join token.
	spawn("svid", func(ctx context.Context) error {
		if err := src.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("svid renewal stopped; tunnels fail until the sidecar gets a new join token", "err", err)
		}
		<-ctx.Done()
		return nil
	})

	conn, err := grpc.NewClient(cfg.XDSAddr,
		grpc.WithTransportCredentials(credentials.NewTLS(controllerTLS(src, cfg.ServerCAs, cfg.XDSAddr))),
		grpc.WithContextDialer(controllerDial),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: 5 * time.Second,
			Backoff: backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second}}))
	if err != nil {
		outLn.Close()
		return fmt.Errorf("sidecar: xds %s: %w", cfg.XDSAddr, err)
	}
	closers = append(closers, func() { _ = conn.Close() })
	xc, err := xds.NewClient(xds.ClientConfig{Conn: conn, Applier: xds.ApplierFunc(r.apply), Clock: cfg.Clock,
		Log: log.With("component", "xds"), SpiffeID: cfg.SPIFFEID.String(), Namespace: cfg.Namespace, Workload: cfg.Workload,
		Node: cfg.Node, BuildVersion: cfg.BuildVersion, StateFile: cfg.StateFile, BackoffMax: 3 * time.Second, Metrics: reg})
	if err != nil {
		outLn.Close()
		return err
	}
	threatBatcher, err := xds.NewThreatBatcher(xds.ThreatBatcherConfig{Sender: xc, Clock: cfg.Clock, Log: log.With("component", "threats"), Metrics: reg})
	if err != nil {
		outLn.Close()
		return err
	}
	threats, err := NewThreats(ThreatsConfig{Workload: self, Self: cfg.SPIFFEID, Clock: cfg.Clock, Log: log.With("component", "threats"),
		Reporter: threatBatcher, Capture: captures, Uploader: xc, Metrics: reg,
		// Service-to-service traffic runs far above what one browser sends: the library's
		// defaults would refuse a busy but legitimate client in protect mode.
		Flood: threat.FloodConfig{ConnRate: 1000, ConnBurst: 5000, ReqRate: 10000, ReqBurst: 50000}})
	if err != nil {
		outLn.Close()
		return err
	}
	r.mu.Lock()
	r.threats = threats
	r.mu.Unlock()
	spawn("threats", threats.Run)
	spawn("threat-reports", threatBatcher.Run)
	if captures != nil {
		spawn("capture", captures.Run)
	}
	spawn("commands", func(ctx context.Context) error {
		return xc.RunCommands(ctx, func(_ context.Context, cmd *xdsv1.Command) {
			if c := cmd.GetCapture(); c != nil {
				d := time.Duration(c.GetDurationMillis()) * time.Millisecond
				d = min(max(d, time.Second), 5*time.Minute)
				log.Info("on-demand capture", "request", cmd.GetId(), "duration", d)
				threats.Capture(cmd.GetId(), d)
			}
		})
	})
	// Every stream is recorded for capture (when enabled) in front of its inspector.
	record := func(next Inspector) Inspector {
		if captures == nil {
			return next
		}
		return CaptureInspector(captures, self, threats.newConnID, r.podAddr, next)
	}
	inspect := record(DPIInspector(eng))
	spawn("xds", xc.Run)
	batcher, err := xds.NewBatcher(xds.BatcherConfig{Sender: xc, Clock: cfg.Clock, Log: log.With("component", "reports"), Metrics: reg})
	if err != nil {
		outLn.Close()
		return err
	}
	spawn("reports", batcher.Run)
	report := func(rep ConnReport) {
		switch rep.Reason {
		case ReasonClosed, ReasonReset, ReasonDrained:
		default:
			log.Warn("connection refused", "direction", rep.Direction, "reason", rep.Reason, "src", rep.SourceAddr.String(),
				"dst", rep.DestAddr.String(), "peer", rep.PeerAddr, "err", rep.Err)
		}
		metrics.Observe(rep)
		if rep.Direction == Inbound {
			r.ownDestination(&rep)
		}
		batcher.Add(rep.Proto())
	}

	// Without detection the inspectors get no Threats; it still serves captures and commands.
	detect := threats
	if cfg.NoThreatDetection {
		detect = nil
		log.Warn("threat detection off (--threat-detection=false): allowed traffic is not inspected for threats")
	}
	if cfg.UpstreamDNS != "" {
		di := &dnsInspection{eng: eng, self: cfg.SPIFFEID, report: report, threats: detect}
		if captures != nil {
			di.recs = newDNSRecorders(captures, self, cfg.UpstreamDNS, threats.newConnID)
			closers = append(closers, di.recs.close)
		}
		d, err := newDNSProxy(cfg.DNSPort, cfg.UpstreamDNS, mark, di, log.With("component", "dns"))
		if err != nil {
			outLn.Close()
			return err
		}
		spawn("dns", d.run)
	}

	client, err := NewTunnelClient(TunnelClientConfig{Creds: creds, Clock: cfg.Clock, Log: log.With("component", "tunnel"), Mark: mark})
	if err != nil {
		outLn.Close()
		return err
	}
	res, err := NewIndexResolver(IndexResolverConfig{Current: r.index.Load, Ready: r.ready,
		OnEgress: func(e EgressEvent) {
			log.Info("egress", "src", e.Source.String(), "dst", e.Dest.String(), "allowed", e.Allowed, "external", e.External, "mode", e.Mode.String())
		}})
	if err != nil {
		outLn.Close()
		return err
	}
	out, err := NewOutbound(OutboundConfig{Clock: cfg.Clock, Log: log.With("component", "outbound"), Listener: outLn,
		OriginalDst: intercept.OriginalDst, Resolver: res, Tunnel: client, Report: report, Inspect: inspect,
		Self: cfg.SPIFFEID, Mark: mark, ResolveTimeout: cfg.ResolveTimeout, DrainTimeout: cfg.DrainTimeout})
	if err != nil {
		outLn.Close()
		return err
	}
	spawn("outbound", out.Run)
	closers = append(closers, func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
		_ = client.Close(cctx)
		ccancel()
	})

	// Inbound listeners open only when ready: until then the app's ports refuse.
	select {
	case <-xc.Ready():
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
	lc := net.ListenConfig{}
	tunLn, err := lc.Listen(ctx, "tcp", ":"+strconv.Itoa(int(cfg.TunnelPort)))
	if err != nil {
		return fmt.Errorf("sidecar: tunnel port %d: %w", cfg.TunnelPort, err)
	}
	plainLn, err := lc.Listen(ctx, "tcp", ":"+strconv.Itoa(int(cfg.InboundPort)))
	if err != nil {
		tunLn.Close()
		return fmt.Errorf("sidecar: inbound port %d: %w", cfg.InboundPort, err)
	}
	r.mu.Lock()
	in, err := NewInbound(InboundConfig{Creds: creds, Clock: cfg.Clock, Log: log.With("component", "inbound"),
		TunnelListener: tunLn, PlainListener: plainLn, OriginalDst: intercept.OriginalDst,
		Mode: InboundMode(r.index.Load()), Admit: policyAdmitter(&r.pview, r.index.Load), Inspect: record(ThreatInspector(eng, &r.pview, r.index.Load, detect)), Report: report, DrainTimeout: cfg.DrainTimeout})
	if err == nil {
		r.in = in
	}
	r.mu.Unlock()
	if err != nil {
		tunLn.Close()
		plainLn.Close()
		return err
	}
	if err := RegisterInboundStats(reg, in); err != nil {
		tunLn.Close()
		plainLn.Close()
		return err
	}
	spawn("inbound", in.Run)
	close(r.ready)
	v, _ := xc.Current()
	log.Info("sidecar ready", "spiffe_id", cfg.SPIFFEID.String(), "config_version", v, "mode", in.cfg.Mode.String(),
		"tunnel", tunLn.Addr().String(), "admin", admin.Addr().String())

	select {
	case <-ctx.Done():
		log.Info("draining", "timeout", cfg.DrainTimeout)
		return nil
	case err := <-errc:
		log.Error("sidecar subsystem failed", "err", err)
		return err
	}
}

// apply installs one snapshot: the resolver's index and the inbound mode. An invalid
// snapshot NACKs and the previous one stays (fail-static).
func (r *Runtime) apply(version uint64, s *xdsv1.Snapshot) error {
	x, err := xds.NewIndex(s)
	if err != nil {
		return err
	}
	r.mu.Lock()
	pv, err := compilePolicy(r.peng, s)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	r.pview.Store(pv)
	r.index.Store(x)
	if r.threats != nil {
		var set *policy.Set
		if pv != nil {
			set = pv.pol.Set()
		}
		r.threats.Apply(s, set)
	}
	if r.in != nil {
		r.in.SetMode(InboundMode(x))
	}
	r.mu.Unlock()
	r.cfg.Log.Info("config applied", "version", version, "mode", InboundMode(x).String(), "policy", pv != nil, "peers", len(s.GetPeers()),
		"services", len(s.GetServices()), "egress", x.Egress().String())
	return nil
}

func (r *Runtime) serveAdmin(ctx context.Context, ln net.Listener, reg *prometheus.Registry, src *workload.Source) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-r.ready:
		default:
			http.Error(w, "not ready: waiting for identity and config", http.StatusServiceUnavailable)
			return
		}
		if s := src.SVID(); s == nil || !r.cfg.Clock.Now().Before(s.Certificates[0].NotAfter) {
			http.Error(w, "not ready: no valid SVID", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// attest gets the first SVID, retrying while the identity service is unreachable (the token
// stays valid for its TTL); a refused token is final.
func attest(ctx context.Context, src *workload.Source, clock clockwork.Clock, log *slog.Logger) error {
	delay := 200 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := src.Attest(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if isFinal(err) {
			return fmt.Errorf("sidecar: attestation refused: %w (create a new join token)", err)
		}
		log.Warn("attestation failed; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-clock.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// controllerTLS presents the current SVID (read per handshake, so rotation applies to
// reconnects) and verifies the controller's server certificate by name against the roots.
func controllerTLS(src *workload.Source, roots []*x509.Certificate, addr string) *tls.Config {
	pool := x509.NewCertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	host, _, _ := net.SplitHostPort(addr)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
		ServerName: host,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, _, err := tlsCertificate(WorkloadCredentials(src).SVID)
			return c, err
		},
	}
}

func portOf(addr string) (uint16, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	return uint16(n), err
}

// isFinal says an attestation error will not go away by retrying (the token was refused).
func isFinal(err error) bool {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument:
		return true
	}
	return false
}

// podAddr maps the app's loopback address to the pod's own address of the same family.
func (r *Runtime) podAddr(a netip.AddrPort) netip.AddrPort {
	if !a.Addr().IsLoopback() {
		return a
	}
	if x := r.index.Load(); x != nil {
		for _, ip := range x.Self().GetIps() {
			if p, err := netip.ParseAddr(ip); err == nil && p.Is4() == a.Addr().Unmap().Is4() {
				return netip.AddrPortFrom(p, a.Port())
			}
		}
	}
	return a
}

// ownDestination names this workload as an inbound connection's destination: the proxy
// delivers to the app over loopback, but the controller keys flows on the pod's identity and
// address.
func (r *Runtime) ownDestination(rep *ConnReport) {
	if rep.Destination.IsZero() {
		rep.Destination = r.cfg.SPIFFEID
	}
	if !rep.DestAddr.Addr().IsLoopback() {
		return
	}
	if x := r.index.Load(); x != nil {
		for _, ip := range x.Self().GetIps() {
			if a, err := netip.ParseAddr(ip); err == nil && a.Is4() == rep.DestAddr.Addr().Is4() {
				rep.DestAddr = netip.AddrPortFrom(a, rep.DestAddr.Port())
				return
			}
		}
	}
}
