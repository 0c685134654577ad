package store

import (
	"context"
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// PolicyRecord is the whole stored policy: its deterministic YAML export (which re-parses to
// the same policy) and the version that increments on every change.
type PolicyRecord struct {
	Version uint64
	Doc     []byte
}

// Policies persists the policy. The controller saves after every validated change and loads
// once at start; a Kubernetes implementation keeps the documents as custom resources instead.
type Policies interface {
	LoadPolicy(ctx context.Context) (PolicyRecord, error) // zero record if none was saved
	SavePolicy(ctx context.Context, rec PolicyRecord) error
}

var (
	bucketPolicy = []byte("policy")
	keyPolicyDoc = []byte("doc")
	keyPolicyVer = []byte("version")
)

// LoadPolicy implements Policies.
func (b *Bolt) LoadPolicy(_ context.Context) (PolicyRecord, error) {
	var rec PolicyRecord
	err := b.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketPolicy)
		if bk == nil {
			return nil
		}
		if v := bk.Get(keyPolicyVer); len(v) == 8 {
			rec.Version = binary.BigEndian.Uint64(v)
		}
		rec.Doc = append([]byte(nil), bk.Get(keyPolicyDoc)...)
		return nil
	})
	return rec, err
}

// SavePolicy implements Policies; document and version change in one transaction.
func (b *Bolt) SavePolicy(_ context.Context, rec PolicyRecord) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketPolicy)
		if err != nil {
			return err
		}
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], rec.Version)
		if err := bk.Put(keyPolicyVer, v[:]); err != nil {
			return err
		}
		return bk.Put(keyPolicyDoc, rec.Doc)
	})
}
