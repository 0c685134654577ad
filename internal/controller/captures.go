package controller

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/capture"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/xds"
)

// Controller capture store bounds: uploads beyond them prune the oldest captures.
const (
	captureMaxFiles = 256
	captureMaxBytes = 2 << 30
)

// CommandSender delivers a command to a workload's sidecar (xds.Server.SendCommand).
type CommandSender interface {
	SendCommand(namespace, workload string, cmd *xdsv1.Command) error
}

// captureService stores the pcaps sidecars upload (xds.CaptureSink) and serves them and
// on-demand requests to the API (api.Captures).
type captureService struct {
	store     *capture.Store
	commands  CommandSender
	workloads func(namespace, name string) bool
	clock     clockwork.Clock
	log       *slog.Logger

	mu      sync.Mutex
	waiting map[string]chan captureResult // Command.id -> the API request waiting for the upload
}

type captureResult struct {
	info capture.Info
	err  error
}

var (
	_ xds.CaptureSink = (*captureService)(nil)
	_ api.Captures    = (*captureService)(nil)
)

// HandleCapture implements xds.CaptureSink: the upload is stored under the authenticated
// sidecar's workload (not the one it claims), and wakes the on-demand request it answers.
func (c *captureService) HandleCapture(_ context.Context, from xds.Node, req *xdsv1.UploadCaptureRequest) error {
	workload := policy.Key(from.Namespace, from.Workload)
	res := captureResult{}
	if msg := req.GetError(); msg != "" {
		res.err = fmt.Errorf("the sidecar of %s could not capture: %s", workload, clip(msg, maxTextLen))
	} else {
		info := capture.Info{ID: req.GetCaptureId(), Reason: clip(req.GetReason(), maxTextLen), Workload: workload,
			Connections: int(req.GetConnections()), Truncated: req.GetTruncated(), Created: c.clock.Now().UTC()}
		if ns := req.GetCreatedUnixNano(); ns > 0 {
			if at := time.Unix(0, ns); at.Before(info.Created.Add(maxReportSkew)) {
				info.Created = at.UTC()
			}
		}
		for _, id := range req.GetConnIds() {
			if len(info.ConnIDs) == 256 {
				break
			}
			info.ConnIDs = append(info.ConnIDs, clip(id, maxNameLen))
		}
		if prev, err := c.store.Get(info.ID); err == nil && prev.Workload == workload {
			// A retried upload whose first attempt was stored: answer as the first did.
			res.info = prev
		} else if info, err := c.store.Put(info, bytes.NewReader(req.GetPcap())); err != nil {
			c.log.Warn("capture upload not stored", "sidecar", workload, "capture", req.GetCaptureId(), "err", err)
			res.err = err
		} else {
			c.log.Info("capture stored", "sidecar", workload, "capture", info.ID, "bytes", info.Bytes, "reason", info.Reason)
			res.info = info
		}
	}
	if id := req.GetRequestId(); id != "" {
		c.mu.Lock()
		ch := c.waiting[id]
		delete(c.waiting, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- res // buffered 1, one sender: never blocks
		}
	}
	if req.GetError() != "" {
		return nil // the sidecar's report of its failure was received
	}
	return res.err
}

// Request implements api.Captures: ask the workload's sidecar for a capture of d and wait for
// the upload (or ctx).
func (c *captureService) Request(ctx context.Context, namespace, name string, d time.Duration) (capture.Info, error) {
	key := policy.Key(namespace, name)
	if !c.workloads(namespace, name) {
		return capture.Info{}, api.NotFound(fmt.Errorf("no workload %s (see 'meshguard get workloads')", key))
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := "cap-" + hex.EncodeToString(b[:])
	ch := make(chan captureResult, 1)
	c.mu.Lock()
	c.waiting[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
	}()
	cmd := &xdsv1.Command{Id: id, Cmd: &xdsv1.Command_Capture{Capture: &xdsv1.CaptureCommand{DurationMillis: d.Milliseconds()}}}
	if err := c.commands.SendCommand(namespace, name, cmd); err != nil {
		if errors.Is(err, xds.ErrNoCommandStream) {
			return capture.Info{}, api.Conflict(fmt.Errorf("workload %s has no connected sidecar (pods without a sidecar cannot be captured)", key))
		}
		return capture.Info{}, api.Conflict(err)
	}
	select {
	case r := <-ch:
		return r.info, r.err
	case <-ctx.Done():
		return capture.Info{}, ctx.Err()
	}
}

// List implements api.Captures.
func (c *captureService) List() ([]capture.Info, error) { return c.store.List() }

// Get implements api.Captures.
func (c *captureService) Get(id string) (capture.Info, error) {
	info, err := c.store.Get(id)
	return info, notFound(id, err)
}

// Open implements api.Captures.
func (c *captureService) Open(id string) (io.ReadCloser, error) {
	rc, err := c.store.Open(id)
	return rc, notFound(id, err)
}

func notFound(id string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return api.NotFound(fmt.Errorf("no capture %s (see 'meshguard capture list')", id))
	}
	return err
}
