package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	"github.com/meshguard/meshguard/internal/fileutil"
)

// Applier installs a validated snapshot in the sidecar. A nil error ACKs the version; an
// error NACKs it and the Applier must keep enforcing the previous snapshot. Apply is called
// from one goroutine at a time.
type Applier interface {
	Apply(version uint64, s *xdsv1.Snapshot) error
}

// ApplierFunc adapts a function to Applier.
type ApplierFunc func(version uint64, s *xdsv1.Snapshot) error

// Apply calls f.
func (f ApplierFunc) Apply(version uint64, s *xdsv1.Snapshot) error { return f(version, s) }

// ClientConfig configures a Client; the zero value is not valid.
type ClientConfig struct {
	// Conn is the connection to the controller's config service (grpc.NewClient with the
	// sidecar's mTLS credentials). The Client does not close it.
	Conn    grpc.ClientConnInterface
	Applier Applier
	Clock   clockwork.Clock
	Log     *slog.Logger

	// Who the sidecar is; sent in the Hello. With mTLS the controller takes the identity
	// from the client certificate and checks SpiffeID against it.
	SpiffeID, Namespace, Workload, Node, BuildVersion string

	// StateFile, if set, is where the last applied snapshot is persisted (mode 0600, its
	// directory 0700), so a restarted sidecar enforces it before the controller answers.
	StateFile string

	// Reconnect backoff: from BackoffMin doubling to BackoffMax, each wait drawn uniformly
	// from [d/2, d] (jitter, so sidecars do not reconnect in lockstep after a controller
	// restart). Defaults 200ms and 30s.
	BackoffMin, BackoffMax time.Duration
	// Rand draws the jitter; nil seeds one from the clock.
	Rand *rand.Rand
	// Metrics, if set, is where the client registers its collectors (sidecar metrics).
	Metrics prometheus.Registerer
}

func (c *ClientConfig) validate() error {
	if c.Conn == nil || c.Applier == nil || c.Clock == nil || c.Log == nil {
		return errors.New("xds client: Conn, Applier, Clock and Log are required")
	}
	if c.Namespace == "" || c.Workload == "" {
		return errors.New("xds client: Namespace and Workload (the pod this sidecar serves) are required")
	}
	if c.BackoffMin < 0 || c.BackoffMax < 0 {
		return errors.New("xds client: backoff durations must not be negative (0 picks the default)")
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = 200 * time.Millisecond
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 30 * time.Second
	}
	if c.BackoffMax < c.BackoffMin {
		return fmt.Errorf("xds client: BackoffMax %v is below BackoffMin %v", c.BackoffMax, c.BackoffMin)
	}
	if c.Rand == nil {
		seed := uint64(c.Clock.Now().UnixNano())
		c.Rand = rand.New(rand.NewPCG(seed, seed>>32|1))
	}
	return nil
}

// Client is the sidecar side of config distribution.
type Client struct {
	cfg    ClientConfig
	client xdsv1.ConfigDiscoveryClient

	ready     chan struct{}
	readyOnce sync.Once
	connected atomic.Bool

	randMu sync.Mutex // cfg.Rand: Run and RunCommands back off concurrently

	mu         sync.Mutex
	version    uint64
	snapshot   *xdsv1.Snapshot
	lastErr    string // last NACK or load error
	rejected   uint64
	reconnects uint64
}

// NewClient validates cfg.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, client: xdsv1.NewConfigDiscoveryClient(cfg.Conn), ready: make(chan struct{})}
	if cfg.Metrics != nil {
		if err := c.registerMetrics(cfg.Metrics); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// registerMetrics exposes the client's state, read at scrape time.
func (c *Client) registerMetrics(reg prometheus.Registerer) error {
	read := func(f func() float64) func() float64 {
		return func() float64 {
			c.mu.Lock()
			defer c.mu.Unlock()
			return f()
		}
	}
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshguard_sidecar_config_version", Help: "Config version the sidecar applied."},
			read(func() float64 { return float64(c.version) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshguard_sidecar_config_rejected_total", Help: "Config versions the sidecar rejected (NACKed)."},
			read(func() float64 { return float64(c.rejected) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshguard_sidecar_config_reconnects_total", Help: "Config streams re-opened after a failure."},
			read(func() float64 { return float64(c.reconnects) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshguard_sidecar_config_connected", Help: "1 while the config stream to the controller is open."},
			func() float64 {
				if c.connected.Load() {
					return 1
				}
				return 0
			}),
	}
	for _, col := range cs {
		if err := reg.Register(col); err != nil {
			return fmt.Errorf("xds client: register metrics: %w (one Client per registry)", err)
		}
	}
	return nil
}

// Ready is closed once a snapshot has been applied (from the controller or the state file).
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Connected says whether a config stream to the controller is currently open.
func (c *Client) Connected() bool { return c.connected.Load() }

// Current returns the applied version and snapshot (0, nil before the first). The snapshot
// must not be modified.
func (c *Client) Current() (uint64, *xdsv1.Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version, c.snapshot
}

// LastError returns the last rejected snapshot's error ("" after a successful apply).
func (c *Client) LastError() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// Run applies the persisted snapshot if there is one, then keeps a config stream to the
// controller open until ctx ends, reconnecting with backoff. Losing the controller changes
// nothing the sidecar enforces (fail-static).
func (c *Client) Run(ctx context.Context) error {
	if c.cfg.StateFile != "" {
		if err := c.loadState(); err != nil {
			c.cfg.Log.Warn("ignoring persisted sidecar config", "file", c.cfg.StateFile, "err", err)
		}
	}
	c.redial(ctx, "config stream", c.stream, func() {
		c.mu.Lock()
		c.reconnects++
		c.mu.Unlock()
	})
	return nil
}

// redial runs once until ctx ends, waiting the jittered backoff between attempts; the
// backoff starts over after an attempt that progressed. onRetry, if set, is called before
// each wait.
func (c *Client) redial(ctx context.Context, what string, once func(context.Context) (progressed bool, err error), onRetry func()) {
	attempt := 0
	for {
		progressed, err := once(ctx)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			attempt = 0
		}
		c.randMu.Lock()
		d := backoffDelay(attempt, c.cfg.BackoffMin, c.cfg.BackoffMax, c.cfg.Rand)
		c.randMu.Unlock()
		attempt++
		if onRetry != nil {
			onRetry()
		}
		c.cfg.Log.Info(what+" ended; reconnecting", "err", err, "in", d)
		t := c.cfg.Clock.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.Chan():
		}
	}
}

// backoffDelay returns the wait before reconnect attempt n (0-based): min*2^n capped at max, with
// jitter drawn from [d/2, d].
func backoffDelay(n int, min, max time.Duration, r *rand.Rand) time.Duration {
	d := min
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	half := d / 2
	return half + time.Duration(r.Int64N(int64(d-half)+1))
}

// stream runs one config stream; progressed reports whether a snapshot arrived on it (which
// resets the backoff).
func (c *Client) stream(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// WaitForReady: while the controller is unreachable the stream waits for the connection
	// (whose own reconnect backoff is set on Conn, e.g. grpc.WithConnectParams) instead of
	// failing fast in a loop.
	st, err := c.client.StreamConfig(ctx, grpc.WaitForReady(true), grpc.MaxCallRecvMsgSize(maxSnapshot))
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	last := c.version
	c.mu.Unlock()
	hello := &xdsv1.Hello{
		SpiffeId: c.cfg.SpiffeID, Namespace: c.cfg.Namespace, Workload: c.cfg.Workload,
		Node: c.cfg.Node, LastAppliedVersion: last, BuildVersion: c.cfg.BuildVersion,
	}
	if err := st.Send(&xdsv1.SidecarMessage{Msg: &xdsv1.SidecarMessage_Hello{Hello: hello}}); err != nil {
		return false, err
	}
	c.connected.Store(true)
	defer c.connected.Store(false)
	for {
		resp, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("controller closed the config stream")
			}
			return progressed, err
		}
		progressed = true
		ack := &xdsv1.Ack{Version: resp.GetVersion(), Nonce: resp.GetNonce()}
		if err := c.apply(resp, true); err != nil {
			ack.ErrorDetail = err.Error()
			c.cfg.Log.Warn("rejected config; keeping the previous one", "version", resp.GetVersion(), "err", err)
		}
		if err := st.Send(&xdsv1.SidecarMessage{Msg: &xdsv1.SidecarMessage_Ack{Ack: ack}}); err != nil {
			return progressed, err
		}
	}
}

// apply validates and applies one response, persisting it on success if persist is set.
func (c *Client) apply(resp *xdsv1.ConfigResponse, persist bool) error {
	if resp.GetVersion() == 0 {
		return errors.New("config version 0 is not valid")
	}
	if err := Validate(resp.GetSnapshot()); err != nil {
		c.setErr(err)
		return err
	}
	if self := resp.GetSnapshot().GetSelf(); self.GetNamespace() != c.cfg.Namespace || self.GetName() != c.cfg.Workload {
		err := fmt.Errorf("snapshot: self is %s/%s, this sidecar serves %s/%s", self.GetNamespace(), self.GetName(), c.cfg.Namespace, c.cfg.Workload)
		c.setErr(err)
		return err
	}
	if err := c.cfg.Applier.Apply(resp.GetVersion(), resp.GetSnapshot()); err != nil {
		err = fmt.Errorf("apply version %d: %w", resp.GetVersion(), err)
		c.setErr(err)
		return err
	}
	c.mu.Lock()
	c.version, c.snapshot, c.lastErr = resp.GetVersion(), resp.GetSnapshot(), ""
	c.mu.Unlock()
	c.readyOnce.Do(func() { close(c.ready) })
	if persist && c.cfg.StateFile != "" {
		if err := c.saveState(resp); err != nil {
			// The config is applied; only a restart without the controller would miss it.
			c.cfg.Log.Warn("persisting sidecar config failed", "file", c.cfg.StateFile, "err", err)
		}
	}
	return nil
}

func (c *Client) setErr(err error) {
	c.mu.Lock()
	c.lastErr = err.Error()
	c.rejected++
	c.mu.Unlock()
}

// maxSnapshot bounds a snapshot from the controller (gRPC's 4 MiB default is too small for
// large meshes) and what loadState reads, so a corrupt file cannot exhaust memory.
const maxSnapshot = 64 << 20

func (c *Client) loadState() error {
	f, err := os.Open(c.cfg.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	// Whoever can write the file decides what the sidecar enforces after a restart.
	if fi, err := f.Stat(); err != nil {
		return err
	} else if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("mode %v is writable by group or others; want 0600 (chmod 600 it or delete it)", fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSnapshot+1))
	if err != nil {
		return err
	}
	if len(b) > maxSnapshot {
		return fmt.Errorf("larger than %d bytes", maxSnapshot)
	}
	var resp xdsv1.ConfigResponse
	if err := proto.Unmarshal(b, &resp); err != nil {
		return fmt.Errorf("decode: %w (delete the file to start without it)", err)
	}
	if err := c.apply(&resp, false); err != nil { // it is the file's content already
		return err
	}
	c.cfg.Log.Info("applied persisted sidecar config", "version", resp.GetVersion())
	return nil
}

// saveState writes the applied response atomically (temp file + rename), 0600 in a 0700 dir.
func (c *Client) saveState(resp *xdsv1.ConfigResponse) error {
	b, err := proto.Marshal(&xdsv1.ConfigResponse{Version: resp.GetVersion(), Snapshot: resp.GetSnapshot()})
	if err != nil {
		return err
	}
	dir := filepath.Dir(c.cfg.StateFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return fileutil.WriteAtomic(c.cfg.StateFile, b, 0o600)
}

// ReportConnections sends one batch of reports to the controller; the Batcher calls it.
func (c *Client) ReportConnections(ctx context.Context, reports []*xdsv1.ConnectionReport, dropped uint64) error {
	_, err := c.client.ReportConnections(ctx, &xdsv1.ReportConnectionsRequest{
		SpiffeId: c.cfg.SpiffeID, Namespace: c.cfg.Namespace, Workload: c.cfg.Workload,
		Reports: reports, Dropped: dropped,
	})
	return err
}
