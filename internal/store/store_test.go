package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func openTemp(t *testing.T) (*Bolt, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "state.db")
	b, err := OpenBolt(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, p
}

func TestTokenSingleUseAcrossReopen(t *testing.T) {
	ctx := context.Background()
	b, p := openTemp(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := HashToken("secret")
	if err := b.PutToken(ctx, h, TokenRecord{SPIFFEID: "spiffe://td/ns/a/sa/b", CreatedAt: now, ExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("store file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	// Concurrent consumers: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, used := 0, 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.ConsumeToken(ctx, h, now)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrTokenUsed):
				used++
			default:
				t.Errorf("consume: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || used != 7 {
		t.Fatalf("wins=%d used=%d, want 1 and 7", wins, used)
	}
	b.Close()
	b2, err := OpenBolt(p)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if _, err := b2.ConsumeToken(ctx, h, now); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("after reopen: %v, want ErrTokenUsed", err)
	}
	if _, err := b2.ConsumeToken(ctx, HashToken("other"), now); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("unknown token: %v, want ErrTokenNotFound", err)
	}
}

func TestRevocations(t *testing.T) {
	ctx := context.Background()
	b, _ := openTemp(t)
	if _, ok, err := b.RevokedAt(ctx, "spiffe://td/ns/a/sa/b"); ok || err != nil {
		t.Fatalf("fresh store: ok=%v err=%v", ok, err)
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := b.Revoke(ctx, "spiffe://td/ns/a/sa/b", at); err != nil {
		t.Fatal(err)
	}
	got, ok, err := b.RevokedAt(ctx, "spiffe://td/ns/a/sa/b")
	if err != nil || !ok || !got.Equal(at) {
		t.Fatalf("RevokedAt = %v %v %v", got, ok, err)
	}
}

func TestPolicyRoundTrip(t *testing.T) {
	b, err := OpenBolt(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	if rec, err := b.LoadPolicy(ctx); err != nil || rec.Version != 0 || len(rec.Doc) != 0 {
		t.Fatalf("empty store: %+v %v", rec, err)
	}
	if err := b.SavePolicy(ctx, PolicyRecord{Version: 7, Doc: []byte("kind: Group\n")}); err != nil {
		t.Fatal(err)
	}
	rec, err := b.LoadPolicy(ctx)
	if err != nil || rec.Version != 7 || string(rec.Doc) != "kind: Group\n" {
		t.Fatalf("got %+v %v", rec, err)
	}
}
