package events

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
)

// Webhook headers. The signature is HMAC-SHA256 over the exact body with the shared secret,
// hex-encoded: receivers recompute it (VerifySignature) before trusting the event.
const (
	HeaderSignature = "X-Meshguard-Signature" // "sha256=<hex>"
	HeaderTimestamp = "X-Meshguard-Timestamp" // unix seconds when the attempt was sent
	HeaderEventKind = "X-Meshguard-Event"
)

// WebhookConfig configures one webhook destination. Give each destination its own Webhook
// (and so its own pipeline queue): a slow or failing one then delays nobody else.
type WebhookConfig struct {
	Name        string // exporter name (metrics label); default "webhook:" + host
	URL         string
	Secret      []byte // HMAC key; required (unsigned events could be forged by anyone)
	Client      *http.Client
	Clock       clockwork.Clock
	MaxAttempts int            // default 5
	Backoff     time.Duration  // first retry delay, doubled each attempt; default 500ms
	MaxBackoff  time.Duration  // default 30s
	Timeout     time.Duration  // per attempt; default 10s
	Jitter      func() float64 // in [0,1); default math/rand/v2; tests pass a constant
}

// Webhook POSTs each event as JSON, retrying failures (network errors, 429, 5xx) with
// exponential backoff and jitter up to MaxAttempts.
type Webhook struct{ cfg WebhookConfig }

// NewWebhook validates cfg.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("events: webhook url %q must be an absolute http(s) URL", cfg.URL)
	}
	if len(cfg.Secret) == 0 {
		return nil, fmt.Errorf("events: webhook %s: secret is required (receivers verify %s)", u.Host, HeaderSignature)
	}
	if cfg.Clock == nil {
		return nil, errors.New("events: webhook clock is required (set WebhookConfig.Clock)")
	}
	if cfg.MaxAttempts < 0 || cfg.Backoff < 0 || cfg.MaxBackoff < 0 || cfg.Timeout < 0 {
		return nil, errors.New("events: webhook attempts, backoff and timeout must not be negative")
	}
	if cfg.Name == "" {
		cfg.Name = "webhook:" + u.Host
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	return &Webhook{cfg: cfg}, nil
}

// Name implements Exporter.
func (w *Webhook) Name() string { return w.cfg.Name }

// Sign returns the X-Meshguard-Signature value for body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks a received X-Meshguard-Signature in constant time.
func VerifySignature(secret, body []byte, header string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(header))
}

// permanentError is a failure retrying cannot fix (a 4xx other than 408/429).
type permanentError struct{ error }

// Export implements Exporter: it returns once delivered, after MaxAttempts failures, on a
// permanent failure, or when ctx ends.
func (w *Webhook) Export(ctx context.Context, e Event) error {
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("events: webhook %s: encode event: %w", w.cfg.Name, err)
	}
	sig := Sign(w.cfg.Secret, body)
	delay := w.cfg.Backoff
	for attempt := 1; ; attempt++ {
		err = w.post(ctx, body, sig, e.Kind)
		var perm permanentError
		if err == nil || errors.As(err, &perm) || attempt >= w.cfg.MaxAttempts {
			if err != nil {
				return fmt.Errorf("events: webhook %s: attempt %d: %w", w.cfg.Name, attempt, err)
			}
			return nil
		}
		// Full jitter on the upper half: spreads retries of many sidecars without ever
		// retrying sooner than half the backoff.
		wait := delay/2 + time.Duration(w.cfg.Jitter()*float64(delay/2))
		select {
		case <-ctx.Done():
			return fmt.Errorf("events: webhook %s: %w (last error: %v)", w.cfg.Name, ctx.Err(), err)
		case <-w.cfg.Clock.After(wait):
		}
		delay = min(2*delay, w.cfg.MaxBackoff)
	}
}

func (w *Webhook) post(ctx context.Context, body []byte, sig string, kind Kind) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return permanentError{err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "meshguard-webhook/1")
	req.Header.Set(HeaderSignature, sig)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(w.cfg.Clock.Now().Unix(), 10))
	req.Header.Set(HeaderEventKind, string(kind))
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		// A *url.Error names the whole URL, and webhook URLs often carry their token in the
		// path or query (Slack, Teams); the exporter name already says which host failed.
		var ue *url.Error
		if errors.As(err, &ue) {
			return ue.Err
		}
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500:
		return fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	default:
		return permanentError{fmt.Errorf("status %d (not retried): %s", resp.StatusCode, strings.TrimSpace(string(msg)))}
	}
}
