// Package store persists the controller's state. Identity needs two things today: join tokens
// (stored only as SHA-256 hashes, consumed atomically) and revocations. The bbolt implementation
// is the embedded default; a Kubernetes implementation comes later behind the same interfaces.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Errors ConsumeToken returns; callers turn them into user-facing refusals.
var (
	ErrTokenNotFound = errors.New("join token not recognised")
	ErrTokenUsed     = errors.New("join token already used")
)

// TokenHash is the only form in which a join token is stored.
type TokenHash [sha256.Size]byte

// HashToken hashes a join token for storage and lookup.
func HashToken(token string) TokenHash { return sha256.Sum256([]byte(token)) }

// TokenRecord is what a join token is bound to.
type TokenRecord struct {
	SPIFFEID  string    `json:"spiffeId"`
	ExpiresAt time.Time `json:"expiresAt"`
	CreatedAt time.Time `json:"createdAt"`
	UsedAt    time.Time `json:"usedAt,omitzero"`
}

// Tokens stores single-use join tokens.
type Tokens interface {
	PutToken(ctx context.Context, h TokenHash, rec TokenRecord) error
	// ConsumeToken marks the token used at now and returns its record; a second call for the
	// same token returns ErrTokenUsed. Expiry is the caller's decision.
	ConsumeToken(ctx context.Context, h TokenHash, now time.Time) (TokenRecord, error)
}

// Revocations records SPIFFE IDs whose SVIDs issued up to a time may no longer renew.
type Revocations interface {
	Revoke(ctx context.Context, spiffeID string, at time.Time) error
	// RevokedAt returns the latest revocation time of spiffeID, ok=false if never revoked.
	RevokedAt(ctx context.Context, spiffeID string) (at time.Time, ok bool, err error)
}

var (
	bucketTokens      = []byte("join_tokens")
	bucketRevocations = []byte("revocations")
)

// Bolt is the bbolt-backed store; one file in the controller's data directory.
type Bolt struct{ db *bolt.DB }

// OpenBolt opens (creating if needed, mode 0600) the store file at path.
func OpenBolt(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w (is another controller using this --data-dir?)", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketTokens, bucketRevocations} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init store %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

// Close releases the file.
func (b *Bolt) Close() error { return b.db.Close() }

// PutToken implements Tokens.
func (b *Bolt) PutToken(_ context.Context, h TokenHash, rec TokenRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketTokens)
		if bk.Get(h[:]) != nil {
			return errors.New("join token collision; create another")
		}
		// Drop long-expired tokens while here so the bucket does not grow without bound.
		c := bk.Cursor()
		for k, val := c.First(); k != nil; k, val = c.Next() {
			var old TokenRecord
			if json.Unmarshal(val, &old) == nil && rec.CreatedAt.Sub(old.ExpiresAt) > 24*time.Hour {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		return bk.Put(h[:], v)
	})
}

// ConsumeToken implements Tokens; the read-check-mark runs in one write transaction.
func (b *Bolt) ConsumeToken(_ context.Context, h TokenHash, now time.Time) (TokenRecord, error) {
	var rec TokenRecord
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketTokens)
		v := bk.Get(h[:])
		if v == nil {
			return ErrTokenNotFound
		}
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("decode join token record: %w", err)
		}
		if !rec.UsedAt.IsZero() {
			return ErrTokenUsed
		}
		rec.UsedAt = now
		nv, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return bk.Put(h[:], nv)
	})
	return rec, err
}

// Revoke implements Revocations.
func (b *Bolt) Revoke(_ context.Context, spiffeID string, at time.Time) error {
	v, err := at.UTC().MarshalText()
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRevocations).Put([]byte(spiffeID), v)
	})
}

// RevokedAt implements Revocations.
func (b *Bolt) RevokedAt(_ context.Context, spiffeID string) (time.Time, bool, error) {
	var at time.Time
	var ok bool
	err := b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRevocations).Get([]byte(spiffeID))
		if v == nil {
			return nil
		}
		ok = true
		return at.UnmarshalText(v)
	})
	return at, ok, err
}
