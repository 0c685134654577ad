package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/capture"
	"github.com/meshguard/meshguard/internal/xds"
)

// answeringSidecar plays the sidecar side of a capture command: it uploads (or reports an
// error) through the service, as the xds server would deliver it.
type answeringSidecar struct {
	svc    *captureService
	errMsg string
	stream bool
}

func (a *answeringSidecar) SendCommand(ns, wl string, cmd *xdsv1.Command) error {
	if !a.stream {
		return fmt.Errorf("sidecar %s/%s: %w", ns, wl, xds.ErrNoCommandStream)
	}
	req := &xdsv1.UploadCaptureRequest{CaptureId: "20260101T000000Z-00000000beef", RequestId: cmd.GetId(), Pcap: []byte("pcap"), Error: a.errMsg}
	if a.errMsg != "" {
		req.Pcap = nil
	}
	go func() { _ = a.svc.HandleCapture(context.Background(), xds.Node{Namespace: ns, Workload: wl}, req) }()
	return nil
}

func newCaptureService(t *testing.T) (*captureService, *answeringSidecar) {
	t.Helper()
	st, err := capture.OpenStore(filepath.Join(t.TempDir(), "captures"), 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	svc := &captureService{store: st, workloads: func(ns, name string) bool { return ns == "shop" }, clock: clockwork.NewRealClock(),
		log: slog.New(slog.DiscardHandler), waiting: map[string]chan captureResult{}}
	sc := &answeringSidecar{svc: svc, stream: true}
	svc.commands = sc
	return svc, sc
}

func statusOf(err error) int {
	var se *api.StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

func TestCaptureServiceOnDemand(t *testing.T) {
	svc, sc := newCaptureService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := svc.Request(ctx, "shop", "web-0", time.Second)
	if err != nil || info.Workload != "shop/web-0" || info.Bytes != 4 {
		t.Fatalf("request: %+v %v", info, err)
	}
	rc, err := svc.Open(info.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "pcap" {
		t.Fatalf("stored %q", b)
	}
	// A retried upload of the same capture is answered as stored; another workload cannot
	// reuse the ID.
	up := &xdsv1.UploadCaptureRequest{CaptureId: info.ID, Pcap: []byte("other")}
	if err := svc.HandleCapture(ctx, xds.Node{Namespace: "shop", Workload: "web-0"}, up); err != nil {
		t.Fatalf("retried upload: %v", err)
	}
	if err := svc.HandleCapture(ctx, xds.Node{Namespace: "shop", Workload: "cache-0"}, up); err == nil {
		t.Fatal("another workload overwrote a capture")
	}
	// The sidecar's failure reaches the caller.
	sc.errMsg = "no connections to capture"
	if _, err := svc.Request(ctx, "shop", "web-0", time.Second); err == nil || !strings.Contains(err.Error(), "no connections to capture") {
		t.Fatalf("failed capture: %v", err)
	}
	sc.stream = false
	if _, err := svc.Request(ctx, "shop", "web-0", time.Second); statusOf(err) != http.StatusConflict {
		t.Fatalf("no stream: %v, want 409", err)
	}
	if _, err := svc.Request(ctx, "bank", "vault-0", time.Second); statusOf(err) != http.StatusNotFound {
		t.Fatalf("unknown workload: %v, want 404", err)
	}
	if _, err := svc.Get("20260101T000000Z-000000000000"); statusOf(err) != http.StatusNotFound {
		t.Fatalf("unknown capture: %v, want 404", err)
	}
	if len(svc.waiting) != 0 {
		t.Fatalf("waiters left behind: %d", len(svc.waiting))
	}
}
