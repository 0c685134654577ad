// Package xds distributes configuration from the controller to sidecars over the
// meshguard.xds.v1.ConfigDiscovery gRPC stream. The Server builds one snapshot per connected
// sidecar through a Generator whenever the config version is bumped, pushes it without letting
// one slow sidecar hold up the others (bursts of bumps coalesce to the latest), and tracks
// what each sidecar ACKed or NACKed. The Client receives snapshots, validates and applies them
// through an Applier, ACKs or NACKs, reconnects with backoff and keeps its last config when the
// controller is gone (fail-static, optionally persisted to a file). The Batcher queues
// connection reports and the ThreatBatcher threat events without ever blocking the data path.
// Sidecars upload packet captures, and keep a command stream open on which the controller
// sends requests (on-demand captures) through Server.SendCommand.
package xds

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// Node identifies a connected sidecar to the Generator and the report sink.
type Node struct {
	// ID is the sidecar's SPIFFE ID: from its TLS client certificate when mTLS is used,
	// else from its Hello (insecure mode, tests only).
	ID spiffeid.ID `json:"spiffeId"`
	// Namespace and Workload name the pod the sidecar serves, as claimed in the Hello; with
	// mTLS the namespace is checked against ID, the Generator should check the rest (the pod
	// exists and runs as ID's service account).
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	Node      string `json:"node,omitempty"` // host the sidecar runs on
	// Authenticated is true when ID comes from a verified TLS client certificate.
	Authenticated bool `json:"authenticated"`
}

// Key is "namespace/workload", the name operators and metrics use for a sidecar.
func (n Node) Key() string { return n.Namespace + "/" + n.Workload }

// Generator builds the snapshot one sidecar needs from the current state of the world. The
// Server calls it for each connected sidecar after every version bump (and on connect),
// concurrently for different sidecars. It must not modify a snapshot it returned before: the
// Server may still be sending it. An error skips this sidecar until the next bump (the error
// is visible in its status).
type Generator interface {
	Generate(ctx context.Context, n Node) (*xdsv1.Snapshot, error)
}

// GeneratorFunc adapts a function to Generator.
type GeneratorFunc func(ctx context.Context, n Node) (*xdsv1.Snapshot, error)

// Generate calls f.
func (f GeneratorFunc) Generate(ctx context.Context, n Node) (*xdsv1.Snapshot, error) {
	return f(ctx, n)
}

// ReportSink receives batches of connection reports from authenticated sidecars. It is called
// on the RPC's goroutine; an error is returned to the sidecar, which retries the batch later.
type ReportSink interface {
	HandleReports(ctx context.Context, from Node, reports []*xdsv1.ConnectionReport) error
}

// ServerConfig configures a Server; the zero value is not valid.
type ServerConfig struct {
	Generator Generator
	Clock     clockwork.Clock
	Log       *slog.Logger
	// Metrics is where the server registers its collectors; required (use
	// prometheus.NewRegistry() in tests), never the global default.
	Metrics prometheus.Registerer
	// Reports receives connection reports; nil discards them (they are still counted).
	Reports ReportSink
	// Threats receives threat reports; nil discards them (they are still counted).
	Threats ThreatSink
	// Captures receives capture uploads; nil refuses them (Unimplemented).
	Captures CaptureSink
	// AllowInsecure accepts sidecars that present no TLS client certificate and trusts the
	// SPIFFE ID in their Hello. For tests and the local lab without identity only.
	AllowInsecure bool
	// TrustDomain, if set, is the only trust domain sidecar identities may belong to.
	TrustDomain spiffeid.TrustDomain
	// InitialVersion is the first config version; 0 picks the clock's Unix time in
	// microseconds, so versions keep growing across controller restarts (a restarted
	// controller does not reuse a version a sidecar already holds) and still fit a float64
	// metric exactly.
	InitialVersion uint64
	// HelloTimeout bounds how long a new stream may take to send its Hello; default 10s.
	HelloTimeout time.Duration
	// Listener and ServerOptions: if Listener is set, Run serves a gRPC server on it with
	// ServerOptions (TLS credentials go there), raising the receive limit to MaxMessageSize
	// for capture uploads. Otherwise register the service on your own gRPC server with
	// Register, and Run only tracks ctx; that server needs grpc.MaxRecvMsgSize(MaxMessageSize)
	// or uploads above gRPC's 4 MiB default fail.
	Listener      net.Listener
	ServerOptions []grpc.ServerOption
}

func (c *ServerConfig) validate() error {
	if c.Generator == nil || c.Clock == nil || c.Log == nil || c.Metrics == nil {
		return errors.New("xds server: Generator, Clock, Log and Metrics are required")
	}
	if c.HelloTimeout < 0 {
		return fmt.Errorf("xds server: HelloTimeout must not be negative, got %v (0 picks 10s)", c.HelloTimeout)
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = 10 * time.Second
	}
	if c.InitialVersion == 0 {
		c.InitialVersion = uint64(c.Clock.Now().UnixMicro())
	}
	return nil
}

// SidecarStatus is what the controller knows about one connected sidecar (REST API,
// `meshguard get sidecars`).
type SidecarStatus struct {
	Node         Node      `json:"sidecar"`
	PeerAddr     string    `json:"peerAddr,omitempty"`
	BuildVersion string    `json:"buildVersion,omitempty"`
	ConnectedAt  time.Time `json:"connectedAt"`
	// SentVersion is the last version pushed; AckedVersion the last one the sidecar applied
	// (it may report one from before this connection in its Hello, until it ACKs a push).
	SentVersion  uint64    `json:"sentVersion"`
	AckedVersion uint64    `json:"ackedVersion"`
	AckedAt      time.Time `json:"ackedAt,omitzero"`
	// NackedVersion and NackError describe the last rejected version (cleared by a later ACK).
	NackedVersion uint64 `json:"nackedVersion,omitempty"`
	NackError     string `json:"nackError,omitempty"`
	// GenerateError is the Generator's last error for this sidecar, if any.
	GenerateError string `json:"generateError,omitempty"`
}

// UpToDate says whether the sidecar applied the current version.
func (s SidecarStatus) UpToDate(current uint64) bool { return s.AckedVersion == current }

// Server is the controller side of config distribution.
type Server struct {
	xdsv1.UnimplementedConfigDiscoveryServer
	cfg ServerConfig
	m   *serverMetrics

	mu        sync.Mutex
	version   uint64
	bumpedAt  time.Time
	conns     map[uint64]*sidecarConn
	nextConn  uint64
	closed    bool
	closeDone chan struct{}
	changed   chan struct{} // closed and replaced on every status change
	// commands holds each workload's open command stream, by Node.Key.
	commands map[string]*commandStream
}

// sidecarConn is one connected stream. Its fields are guarded by Server.mu. wake has room for
// one pending wake-up, and at most one push is in flight (unanswered) per sidecar: bumps while
// a sidecar is busy collapse into one push of the latest version once it answers.
type sidecarConn struct {
	id       uint64
	status   SidecarStatus
	wake     chan struct{}
	nonce    string // last sent
	inflight bool   // a push awaits its ACK/NACK
	sentAt   time.Time
	// bumpedAt of the version last sent: push latency is measured from it to the ACK.
	sentBumpedAt time.Time
}

// NewServer validates cfg and registers the metrics.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		version:   cfg.InitialVersion,
		bumpedAt:  cfg.Clock.Now(),
		conns:     map[uint64]*sidecarConn{},
		commands:  map[string]*commandStream{},
		closeDone: make(chan struct{}),
		changed:   make(chan struct{}),
	}
	m, err := newServerMetrics(cfg.Metrics, s)
	if err != nil {
		return nil, err
	}
	s.m = m
	return s, nil
}

// Register adds the ConfigDiscovery service to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) { xdsv1.RegisterConfigDiscoveryServer(r, s) }

// Run serves cfg.Listener if set and blocks until ctx ends; then it ends every config stream.
func (s *Server) Run(ctx context.Context) error {
	var gs *grpc.Server
	errc := make(chan error, 1)
	if s.cfg.Listener != nil {
		// Keepalive pings find sidecars that vanished without closing (a node lost power), so
		// they stop counting as connected; ServerOptions come after and may override.
		opts := append([]grpc.ServerOption{
			grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
			grpc.MaxRecvMsgSize(MaxMessageSize),
		}, s.cfg.ServerOptions...)
		gs = grpc.NewServer(opts...)
		s.Register(gs)
		go func() { errc <- gs.Serve(s.cfg.Listener) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("xds server: serve: %w", err)
	}
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closeDone)
	}
	s.mu.Unlock()
	if gs != nil {
		gs.Stop()
	}
	return err
}

// Version returns the current config version.
func (s *Server) Version() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// Bump makes a new config version current and schedules a push to every connected sidecar.
// Call it after anything a snapshot depends on changed. It never blocks on sidecars: each has
// at most one pending wake-up, so a burst of bumps results in one push of the latest version.
func (s *Server) Bump() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version++
	s.bumpedAt = s.cfg.Clock.Now()
	for _, c := range s.conns {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	s.m.version.Set(float64(s.version))
	s.notifyLocked()
	return s.version
}

// BumpOn bumps the version once, then each time one of the sources changes, until ctx ends.
// A source is a Changed method in the registry's style: it returns a channel closed at the
// next change (e.g. registry.Registry.Changed and the policy store's equivalent). Bursts
// coalesce in Bump.
func (s *Server) BumpOn(ctx context.Context, sources ...func() <-chan struct{}) error {
	// Subscribe first, then bump once: a change before the subscription is covered by that
	// bump, one after it by the channel.
	chans := make([]<-chan struct{}, len(sources))
	for i, src := range sources {
		chans[i] = src()
	}
	s.Bump()
	var wg sync.WaitGroup
	for i, src := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := chans[i]
			for {
				select {
				case <-ctx.Done():
					return
				case <-ch:
					ch = src()
					s.Bump()
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

// Changed returns a channel that is closed at the next change of any sidecar's status
// (connect, disconnect, push, ACK, NACK, command stream opened or closed) or of the version. Read the state after taking the
// channel, so no change is missed.
func (s *Server) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// notifyLocked wakes Changed waiters; s.mu must be held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Progress returns the current version, how many sidecars are connected and how many of
// them applied the current version; cheap enough to poll on every Changed.
func (s *Server) Progress() (version uint64, connected, upToDate int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		if c.status.AckedVersion == s.version {
			upToDate++
		}
	}
	return s.version, len(s.conns), upToDate
}

// Sidecars returns the status of every connected sidecar, sorted by Node.Key.
func (s *Server) Sidecars() []SidecarStatus {
	s.mu.Lock()
	out := make([]SidecarStatus, 0, len(s.conns))
	for _, c := range s.conns {
		out = append(out, c.status)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node.Key() != out[j].Node.Key() {
			return out[i].Node.Key() < out[j].Node.Key()
		}
		return out[i].ConnectedAt.Before(out[j].ConnectedAt)
	})
	return out
}

// StreamConfig serves one sidecar's config stream.
func (s *Server) StreamConfig(stream grpc.BidiStreamingServer[xdsv1.SidecarMessage, xdsv1.ConfigResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()

	hello, err := s.recvHello(ctx, stream)
	if err != nil {
		return err
	}
	node, err := s.authenticate(ctx, hello.GetSpiffeId(), hello.GetNamespace(), hello.GetWorkload())
	if err != nil {
		return err
	}
	node.Node = hello.GetNode()
	peerAddr := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		peerAddr = p.Addr.String()
	}

	c := &sidecarConn{wake: make(chan struct{}, 1)}
	c.wake <- struct{}{} // push the current version right away
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return status.Error(codes.Unavailable, "xds server shutting down")
	}
	s.nextConn++
	c.id = s.nextConn
	c.status = SidecarStatus{
		Node: node, PeerAddr: peerAddr, BuildVersion: hello.GetBuildVersion(),
		ConnectedAt: s.cfg.Clock.Now(), AckedVersion: hello.GetLastAppliedVersion(),
	}
	s.conns[c.id] = c
	s.notifyLocked()
	s.mu.Unlock()
	s.m.connected.Inc()
	s.cfg.Log.Debug("sidecar connected", "sidecar", node.Key(), "id", node.ID.String(), "peer", peerAddr)
	defer func() {
		s.mu.Lock()
		delete(s.conns, c.id)
		s.notifyLocked()
		s.mu.Unlock()
		s.m.connected.Dec()
		s.cfg.Log.Debug("sidecar disconnected", "sidecar", node.Key())
	}()

	// Receive ACKs on their own goroutine, so a sidecar that stops reading cannot hide its
	// disconnect and ACKs are processed while a send is blocked.
	recvErr := make(chan error, 1)
	go func() { recvErr <- s.recvAcks(stream, c) }()

	var nonce uint64
	var last *xdsv1.Snapshot // last sent
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.closeDone:
			return status.Error(codes.Unavailable, "xds server shutting down")
		case err := <-recvErr:
			return err
		case <-c.wake:
		}
		s.mu.Lock()
		version, bumpedAt, sent, inflight := s.version, s.bumpedAt, c.status.SentVersion, c.inflight
		s.mu.Unlock()
		if version == sent || inflight {
			continue // the answer to the in-flight push wakes us again
		}
		snap, err := s.cfg.Generator.Generate(ctx, node)
		if err != nil {
			s.m.generateErrors.Inc()
			s.mu.Lock()
			c.status.GenerateError = err.Error()
			s.notifyLocked()
			s.mu.Unlock()
			s.cfg.Log.Warn("generating sidecar config failed", "sidecar", node.Key(), "version", version, "err", err)
			continue
		}
		if last != nil && sameSnapshot(last, snap) {
			// Nothing this sidecar sees changed (most bumps concern a few sidecars): if it
			// applied what it has, it is at the new version without a push.
			s.mu.Lock()
			if c.status.AckedVersion == c.status.SentVersion && c.status.NackError == "" {
				c.status.SentVersion, c.status.AckedVersion, c.status.GenerateError = version, version, ""
				s.m.unchanged.Inc() // before waking Changed waiters, who may read it
				s.notifyLocked()
				s.mu.Unlock()
				continue
			}
			s.mu.Unlock()
		}
		last = snap
		nonce++
		n := strconv.FormatUint(nonce, 10)
		if bumpedAt.Before(c.status.ConnectedAt) {
			bumpedAt = c.status.ConnectedAt // a connect push: latency counts from the connect
		}
		s.mu.Lock()
		c.status.SentVersion, c.status.GenerateError = version, ""
		c.nonce, c.sentAt, c.sentBumpedAt, c.inflight = n, s.cfg.Clock.Now(), bumpedAt, true
		s.m.pushes.Inc()
		s.notifyLocked()
		s.mu.Unlock()
		// Send may block on a slow sidecar; only this goroutine waits, and bumps meanwhile
		// collapse into the one pending wake-up.
		if err := stream.Send(&xdsv1.ConfigResponse{Version: version, Nonce: n, Snapshot: snap}); err != nil {
			return err
		}
	}
}

// sameSnapshot reports whether b is known to have a's content. Generators share unchanged
// parts between versions (and must not modify a snapshot they returned), so the large fields
// compare by identity; the small ones by value. False negatives only cost a push.
func sameSnapshot(a, b *xdsv1.Snapshot) bool {
	return sameSlice(a.GetServices(), b.GetServices()) && sameSlice(a.GetPeers(), b.GetPeers()) &&
		sameSlice(a.GetExternals(), b.GetExternals()) && sameSlice(a.GetPolicy(), b.GetPolicy()) &&
		a.GetPolicyFormat() == b.GetPolicyFormat() && a.GetDefaultMtls() == b.GetDefaultMtls() &&
		a.GetEgressMode() == b.GetEgressMode() && a.GetTrustDomain() == b.GetTrustDomain() &&
		maps.Equal(a.GetNamespaceMtls(), b.GetNamespaceMtls()) && proto.Equal(a.GetSelf(), b.GetSelf())
}

// sameSlice: same length and the same backing array (or both empty).
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func (s *Server) recvHello(ctx context.Context, stream grpc.BidiStreamingServer[xdsv1.SidecarMessage, xdsv1.ConfigResponse]) (*xdsv1.Hello, error) {
	type result struct {
		m   *xdsv1.SidecarMessage
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := stream.Recv()
		ch <- result{m, err}
	}()
	timer := s.cfg.Clock.NewTimer(s.cfg.HelloTimeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		h := r.m.GetHello()
		if h == nil {
			return nil, status.Error(codes.InvalidArgument, "first message on the config stream must be a hello")
		}
		return h, nil
	case <-timer.Chan():
		return nil, status.Errorf(codes.DeadlineExceeded, "no hello within %v", s.cfg.HelloTimeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// authenticate decides who the caller is: the TLS peer's SPIFFE ID when there is one (the
// claimed ID must then match), else the claimed ID if insecure mode allows it.
func (s *Server) authenticate(ctx context.Context, claimed, namespace, workload string) (Node, error) {
	if namespace == "" || workload == "" {
		return Node{}, status.Error(codes.InvalidArgument, "hello: namespace and workload are required")
	}
	n := Node{Namespace: namespace, Workload: workload}
	if cert := peerCert(ctx); cert != nil {
		id, err := x509svid.IDFromCert(cert)
		if err != nil {
			return Node{}, status.Errorf(codes.Unauthenticated, "client certificate has no SPIFFE ID: %v", err)
		}
		if claimed != "" && claimed != id.String() {
			return Node{}, status.Errorf(codes.PermissionDenied, "hello spiffe_id %q does not match the client certificate's %q", claimed, id)
		}
		n.ID, n.Authenticated = id, true
	} else {
		if !s.cfg.AllowInsecure {
			return Node{}, status.Error(codes.Unauthenticated, "a TLS client certificate (the sidecar's SVID) is required")
		}
		id, err := spiffeid.FromString(claimed)
		if err != nil {
			return Node{}, status.Errorf(codes.InvalidArgument, "hello spiffe_id %q: %v", claimed, err)
		}
		n.ID = id
	}
	if !s.cfg.TrustDomain.IsZero() && !n.ID.MemberOf(s.cfg.TrustDomain) {
		return Node{}, status.Errorf(codes.PermissionDenied, "spiffe id %q is not in trust domain %q", n.ID, s.cfg.TrustDomain)
	}
	if ns, ok := idNamespace(n.ID); ok && ns != namespace {
		return Node{}, status.Errorf(codes.PermissionDenied, "hello namespace %q does not match identity %q", namespace, n.ID)
	}
	return n, nil
}

// idNamespace extracts <ns> from a /ns/<ns>/sa/<sa> path.
func idNamespace(id spiffeid.ID) (string, bool) {
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(seg) == 4 && seg[0] == "ns" && seg[2] == "sa" {
		return seg[1], true
	}
	return "", false
}

func peerCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil
	}
	return ti.State.PeerCertificates[0]
}

func (s *Server) recvAcks(stream grpc.BidiStreamingServer[xdsv1.SidecarMessage, xdsv1.ConfigResponse], c *sidecarConn) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		ack := m.GetAck()
		if ack == nil {
			return status.Error(codes.InvalidArgument, "only acks may follow the hello")
		}
		s.handleAck(c, ack)
	}
}

func (s *Server) handleAck(c *sidecarConn, ack *xdsv1.Ack) {
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	// Only the answer to the in-flight push counts; anything else is a confused client.
	if !c.inflight || ack.GetNonce() != c.nonce || ack.GetVersion() != c.status.SentVersion {
		return
	}
	c.inflight = false
	defer s.notifyLocked()
	select { // a bump may have come while the push was in flight
	case c.wake <- struct{}{}:
	default:
	}
	if d := ack.GetErrorDetail(); d != "" {
		c.status.NackedVersion, c.status.NackError = ack.GetVersion(), d
		s.m.nacks.Inc()
		s.cfg.Log.Warn("sidecar rejected config", "sidecar", c.status.Node.Key(), "version", ack.GetVersion(), "err", d)
		return
	}
	c.status.AckedVersion, c.status.AckedAt = ack.GetVersion(), now
	c.status.NackedVersion, c.status.NackError = 0, ""
	s.m.pushLatency.Observe(now.Sub(c.sentBumpedAt).Seconds())
}

// ReportConnections hands a batch of reports to the sink.
func (s *Server) ReportConnections(ctx context.Context, req *xdsv1.ReportConnectionsRequest) (*xdsv1.ReportConnectionsResponse, error) {
	n, err := s.authenticate(ctx, req.GetSpiffeId(), req.GetNamespace(), req.GetWorkload())
	if err != nil {
		return nil, err
	}
	s.m.reports.Add(float64(len(req.GetReports())))
	s.m.reportsDropped.Add(float64(req.GetDropped()))
	if s.cfg.Reports == nil {
		return &xdsv1.ReportConnectionsResponse{}, nil
	}
	if err := s.cfg.Reports.HandleReports(ctx, n, req.GetReports()); err != nil {
		return nil, status.Errorf(codes.Unavailable, "storing reports: %v", err)
	}
	return &xdsv1.ReportConnectionsResponse{}, nil
}
