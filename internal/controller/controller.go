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
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/store"
)

// Defaults for the controller's flags.
const (
	DefaultTrustDomain    = "cluster.local"
	DefaultListenAPI      = "127.0.0.1:7443"
	DefaultListenIdentity = "127.0.0.1:7444"
	eventRingSize         = 10000
)

// Config is everything the controller needs; the CLI fills it from flags.
type Config struct {
	DataDir        string        // state: store, CA, admin.conf (created 0700)
	TrustDomain    string        // SPIFFE trust domain, e.g. cluster.local
	ListenAPI      string        // REST API address (HTTPS); port 0 picks a free one
	ListenIdentity string        // identity gRPC address; port 0 picks a free one
	SVIDTTL        time.Duration // workload certificate lifetime, 5m..24h
	// Bring your own CA: a root or intermediate certificate (PEM) and its key; CABundleFile
	// holds the roots when CACertFile is an intermediate. Read on first start only.
	CACertFile, CAKeyFile, CABundleFile string
	Clock                               clockwork.Clock
	Log                                 *slog.Logger
}

func (c Config) validate() error {
	if c.DataDir == "" {
		return errors.New("controller: --data-dir is required")
	}
	if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
		return fmt.Errorf("controller: --trust-domain %q: %w", c.TrustDomain, err)
	}
	for flag, a := range map[string]string{"--listen-api": c.ListenAPI, "--listen-identity": c.ListenIdentity} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("controller: %s %q: want host:port (%v)", flag, a, err)
		}
	}
	if c.SVIDTTL < identity.MinSVIDTTL || c.SVIDTTL > identity.MaxSVIDTTL {
		return fmt.Errorf("controller: --svid-ttl %v: want between %v and %v", c.SVIDTTL, identity.MinSVIDTTL, identity.MaxSVIDTTL)
	}
	if (c.CACertFile == "") != (c.CAKeyFile == "") {
		return errors.New("controller: --ca-cert and --ca-key must be given together")
	}
	if c.CABundleFile != "" && c.CACertFile == "" {
		return errors.New("controller: --ca-bundle needs --ca-cert and --ca-key")
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

	ring := events.NewRing(eventRingSize)
	sink := events.Multi{ring, events.Logger{Log: log.With("component", "events")}}

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

	adminPath := c.AdminConfigPath()
	token, err := adminToken(adminPath)
	if err != nil {
		return err
	}
	apiSrv, err := api.New(api.Config{
		Listener: apiLn, GetCertificate: ca.ServerCertificate(hosts), AdminToken: token,
		Identity: idSvc, Events: ring, Log: log.With("component", "api"),
	})
	if err != nil {
		return err
	}

	adm := api.AdminConfig{Server: "https://" + dialable(apiLn.Addr()), CAFile: ca.BundlePath(), Token: token, Identity: dialable(idLn.Addr())}
	if err := api.WriteAdminConfig(adminPath, adm); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	log.Info("controller ready", "api", adm.Server, "identity", adm.Identity, "trust_domain", td.String(), "admin_config", adminPath, "data_dir", dir)

	err = Supervise(ctx, log,
		Subsystem{Name: "identity", Run: idSvc.Run},
		Subsystem{Name: "api", Run: apiSrv.Run},
	)
	log.Info("controller stopped")
	return err
}

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
