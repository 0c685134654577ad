package events

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	bolt "go.etcd.io/bbolt"
)

// StoreConfig configures the persistent event store.
type StoreConfig struct {
	Path     string // bbolt file, created 0600 in a 0700 directory
	Clock    clockwork.Clock
	Log      *slog.Logger
	MaxAge   time.Duration // events older than this are deleted; 0 keeps them (count still applies)
	MaxCount int           // at most this many events; default 100000
}

// Store keeps events in bbolt with time and count retention, answers queries by kind and
// time, and lets callers follow new events (`meshguard get events --since 10m --follow`).
// It is an Exporter (BatchExporter): feed it through a Pipeline so Emit never waits on disk.
type Store struct {
	cfg StoreConfig
	db  *bolt.DB

	mu     sync.Mutex
	count  int
	subs   map[*subscription]struct{}
	closed bool

	swept func() // tests: called after each periodic sweep of Run (set before Run starts)
}

var bucketEvents = []byte("events")

// OpenStore opens (or creates) the store file.
func OpenStore(cfg StoreConfig) (*Store, error) {
	if cfg.Path == "" || cfg.Clock == nil || cfg.Log == nil {
		return nil, errors.New("events: store needs Path, Clock and Log")
	}
	if cfg.MaxAge < 0 || cfg.MaxCount < 0 {
		return nil, fmt.Errorf("events: store retention must not be negative (maxAge %v, maxCount %d)", cfg.MaxAge, cfg.MaxCount)
	}
	if cfg.MaxCount == 0 {
		cfg.MaxCount = 100000
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("events: store dir: %w", err)
	}
	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("events: open store %q: %w", cfg.Path, err)
	}
	s := &Store{cfg: cfg, db: db, subs: map[*subscription]struct{}{}}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketEvents)
		if err != nil {
			return err
		}
		s.count = b.Stats().KeyN
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("events: init store %q: %w", cfg.Path, err)
	}
	return s, nil
}

// Close closes the file and ends every subscription.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	for sub := range s.subs {
		delete(s.subs, sub)
		close(sub.ch)
	}
	s.mu.Unlock()
	return s.db.Close()
}

// Name implements Exporter.
func (s *Store) Name() string { return "store" }

// Export implements Exporter.
func (s *Store) Export(_ context.Context, e Event) error { return s.Append(e) }

// ExportBatch implements BatchExporter.
func (s *Store) ExportBatch(_ context.Context, es []Event) error { return s.Append(es...) }

func eventKey(t time.Time, seq uint64) []byte {
	k := make([]byte, 16)
	ns := t.UnixNano()
	if t.IsZero() || ns < 0 {
		ns = 0
	}
	binary.BigEndian.PutUint64(k, uint64(ns))
	binary.BigEndian.PutUint64(k[8:], seq)
	return k
}

// Append stores events in one transaction, applies retention and notifies followers.
// An event without a time is stamped with the store's clock.
func (s *Store) Append(es ...Event) error {
	if len(es) == 0 {
		return nil
	}
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("events: store closed")
	}
	count := s.count
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		for i := range es {
			if es[i].Time.IsZero() {
				es[i].Time = now
			}
			es[i].Evidence = capEvidence(es[i].Evidence)
			v, err := json.Marshal(es[i])
			if err != nil {
				return err
			}
			seq, err := b.NextSequence() // unique even when event times repeat
			if err != nil {
				return err
			}
			if err := b.Put(eventKey(es[i].Time, seq), v); err != nil {
				return err
			}
			count++
		}
		n, err := s.prune(b, now, count)
		count -= n
		return err
	})
	if err != nil {
		return fmt.Errorf("events: store append: %w", err)
	}
	s.count = count
	for sub := range s.subs {
		for _, e := range es {
			if sub.q.matches(e) {
				select {
				case sub.ch <- e:
				default:
					sub.dropped++
				}
			}
		}
	}
	return nil
}

// prune deletes from the oldest end while over count or older than MaxAge.
func (s *Store) prune(b *bolt.Bucket, now time.Time, count int) (int, error) {
	var cutoff uint64
	if s.cfg.MaxAge > 0 {
		if ns := now.Add(-s.cfg.MaxAge).UnixNano(); ns > 0 {
			cutoff = uint64(ns)
		}
	}
	deleted := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.First() {
		if count-deleted <= s.cfg.MaxCount && binary.BigEndian.Uint64(k) >= cutoff {
			break
		}
		if err := c.Delete(); err != nil {
			return deleted, err
		}
		deleted++
	}
	return deleted, nil
}

// Len is how many events the store holds.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Query selects stored events; zero fields match everything.
type Query struct {
	Kind  Kind
	Since time.Time // events at or after this time
	Limit int       // the newest Limit matches; 0 means all
}

func (q Query) matches(e Event) bool {
	return (q.Kind == "" || e.Kind == q.Kind) && (q.Since.IsZero() || !e.Time.Before(q.Since))
}

// Query returns matching events, oldest first.
func (s *Store) Query(q Query) ([]Event, error) {
	var out []Event
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		var floor []byte
		if !q.Since.IsZero() {
			floor = eventKey(q.Since, 0)
		}
		// Newest first, so Limit stops the scan early; reversed at the end.
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			if floor != nil && string(k) < string(floor) {
				break
			}
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("event %x: %w", k, err)
			}
			if !q.matches(e) {
				continue
			}
			out = append(out, e)
			if q.Limit > 0 && len(out) == q.Limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("events: store query: %w", err)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

type subscription struct {
	q       Query
	ch      chan Event
	dropped int
}

// Subscribe follows events appended from now on that match q (Limit is ignored), until ctx
// ends or the store closes; then the channel is closed. A follower that does not keep up
// loses events (buf bounds what waits for it) rather than slowing the store. To show history
// and then follow without a gap, Subscribe first, then Query (an event may appear twice).
func (s *Store) Subscribe(ctx context.Context, q Query, buf int) <-chan Event {
	sub := &subscription{q: q, ch: make(chan Event, max(buf, 1))}
	s.mu.Lock()
	if s.closed {
		close(sub.ch)
		s.mu.Unlock()
		return sub.ch
	}
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		if _, ok := s.subs[sub]; ok {
			delete(s.subs, sub)
			close(sub.ch)
		}
		s.mu.Unlock()
	}()
	return sub.ch
}

// Run applies time retention periodically (appends also apply it), until ctx ends.
func (s *Store) Run(ctx context.Context) error {
	if s.cfg.MaxAge <= 0 {
		<-ctx.Done()
		return nil
	}
	every := min(max(s.cfg.MaxAge/10, time.Second), time.Minute)
	t := s.cfg.Clock.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.Chan():
			if err := s.Sweep(); err != nil {
				s.cfg.Log.Warn("event retention failed", "err", err)
			}
			if s.swept != nil {
				s.swept()
			}
		}
	}
}

// Sweep applies retention now.
func (s *Store) Sweep() error {
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		n, err := s.prune(tx.Bucket(bucketEvents), now, s.count)
		if err == nil {
			s.count -= n
		}
		return err
	})
}
