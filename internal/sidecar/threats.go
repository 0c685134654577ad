package sidecar

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	mgcap "github.com/meshguard/meshguard/internal/capture"
	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/response"
	"github.com/meshguard/meshguard/internal/threat"
	"github.com/meshguard/meshguard/internal/threat/dlp"
	"github.com/meshguard/meshguard/internal/threat/waf"
)

// ThreatReporter queues threat events for the controller (xds.ThreatBatcher); Add must never
// block the data path.
type ThreatReporter interface{ Add(*xdsv1.ThreatEvent) }

// CaptureUploader sends a finished capture to the controller (xds.Client.UploadCapture).
type CaptureUploader interface {
	UploadCapture(context.Context, *xdsv1.UploadCaptureRequest) error
}

// maxUploadPCAP is the largest pcap the controller accepts in one upload.
const maxUploadPCAP = 48 << 20

// ThreatsConfig configures the sidecar's threat detection and response.
type ThreatsConfig struct {
	Workload string      // "ns/name" of this sidecar's pod
	Self     spiffeid.ID // this sidecar's identity
	Clock    clockwork.Clock
	Log      *slog.Logger
	// Reporter gets every non-suppressed threat; nil: threats are only counted and logged.
	Reporter ThreatReporter
	// Capture is the sidecar's capture manager; nil: capture is disabled (capture actions
	// log a warning).
	Capture *mgcap.Manager
	// Uploader sends triggered and on-demand captures; nil: they stay in the local store.
	Uploader CaptureUploader
	Metrics  prometheus.Registerer // nil: no metrics
	HTTP     threat.HTTPConfig
	Flood    threat.FloodConfig // Clock defaults to Clock
	DNS      threat.DNSConfig   // Clock defaults to Clock
	// UploadTimeout bounds waiting for a triggered capture and uploading it; default 2m.
	UploadTimeout time.Duration
}

// Threats is the sidecar's threat engine: the built-in detectors (always on), the groups'
// sensors from the current snapshot (only when configured), the response decision and the
// side effects the data path owns (capture trigger and upload, reports). One per sidecar,
// shared by every stream and the DNS proxy; safe for concurrent use.
type Threats struct {
	cfg   ThreatsConfig
	http  *threat.HTTPDetectors
	dns   *threat.DNSDetector
	flood *threat.FloodDetector
	msg   threat.MessageDetectors
	wafs  *waf.Pool
	view  atomic.Pointer[threatView]
	total *prometheus.CounterVec

	connPrefix string
	connSeq    atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	uploading map[string]bool // capture IDs with an upload goroutine
}

// NewThreats builds the detectors; sensors come with the first Apply.
func NewThreats(cfg ThreatsConfig) (*Threats, error) {
	if cfg.Clock == nil || cfg.Log == nil {
		return nil, errors.New("sidecar: threats: Clock and Log are required")
	}
	if cfg.Workload == "" {
		return nil, errors.New("sidecar: threats: Workload (ns/name) is required")
	}
	if cfg.UploadTimeout <= 0 {
		cfg.UploadTimeout = 2 * time.Minute
	}
	if cfg.Flood.Clock == nil {
		cfg.Flood.Clock = cfg.Clock
	}
	if cfg.DNS.Clock == nil {
		cfg.DNS.Clock = cfg.Clock
	}
	h, err := threat.NewHTTP(cfg.HTTP)
	if err != nil {
		return nil, fmt.Errorf("sidecar: threats: %w", err)
	}
	d, err := threat.NewDNS(cfg.DNS)
	if err != nil {
		return nil, fmt.Errorf("sidecar: threats: %w", err)
	}
	fl, err := threat.NewFlood(cfg.Flood)
	if err != nil {
		return nil, fmt.Errorf("sidecar: threats: %w", err)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	t := &Threats{cfg: cfg, http: h, dns: d, flood: fl, wafs: waf.NewPool(), uploading: map[string]bool{},
		connPrefix: "c" + hex.EncodeToString(rnd[:]) + "-"}
	// Inbound streams carry no DNS of this pod: the DNS proxy runs the tunnel detector.
	t.msg = threat.MessageDetectors{}
	t.total = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "meshguard", Subsystem: "sidecar", Name: "threats_total",
		Help: "Threats detected by the sidecar, by detector and by what the data path did (block, alert, suppress)."}, []string{"name", "action"})
	if cfg.Metrics != nil {
		if err := cfg.Metrics.Register(t.total); err != nil {
			return nil, fmt.Errorf("sidecar: threats metrics: %w", err)
		}
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.view.Store(&threatView{workload: cfg.Workload, self: cfg.Self})
	return t, nil
}

// Run waits for ctx, then stops the capture uploads still waiting and waits for them.
func (t *Threats) Run(ctx context.Context) error {
	<-ctx.Done()
	t.cancel()
	t.wg.Wait()
	return nil
}

// newConnID names one stream for capture and events; unique within this sidecar's life.
func (t *Threats) newConnID() string {
	return t.connPrefix + strconv.FormatUint(t.connSeq.Add(1), 10)
}

// threatView is what one snapshot says about threats: this workload's mode and groups, the
// response rules and the sensors of its groups.
type threatView struct {
	workload string
	self     spiffeid.ID
	mode     policy.Mode
	group    string // the group events name for this workload
	rules    []policy.ResponseRule
	wafs     []groupWAF
	dlps     []groupDLP
	// admin: rules whose l7 section lists Redis commands or SQL verbs to allow; a request
	// they allow was explicitly permitted, dangerous or not.
	admin map[string]bool
	ips   []netip.Addr
}

type groupWAF struct {
	group string
	w     *waf.WAF
}

type groupDLP struct {
	group string
	d     *dlp.Scanner
}

func (v *threatView) sensors() bool { return len(v.wafs) > 0 || len(v.dlps) > 0 }

// Apply takes a snapshot's threat settings: set is its parsed policy (nil when it carries
// none). A sensor that cannot be built is logged and left out; the rest still applies.
func (t *Threats) Apply(s *xdsv1.Snapshot, set *policy.Set) {
	v := &threatView{workload: t.cfg.Workload, self: t.cfg.Self, mode: modeOf(s.GetSelf().GetMode())}
	for _, ip := range s.GetSelf().GetIps() {
		if a, err := netip.ParseAddr(ip); err == nil {
			v.ips = append(v.ips, a)
		}
	}
	self := s.GetSelf().GetGroups()
	if len(self) > 0 {
		v.group = self[0]
	}
	if set != nil {
		v.rules = set.ResponseRules
		byKey := make(map[string]*policy.Group, len(set.Groups))
		for i := range set.Groups {
			byKey[set.Groups[i].Metadata.Key()] = &set.Groups[i]
		}
		modeGroup := ""
		for _, k := range self {
			g := byKey[k]
			if g == nil {
				continue
			}
			if modeGroup == "" && g.Spec.Mode == v.mode {
				modeGroup = k
			}
			sn := g.Spec.Sensors
			if sn == nil {
				continue
			}
			if sn.WAF != nil {
				w, err := t.wafs.Get(waf.FromPolicy(sn.WAF, t.cfg.Log.With("component", "waf", "group", k)))
				if err != nil {
					t.cfg.Log.Error("waf sensor not applied", "group", k, "err", err)
				} else {
					v.wafs = append(v.wafs, groupWAF{group: k, w: w})
				}
			}
			if sn.DLP != nil {
				d, err := dlp.New(dlp.FromPolicy(sn.DLP))
				if err != nil {
					t.cfg.Log.Error("dlp sensor not applied", "group", k, "err", err)
				} else {
					v.dlps = append(v.dlps, groupDLP{group: k, d: d})
				}
			}
		}
		if modeGroup != "" {
			v.group = modeGroup
		}
		v.admin = map[string]bool{}
		for i := range set.NetworkRules {
			r := &set.NetworkRules[i]
			if l := r.Spec.L7; l != nil && ((l.Redis != nil && len(l.Redis.AllowCommands) > 0) || (l.SQL != nil && len(l.SQL.Verbs) > 0)) {
				v.admin[r.Metadata.Key()] = true
			}
		}
	}
	if t.cfg.Capture != nil {
		// History rings cost memory and a copy of every byte: keep them only while a
		// response rule could ask for a capture of what came before its trigger.
		t.cfg.Capture.SetHistory(wantsCapture(v.rules))
	}
	t.view.Store(v)
}

// wantsCapture says whether any response rule has the capture action.
func wantsCapture(rules []policy.ResponseRule) bool {
	for i := range rules {
		if slices.Contains(rules[i].Spec.Actions, string(response.Capture)) {
			return true
		}
	}
	return false
}

func modeOf(m xdsv1.PolicyMode) policy.Mode {
	switch m {
	case xdsv1.PolicyMode_POLICY_MODE_DISCOVER:
		return policy.ModeDiscover
	case xdsv1.PolicyMode_POLICY_MODE_MONITOR:
		return policy.ModeMonitor
	case xdsv1.PolicyMode_POLICY_MODE_PROTECT:
		return policy.ModeProtect
	}
	return ""
}

// threatScope is what one finding's event says about where it happened.
type threatScope struct {
	view     *threatView
	connID   string
	src, dst events.Endpoint
	protocol string
	l7       string
	// capture target: the connection, else the workload (DNS, which has no stream).
	captureWorkload bool
}

// outcome is what the data path must do about the findings of one chunk or message.
type outcome struct {
	block bool
	why   string // "threat sqli (...)" for the refusal
}

// act decides each finding with the response rules and carries out the data path's part:
// capture trigger, report, metric. It never blocks on the controller.
func (t *Threats) act(sc *threatScope, findings []threat.Finding) outcome {
	var out outcome
	for i := range findings {
		f := &findings[i]
		sensor := sensorAction(sc, f)
		sev := f.Severity
		if sev == 0 {
			if d, ok := threat.Lookup(f.Detector); ok {
				sev = d.Severity
			}
		}
		ev := events.Event{Kind: events.KindThreat, Time: t.cfg.Clock.Now(), Name: f.Detector, Source: sc.src, Destination: sc.dst,
			Protocol: sc.protocol, L7: sc.l7, Severity: events.Severity(sev.String()), Reason: findingReason(f), Evidence: f.Evidence}
		if f.Detector == threat.WAFAnomaly || f.Detector == threat.DLPMatch {
			if g := sensorGroup(sc.view, f); g != "" {
				ev.Destination.Group = g
				if sc.captureWorkload {
					ev.Source.Group = g
				}
			}
		}
		d := response.Decide(sc.view.rules, response.Input{Event: ev, ConnID: sc.connID, Mode: sc.view.mode, SensorAction: sensor})
		verdict := string(d.Verdict())
		t.total.WithLabelValues(f.Detector, verdict).Inc()
		if !d.Report {
			continue
		}
		if d.Block && !out.block {
			out.block, out.why = true, "threat "+f.Detector+" ("+ev.Reason+")"
		}
		ref := ""
		if d.Has(response.Capture) {
			ref = t.trigger(sc, f.Detector)
		}
		t.cfg.Log.Debug("threat", "name", f.Detector, "action", verdict, "conn", sc.connID, "src", sc.src.Address, "reason", ev.Reason, "capture", ref)
		if t.cfg.Reporter == nil {
			continue
		}
		cat := string(f.Category)
		if cat == "" {
			if det, ok := threat.Lookup(f.Detector); ok {
				cat = string(det.Category)
			}
		}
		t.cfg.Reporter.Add(&xdsv1.ThreatEvent{Name: f.Detector, Category: cat, Severity: string(ev.Severity), Action: verdict,
			Reason: ev.Reason, Evidence: capBytes(f.Evidence, events.MaxEvidence), CaptureRef: ref, ConnId: sc.connID,
			SourceSpiffeId: ev.Source.Identity, DestinationSpiffeId: ev.Destination.Identity,
			SourceAddr: ev.Source.Address, DestinationAddr: ev.Destination.Address,
			SourceWorkload: ev.Source.Workload, DestinationWorkload: ev.Destination.Workload,
			SourceGroup: ev.Source.Group, DestinationGroup: ev.Destination.Group,
			Protocol: sc.protocol, L7: sc.l7, TimeUnixNano: ev.Time.UnixNano(), Mode: string(sc.view.mode),
			SensorAction: string(sensor), Rules: d.Rules})
	}
	return out
}

// decideOnly is the verdict for an event that is not reported (a flood past its finding's
// cooldown still has to be refused).
func (t *Threats) decideOnly(sc *threatScope, name string) bool {
	ev := events.Event{Kind: events.KindThreat, Name: name, Source: sc.src, Destination: sc.dst}
	if d, ok := threat.Lookup(name); ok {
		ev.Severity = events.Severity(d.Severity.String())
	}
	return response.Decide(sc.view.rules, response.Input{Event: ev, Mode: sc.view.mode}).Block
}

func sensorAction(sc *threatScope, f *threat.Finding) policy.SensorAction {
	switch f.Detector {
	case threat.WAFAnomaly:
		for _, g := range sc.view.wafs {
			return g.w.Config().Action
		}
	case threat.DLPMatch:
		for _, g := range sc.view.dlps {
			return g.d.Config().Action
		}
	}
	return ""
}

func sensorGroup(v *threatView, f *threat.Finding) string {
	if f.Detector == threat.WAFAnomaly && len(v.wafs) > 0 {
		return v.wafs[0].group
	}
	if f.Detector == threat.DLPMatch && len(v.dlps) > 0 {
		return v.dlps[0].group
	}
	return ""
}

// findingReason is the finding in one short line: where it matched and what.
func findingReason(f *threat.Finding) string {
	r := f.Location
	if f.Message != "" {
		if r != "" {
			r += ": "
		}
		r += f.Message
	}
	if len(r) > 200 {
		r = r[:200]
	}
	return r
}

func capBytes(b []byte, n int) []byte {
	if len(b) > n {
		b = b[:n]
	}
	return bytes.Clone(b)
}

// trigger starts a capture for the finding's connection (or this workload) and, once, a
// goroutine that uploads it when written. It returns the capture ID, "" when none started.
func (t *Threats) trigger(sc *threatScope, reason string) string {
	mgr := t.cfg.Capture
	if mgr == nil {
		t.cfg.Log.Warn("a response rule asks for a capture but capture is disabled (start the sidecar with --capture-dir)", "threat", reason)
		return ""
	}
	req := mgcap.Request{ConnID: sc.connID, Reason: reason}
	if sc.captureWorkload || sc.connID == "" {
		req = mgcap.Request{Workload: t.cfg.Workload, Reason: reason}
	}
	id, err := mgr.Trigger(req)
	if err != nil {
		t.cfg.Log.Warn("capture not started", "threat", reason, "conn", sc.connID, "err", err)
		return ""
	}
	t.mu.Lock()
	started := t.uploading[id]
	t.uploading[id] = true
	t.mu.Unlock()
	if !started {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.uploadTriggered(id)
			t.mu.Lock()
			delete(t.uploading, id)
			t.mu.Unlock()
		}()
	}
	return id
}

func (t *Threats) uploadTriggered(id string) {
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.UploadTimeout)
	defer cancel()
	mgr := t.cfg.Capture
	if err := mgr.Wait(ctx, id); err != nil {
		t.cfg.Log.Warn("capture not written", "capture", id, "err", err)
		return
	}
	if t.cfg.Uploader == nil {
		return
	}
	info, err := mgr.Store().Get(id)
	if err != nil {
		t.cfg.Log.Warn("capture not found after writing", "capture", id, "err", err)
		return
	}
	req := uploadRequest(info, "")
	if req.Pcap, err = t.readPCAP(id); err != nil {
		t.cfg.Log.Warn("capture not uploaded", "capture", id, "err", err)
		return
	}
	if err := t.cfg.Uploader.UploadCapture(ctx, req); err != nil {
		t.cfg.Log.Warn("capture upload failed; it stays in the sidecar's store", "capture", id, "err", err)
		return
	}
	t.cfg.Log.Info("capture uploaded", "capture", id, "reason", info.Reason, "bytes", len(req.Pcap))
}

func (t *Threats) readPCAP(id string) ([]byte, error) {
	rc, err := t.cfg.Capture.Store().Open(id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxUploadPCAP+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxUploadPCAP {
		return nil, fmt.Errorf("pcap of capture %s is over the %d MiB upload limit; fetch it from the sidecar's --capture-dir", id, maxUploadPCAP>>20)
	}
	return b, nil
}

func uploadRequest(info mgcap.Info, requestID string) *xdsv1.UploadCaptureRequest {
	return &xdsv1.UploadCaptureRequest{CaptureId: info.ID, RequestId: requestID, Reason: info.Reason,
		CreatedUnixNano: info.Created.UnixNano(), ConnIds: info.ConnIDs, Connections: uint32(info.Connections), Truncated: info.Truncated}
}

// Capture runs an on-demand capture of this workload (a controller Command) in the
// background and uploads it with requestID; a failure is uploaded as the error.
func (t *Threats) Capture(requestID string, d time.Duration) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		ctx, cancel := context.WithTimeout(t.ctx, d+t.cfg.UploadTimeout)
		defer cancel()
		req := &xdsv1.UploadCaptureRequest{RequestId: requestID}
		if t.cfg.Capture == nil {
			req.Error = "capture is disabled on this sidecar (start it with --capture-dir)"
		} else {
			var buf limitedBuffer
			buf.limit = maxUploadPCAP
			info, err := t.cfg.Capture.CaptureWorkload(ctx, t.cfg.Workload, d, &buf)
			switch {
			case err != nil:
				req.Error = err.Error()
				req.CaptureId = info.ID
			default:
				req = uploadRequest(info, requestID)
				req.Pcap = buf.b
			}
		}
		if t.cfg.Uploader == nil {
			return
		}
		if err := t.cfg.Uploader.UploadCapture(ctx, req); err != nil {
			t.cfg.Log.Warn("on-demand capture upload failed", "request", requestID, "err", err)
		}
	}()
}

// limitedBuffer refuses to grow past limit, so an on-demand capture cannot exhaust memory.
type limitedBuffer struct {
	b     []byte
	limit int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if len(l.b)+len(p) > l.limit {
		return 0, fmt.Errorf("pcap is over the %d MiB upload limit", l.limit>>20)
	}
	l.b = append(l.b, p...)
	return len(p), nil
}

// connIDKey carries a stream's conn ID from the capture wrapper to the inspector.
type connIDKey struct{}

func withConnID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, connIDKey{}, id)
}

func connIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(connIDKey{}).(string)
	return id
}
