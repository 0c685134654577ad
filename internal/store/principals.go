package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
)

// PrincipalRecord is an API principal: who, which role, which namespace (namespace editors).
type PrincipalRecord struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Namespace string    `json:"namespace,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// Principals stores API principals by token hash (tokens themselves are never stored) and,
// for client certificates, by name (SPIFFE ID).
type Principals interface {
	PutPrincipalToken(ctx context.Context, h TokenHash, rec PrincipalRecord) error
	PrincipalByToken(ctx context.Context, h TokenHash) (PrincipalRecord, bool, error)
	PutPrincipalName(ctx context.Context, rec PrincipalRecord) error
	PrincipalByName(ctx context.Context, name string) (PrincipalRecord, bool, error)
}

var (
	bucketPrincipalTokens = []byte("api_tokens")
	bucketPrincipalNames  = []byte("api_principals")
)

func (b *Bolt) put(bucket, key []byte, v any, unique bool) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		if unique && bk.Get(key) != nil {
			return errors.New("token collision; create another")
		}
		return bk.Put(key, raw)
	})
}

func (b *Bolt) get(bucket, key []byte, v any) (bool, error) {
	var found bool
	err := b.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		if bk == nil {
			return nil
		}
		raw := bk.Get(key)
		if raw == nil {
			return nil
		}
		found = true
		return json.Unmarshal(raw, v)
	})
	return found, err
}

// PutPrincipalToken implements Principals.
func (b *Bolt) PutPrincipalToken(_ context.Context, h TokenHash, rec PrincipalRecord) error {
	return b.put(bucketPrincipalTokens, h[:], rec, true)
}

// PrincipalByToken implements Principals.
func (b *Bolt) PrincipalByToken(_ context.Context, h TokenHash) (PrincipalRecord, bool, error) {
	var rec PrincipalRecord
	ok, err := b.get(bucketPrincipalTokens, h[:], &rec)
	return rec, ok, err
}

// PutPrincipalName implements Principals (replaces an existing binding).
func (b *Bolt) PutPrincipalName(_ context.Context, rec PrincipalRecord) error {
	return b.put(bucketPrincipalNames, []byte(rec.Name), rec, false)
}

// PrincipalByName implements Principals.
func (b *Bolt) PrincipalByName(_ context.Context, name string) (PrincipalRecord, bool, error) {
	var rec PrincipalRecord
	ok, err := b.get(bucketPrincipalNames, []byte(name), &rec)
	return rec, ok, err
}
