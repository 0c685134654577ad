package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	"github.com/meshguard/meshguard/internal/capture"
)

// Threat reports, capture uploads and the command stream: the sidecar detects and acts on
// threats locally, then tells the controller (which quarantines, alerts and stores), uploads
// the pcaps it recorded, and keeps a stream open on which the controller asks for on-demand
// captures.

const (
	// MaxCaptureBytes bounds one uploaded pcap; the server refuses larger uploads.
	MaxCaptureBytes = 48 << 20
	// MaxEvidence bounds ThreatEvent.evidence; the server truncates longer evidence.
	MaxEvidence = 4096
	// MaxMessageSize is the largest gRPC message of the service (a snapshot or a capture
	// upload), far above gRPC's 4 MiB default. A gRPC server built outside Server.Run needs
	// grpc.MaxRecvMsgSize(MaxMessageSize).
	MaxMessageSize = 64 << 20
	// commandBuffer is how many commands may wait for one sidecar's stream; SendCommand
	// refuses beyond (commands are rare; a full buffer means the stream is stuck).
	commandBuffer = 16
)

// ErrNoCommandStream: the workload has no sidecar with an open command stream.
var ErrNoCommandStream = errors.New("workload has no connected sidecar")

// ThreatSink receives threat batches from authenticated sidecars. It is called on the RPC's
// goroutine; an error is returned to the sidecar, which retries the batch a few times. A
// status error (google.golang.org/grpc/status) keeps its code; others become Unavailable.
type ThreatSink interface {
	HandleThreats(ctx context.Context, from Node, req *xdsv1.ReportThreatsRequest) error
}

// CaptureSink receives capture uploads from authenticated sidecars, already checked for size
// and capture ID. Errors are returned to the sidecar as for ThreatSink.
type CaptureSink interface {
	HandleCapture(ctx context.Context, from Node, req *xdsv1.UploadCaptureRequest) error
}

// commandStream is one sidecar's open Commands stream; guarded by Server.mu.
type commandStream struct {
	ch       chan *xdsv1.Command
	replaced chan struct{} // closed when a newer stream of the same workload takes over
}

// ReportThreats hands a batch of threats to the sink.
func (s *Server) ReportThreats(ctx context.Context, req *xdsv1.ReportThreatsRequest) (*xdsv1.ReportThreatsResponse, error) {
	n, err := s.authenticate(ctx, req.GetSpiffeId(), req.GetNamespace(), req.GetWorkload())
	if err != nil {
		return nil, err
	}
	s.m.threats.Add(float64(len(req.GetThreats())))
	s.m.threatsDropped.Add(float64(req.GetDropped()))
	if s.cfg.Threats == nil {
		return &xdsv1.ReportThreatsResponse{}, nil
	}
	for _, ev := range req.GetThreats() {
		if len(ev.GetEvidence()) > MaxEvidence { // what the contract allows, whatever a sidecar sends
			ev.Evidence = ev.Evidence[:MaxEvidence]
		}
	}
	if err := s.cfg.Threats.HandleThreats(ctx, n, req); err != nil {
		return nil, sinkError("storing threats", err)
	}
	return &xdsv1.ReportThreatsResponse{}, nil
}

// UploadCapture checks an uploaded capture and hands it to the sink.
func (s *Server) UploadCapture(ctx context.Context, req *xdsv1.UploadCaptureRequest) (*xdsv1.UploadCaptureResponse, error) {
	n, err := s.authenticate(ctx, req.GetSpiffeId(), req.GetNamespace(), req.GetWorkload())
	if err != nil {
		return nil, err
	}
	if s.cfg.Captures == nil {
		return nil, status.Error(codes.Unimplemented, "this controller does not accept captures")
	}
	if l := len(req.GetPcap()); l > MaxCaptureBytes {
		return nil, status.Errorf(codes.InvalidArgument, "pcap: %d bytes exceeds the limit of %d", l, MaxCaptureBytes)
	}
	if !capture.ValidID(req.GetCaptureId()) {
		return nil, status.Errorf(codes.InvalidArgument, "capture_id %q is not a capture ID (like 20260102T150405Z-0123456789ab)", req.GetCaptureId())
	}
	s.m.captures.Inc()
	if err := s.cfg.Captures.HandleCapture(ctx, n, req); err != nil {
		return nil, sinkError("storing capture", err)
	}
	return &xdsv1.UploadCaptureResponse{}, nil
}

// sinkError keeps a sink's gRPC status; anything else is a transient failure to the sidecar.
func sinkError(what string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Unavailable, "%s: %v", what, err)
}

// Commands registers the sidecar's command stream under its workload (replacing an older
// stream of the same workload) and forwards what SendCommand queues for it.
func (s *Server) Commands(req *xdsv1.CommandsRequest, stream grpc.ServerStreamingServer[xdsv1.Command]) error {
	ctx := stream.Context()
	n, err := s.authenticate(ctx, req.GetSpiffeId(), req.GetNamespace(), req.GetWorkload())
	if err != nil {
		return err
	}
	key := n.Key()
	cs := &commandStream{ch: make(chan *xdsv1.Command, commandBuffer), replaced: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return status.Error(codes.Unavailable, "xds server shutting down")
	}
	if old := s.commands[key]; old != nil {
		close(old.replaced)
	}
	s.commands[key] = cs
	s.notifyLocked()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.commands[key] == cs {
			delete(s.commands, key)
			s.notifyLocked()
		}
		s.mu.Unlock()
	}()
	// Headers tell the client the stream is registered: SendCommand reaches it from now on.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	s.cfg.Log.Debug("sidecar command stream open", "sidecar", key)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.closeDone:
			return status.Error(codes.Unavailable, "xds server shutting down")
		case <-cs.replaced:
			return status.Error(codes.Aborted, "replaced by a newer command stream of the same workload")
		case cmd := <-cs.ch:
			if err := stream.Send(cmd); err != nil {
				return err
			}
		}
	}
}

// SendCommand queues cmd for the workload's open command stream without waiting for it to be
// sent; cmd must not be modified afterwards. The error wraps ErrNoCommandStream when the
// workload has no stream open.
func (s *Server) SendCommand(namespace, workload string, cmd *xdsv1.Command) error {
	if cmd == nil {
		return errors.New("xds server: send command: cmd is nil")
	}
	key := namespace + "/" + workload
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := s.commands[key]
	if cs == nil {
		return fmt.Errorf("sidecar %s: %w", key, ErrNoCommandStream)
	}
	select {
	case cs.ch <- cmd:
		return nil
	default:
		return fmt.Errorf("sidecar %s: %d commands already wait for its stream; retry later", key, commandBuffer)
	}
}

// ThreatSender delivers one batch of threats to the controller; *Client implements it.
type ThreatSender interface {
	ReportThreats(ctx context.Context, threats []*xdsv1.ThreatEvent, dropped uint64) error
}

// ReportThreats sends one batch of threats to the controller; the ThreatBatcher calls it.
func (c *Client) ReportThreats(ctx context.Context, threats []*xdsv1.ThreatEvent, dropped uint64) error {
	_, err := c.client.ReportThreats(ctx, &xdsv1.ReportThreatsRequest{
		SpiffeId: c.cfg.SpiffeID, Namespace: c.cfg.Namespace, Workload: c.cfg.Workload,
		Threats: threats, Dropped: dropped,
	})
	return err
}

// UploadCapture sends one capture to the controller, setting req's spiffe_id, namespace and
// workload to the client's. While the controller is unreachable it waits for the connection
// until ctx ends, so bound ctx.
func (c *Client) UploadCapture(ctx context.Context, req *xdsv1.UploadCaptureRequest) error {
	if l := len(req.GetPcap()); l > MaxCaptureBytes {
		return fmt.Errorf("upload capture %s: pcap of %d bytes exceeds the limit of %d", req.GetCaptureId(), l, MaxCaptureBytes)
	}
	req.SpiffeId, req.Namespace, req.Workload = c.cfg.SpiffeID, c.cfg.Namespace, c.cfg.Workload
	_, err := c.client.UploadCapture(ctx, req, grpc.WaitForReady(true), grpc.MaxCallSendMsgSize(MaxMessageSize))
	return err
}

// RunCommands keeps a command stream to the controller open until ctx ends (then it returns
// nil), reconnecting with the client's jittered backoff, and calls handle for each command
// on the stream's goroutine: handle must return quickly (start long work on its own
// goroutine, bounded by the ctx it gets, which is ctx: work outlives a reconnect).
func (c *Client) RunCommands(ctx context.Context, handle func(context.Context, *xdsv1.Command)) error {
	c.redial(ctx, "command stream", func(ctx context.Context) (bool, error) { return c.commandStream(ctx, handle) }, nil)
	return nil
}

// commandStream runs one command stream; progressed reports whether the controller accepted
// it (which resets the backoff).
func (c *Client) commandStream(parent context.Context, handle func(context.Context, *xdsv1.Command)) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	st, err := c.client.Commands(ctx, &xdsv1.CommandsRequest{SpiffeId: c.cfg.SpiffeID, Namespace: c.cfg.Namespace, Workload: c.cfg.Workload},
		grpc.WaitForReady(true))
	if err != nil {
		return false, err
	}
	// The server sends headers once the stream is registered; a refusal ends the stream
	// without them (nil header, the status comes from Recv).
	md, err := st.Header()
	if err != nil {
		return false, err
	}
	progressed = md != nil
	for {
		cmd, err := st.Recv()
		if err != nil {
			return progressed, err
		}
		progressed = true
		handle(parent, cmd)
	}
}

// ThreatBatcherConfig configures a ThreatBatcher; the zero value is not valid.
type ThreatBatcherConfig struct {
	Sender ThreatSender
	Clock  clockwork.Clock
	Log    *slog.Logger
	// Metrics, if set, is where the batcher registers its counters
	// (meshguard_sidecar_threats_*).
	Metrics prometheus.Registerer
	// Queue bounds the threats waiting to be sent; beyond it Add drops and counts. Default 1024.
	Queue int
	// Attempts bounds the sends of one threat while the controller refuses them; then it is
	// dropped and counted. Retries back off from 200ms doubling to 5s. Default 8 (about 20s).
	Attempts int
	// SendTimeout bounds one batch's RPC. Default 10s.
	SendTimeout time.Duration
}

// Batching of threats: a batch holds at most threatBatch; one is sent as soon as
// threatFlushAt wait, else every threatInterval (threats drive quarantines: keep it short).
const (
	threatBatch    = 256
	threatFlushAt  = 64
	threatInterval = 200 * time.Millisecond
	threatRetryMax = 5 * time.Second
)

func (c *ThreatBatcherConfig) validate() error {
	if c.Sender == nil || c.Clock == nil || c.Log == nil {
		return errors.New("threat batcher: Sender, Clock and Log are required")
	}
	if c.Queue < 0 || c.Attempts < 0 || c.SendTimeout < 0 {
		return errors.New("threat batcher: Queue, Attempts and SendTimeout must not be negative (0 picks the default)")
	}
	if c.Queue == 0 {
		c.Queue = 1024
	}
	if c.Attempts == 0 {
		c.Attempts = 8
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = 10 * time.Second
	}
	return nil
}

// ThreatBatcher queues threat events and sends them in batches. Add never blocks: the data
// path calls it right after acting on a threat, so a full queue drops the event and counts
// it (the count reaches the controller with the next batch as `dropped`).
type ThreatBatcher struct {
	q *batchQueue[*xdsv1.ThreatEvent]
}

// NewThreatBatcher validates cfg.
func NewThreatBatcher(cfg ThreatBatcherConfig) (*ThreatBatcher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	q := newBatchQueue(queueConfig[*xdsv1.ThreatEvent]{
		send: cfg.Sender.ReportThreats, clock: cfg.Clock, log: cfg.Log,
		size: cfg.Queue, flushAt: min(threatFlushAt, cfg.Queue), maxBatch: threatBatch,
		interval: threatInterval, timeout: cfg.SendTimeout,
		attempts: cfg.Attempts, retryMax: threatRetryMax,
	})
	if cfg.Metrics != nil {
		err := q.register(cfg.Metrics, queueMetrics{
			prefix:  "meshguard_sidecar_threats_",
			sent:    "Threat events delivered to the controller.",
			dropped: "Threat events dropped because the queue was full or the controller kept refusing them.",
			failed:  "Threat batches the controller did not accept.",
			queued:  "Threat events waiting to be sent.",
		})
		if err != nil {
			return nil, fmt.Errorf("threat batcher: register metrics: %w (one ThreatBatcher per registry)", err)
		}
	}
	return &ThreatBatcher{q: q}, nil
}

// Add queues ev; when the queue is full ev is dropped and counted.
func (b *ThreatBatcher) Add(ev *xdsv1.ThreatEvent) { b.q.add(ev) }

// Stats returns the counters.
func (b *ThreatBatcher) Stats() BatcherStats { return b.q.Stats() }

// Run sends batches until ctx ends, then tries one last flush bounded by SendTimeout.
func (b *ThreatBatcher) Run(ctx context.Context) error { return b.q.run(ctx) }
