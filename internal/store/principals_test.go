package store

import (
	"context"
	"testing"
	"time"
)

func TestPrincipalsByTokenAndName(t *testing.T) {
	ctx := context.Background()
	b, p := openTemp(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	admin := PrincipalRecord{Name: "alice", Role: "admin", CreatedAt: now}
	h := HashToken("api-token")
	if err := b.PutPrincipalToken(ctx, h, admin); err != nil {
		t.Fatal(err)
	}
	// A second principal under the same token hash would let one token act as two.
	if err := b.PutPrincipalToken(ctx, h, PrincipalRecord{Name: "mallory", Role: "admin"}); err == nil {
		t.Fatal("a second principal was stored under an existing token hash")
	}
	editor := PrincipalRecord{Name: "spiffe://td/ns/shop/sa/ci", Role: "editor", Namespace: "shop", CreatedAt: now}
	if err := b.PutPrincipalName(ctx, editor); err != nil {
		t.Fatal(err)
	}
	editor.Role = "viewer" // names are rebound, not refused
	if err := b.PutPrincipalName(ctx, editor); err != nil {
		t.Fatal(err)
	}
	b.Close()

	b2, err := OpenBolt(p)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if got, ok, err := b2.PrincipalByToken(ctx, h); err != nil || !ok || got != admin {
		t.Fatalf("by token after reopen: %+v %v %v, want %+v", got, ok, err, admin)
	}
	if _, ok, err := b2.PrincipalByToken(ctx, HashToken("other")); err != nil || ok {
		t.Fatalf("unknown token: ok=%v err=%v", ok, err)
	}
	if got, ok, err := b2.PrincipalByName(ctx, editor.Name); err != nil || !ok || got != editor {
		t.Fatalf("by name after reopen: %+v %v %v, want %+v", got, ok, err, editor)
	}
	if _, ok, err := b2.PrincipalByName(ctx, "nobody"); err != nil || ok {
		t.Fatalf("unknown name: ok=%v err=%v", ok, err)
	}
}
