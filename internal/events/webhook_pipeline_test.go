package events

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
)

// TestSlowWebhookBlocksNeitherPublishNorOtherWebhooks: one real webhook server hangs, another
// answers; publishing stays non-blocking, the healthy destination gets every event, and the
// hung destination's overflow is counted.
func TestSlowWebhookBlocksNeitherPublishNorOtherWebhooks(t *testing.T) {
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	hang := make(chan struct{})
	slowSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer slowSrv.Close()
	defer close(hang)
	secret := []byte("k")
	got := make(chan Event, 100)
	okSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !VerifySignature(secret, body, r.Header.Get(HeaderSignature)) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var e Event
		_ = json.Unmarshal(body, &e)
		got <- e
	}))
	defer okSrv.Close()
	clk := clockwork.NewFakeClock()
	slow, _ := NewWebhook(WebhookConfig{Name: "slow", URL: slowSrv.URL, Secret: secret, Clock: clk, Timeout: time.Hour})
	fast, _ := NewWebhook(WebhookConfig{Name: "fast", URL: okSrv.URL, Secret: secret, Clock: clk})
	p, err := NewPipeline(PipelineConfig{Exporters: []Exporter{slow, fast}, Capacity: 8, Registry: prometheus.NewRegistry(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	go p.Run(ctx)
	for i := range 30 {
		returned := make(chan struct{})
		go func() { p.Emit(ctx, threat(strconv.Itoa(i))); close(returned) }()
		select {
		case <-returned:
		case <-time.After(5 * time.Second):
			t.Fatal("Publish blocked behind a hung webhook")
		}
		select { // the healthy webhook delivers each event before the next is published
		case e := <-got:
			if e.Name != strconv.Itoa(i) {
				t.Fatalf("fast webhook got %q, want %d", e.Name, i)
			}
		case <-ctx.Done():
			t.Fatal("healthy webhook starved by the hung one")
		}
	}
	// The hung webhook holds one request and 8 queued events at most; the rest were dropped.
	if d := p.Dropped("slow", DropQueueFull); d < 30-1-8 {
		t.Fatalf("slow drops = %v, want at least 21", d)
	}
	if d := p.Dropped("fast", DropQueueFull); d != 0 {
		t.Fatalf("fast drops = %v", d)
	}
}
