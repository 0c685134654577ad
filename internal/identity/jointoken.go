package identity

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/store"
)

// Attestor proves, from evidence a workload presents, which SPIFFE ID it may receive. Join
// tokens are the local attestor; Kubernetes service-account tokens come later.
type Attestor interface {
	// Type is the name workloads put in AttestRequest.attestor, e.g. "join_token".
	Type() string
	// Attest returns the attested ID, or a *Refusal saying why not.
	Attest(ctx context.Context, evidence []byte) (spiffeid.ID, error)
}

// Join token limits.
const (
	JoinTokenType       = "join_token"
	DefaultJoinTokenTTL = 10 * time.Minute
	MaxJoinTokenTTL     = 24 * time.Hour
	maxJoinTokenBytes   = 256
)

// JoinTokens creates single-use join tokens bound to one SPIFFE ID and attests with them. Only
// the SHA-256 of a token is stored.
type JoinTokens struct {
	Store       store.Tokens
	Clock       clockwork.Clock
	TrustDomain spiffeid.TrustDomain
}

// Type implements Attestor.
func (j *JoinTokens) Type() string { return JoinTokenType }

// Create makes a token for id valid for ttl (1s..24h) and returns it; the caller shows it once.
func (j *JoinTokens) Create(ctx context.Context, id string, ttl time.Duration) (string, time.Time, error) {
	sid, err := ParseWorkloadID(j.TrustDomain, id)
	if err != nil {
		return "", time.Time{}, refused(codeInvalid, "%v", err)
	}
	if ttl <= 0 || ttl > MaxJoinTokenTTL {
		return "", time.Time{}, refused(codeInvalid, "ttl %v: want more than 0 and at most %v", ttl, MaxJoinTokenTTL)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", time.Time{}, err
	}
	tok := "mgjt_" + base64.RawURLEncoding.EncodeToString(b)
	now := j.Clock.Now()
	rec := store.TokenRecord{SPIFFEID: sid.String(), CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := j.Store.PutToken(ctx, store.HashToken(tok), rec); err != nil {
		return "", time.Time{}, fmt.Errorf("store join token: %w", err)
	}
	return tok, rec.ExpiresAt, nil
}

// Attest implements Attestor: the token is consumed whether or not the rest of the request
// succeeds, so a token is never good for two attempts.
func (j *JoinTokens) Attest(ctx context.Context, evidence []byte) (spiffeid.ID, error) {
	if len(evidence) == 0 {
		return spiffeid.ID{}, refused(codeInvalid, "missing join token")
	}
	if len(evidence) > maxJoinTokenBytes {
		return spiffeid.ID{}, refused(codeInvalid, "join token of %d bytes exceeds the %d-byte limit", len(evidence), maxJoinTokenBytes)
	}
	now := j.Clock.Now()
	rec, err := j.Store.ConsumeToken(ctx, store.HashToken(string(evidence)), now)
	switch {
	case errors.Is(err, store.ErrTokenNotFound), errors.Is(err, store.ErrTokenUsed):
		return spiffeid.ID{}, refused(codeDenied, "%v", err)
	case err != nil:
		return spiffeid.ID{}, fmt.Errorf("join token lookup: %w", err)
	}
	if !now.Before(rec.ExpiresAt) {
		return spiffeid.ID{}, refused(codeDenied, "join token expired at %s", rec.ExpiresAt.UTC().Format(time.RFC3339))
	}
	id, err := spiffeid.FromString(rec.SPIFFEID)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("stored join token id: %w", err)
	}
	return id, nil
}
