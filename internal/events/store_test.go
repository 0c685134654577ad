package events

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

func openStore(t *testing.T, path string, clk clockwork.Clock, maxAge time.Duration, maxCount int) *Store {
	t.Helper()
	s, err := OpenStore(StoreConfig{Path: path, Clock: clk, Log: slog.New(slog.DiscardHandler), MaxAge: maxAge, MaxCount: maxCount})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStoreQueryRetentionAndReopen(t *testing.T) {
	clk := clockwork.NewFakeClockAt(time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC))
	path := filepath.Join(t.TempDir(), "db", "events.db")
	s := openStore(t, path, clk, time.Hour, 5)
	t0 := clk.Now()
	for i := range 4 {
		k := KindViolation
		if i%2 == 1 {
			k = KindThreat
		}
		if err := s.Append(Event{Kind: k, Name: strconv.Itoa(i), Time: t0.Add(time.Duration(i) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := s.Query(Query{Kind: KindViolation})
	if names(got) != "02" {
		t.Fatalf("kind query = %q", names(got))
	}
	got, _ = s.Query(Query{Since: t0.Add(2 * time.Minute)})
	if names(got) != "23" {
		t.Fatalf("since query = %q", names(got))
	}
	got, _ = s.Query(Query{Limit: 3})
	if names(got) != "123" {
		t.Fatalf("limit query = %q (newest 3, oldest first)", names(got))
	}
	// Count retention: two more events push the oldest out.
	_ = s.Append(Event{Kind: KindAudit, Name: "4", Time: t0.Add(4 * time.Minute)}, Event{Kind: KindAudit, Name: "5", Time: t0.Add(5 * time.Minute)})
	if got, _ := s.Query(Query{}); names(got) != "12345" || s.Len() != 5 {
		t.Fatalf("after count retention = %q (len %d)", names(got), s.Len())
	}
	// Time retention: an hour later, events older than t0+3m+... are swept.
	clk.Advance(time.Hour + 3*time.Minute + time.Second)
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Query(Query{}); names(got) != "45" {
		t.Fatalf("after time retention = %q", names(got))
	}
	// An event without a time gets the clock's.
	_ = s.Append(Event{Kind: KindAudit, Name: "6"})
	if got, _ := s.Query(Query{Limit: 1}); !got[0].Time.Equal(clk.Now()) {
		t.Fatalf("stamped time %v, want %v", got[0].Time, clk.Now())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	dst, _ := os.Stat(filepath.Dir(path))
	if st.Mode().Perm() != 0o600 || dst.Mode().Perm() != 0o700 {
		t.Fatalf("modes file %v dir %v", st.Mode().Perm(), dst.Mode().Perm())
	}
	s = openStore(t, path, clk, time.Hour, 5)
	defer s.Close()
	if got, _ := s.Query(Query{}); names(got) != "456" || s.Len() != 3 {
		t.Fatalf("after reopen = %q len %d", names(got), s.Len())
	}
	// Same timestamps stay distinct events (sequence in the key).
	_ = s.Append(Event{Kind: KindAudit, Name: "7", Time: clk.Now()}, Event{Kind: KindAudit, Name: "8", Time: clk.Now()})
	if got, _ := s.Query(Query{Limit: 3}); names(got) != "678" {
		t.Fatalf("same-time events = %q", names(got))
	}
}

func TestStoreRunSweepsOnClock(t *testing.T) {
	clk := clockwork.NewFakeClock()
	s := openStore(t, filepath.Join(t.TempDir(), "e.db"), clk, 10*time.Second, 0)
	defer s.Close()
	_ = s.Append(Event{Kind: KindAudit, Name: "old"})
	swept := make(chan struct{}, 1)
	s.swept = func() { swept <- struct{}{} }
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// Retention 10s: the ticker runs every second; each second of fake time is one sweep.
	for i := 1; s.Len() != 0; i++ {
		if i > 11 {
			t.Fatalf("old event still stored after %d sweeps", i-1)
		}
		clk.Advance(time.Second)
		select {
		case <-swept:
		case <-ctx.Done():
			t.Fatal("no sweep after the ticker fired")
		}
	}
	cancel()
	<-done
}

func TestStoreSubscribe(t *testing.T) {
	clk := clockwork.NewFakeClock()
	s := openStore(t, filepath.Join(t.TempDir(), "e.db"), clk, 0, 0)
	ctx, cancel := context.WithCancel(testCtx(t))
	ch := s.Subscribe(ctx, Query{Kind: KindThreat}, 1)
	_ = s.Append(Event{Kind: KindAudit, Name: "a"}, Event{Kind: KindThreat, Name: "t1"}, Event{Kind: KindThreat, Name: "t2"})
	if e := <-ch; e.Name != "t1" {
		t.Fatalf("followed %q", e.Name)
	}
	// t2 did not fit the 1-slot buffer: dropped for this follower, never blocking Append.
	_ = s.Append(Event{Kind: KindThreat, Name: "t3"})
	if e := <-ch; e.Name != "t3" {
		t.Fatalf("followed %q, want t3", e.Name)
	}
	cancel()
	for range ch { // closed when ctx ends
	}
	ch2 := s.Subscribe(context.Background(), Query{}, 4)
	s.Close()
	if _, ok := <-ch2; ok {
		t.Fatal("subscription open after Close")
	}
}
