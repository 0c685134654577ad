package controller

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"

	"github.com/jonboulle/clockwork"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/store"
)

// principals adapts the store to api.Principals.
type principals struct {
	st    store.Principals
	clock clockwork.Clock
	log   *slog.Logger
}

var _ api.Principals = principals{}

func toPrincipal(r store.PrincipalRecord) api.Principal {
	return api.Principal{Name: r.Name, Role: api.Role(r.Role), Namespace: r.Namespace}
}

func (p principals) record(pr api.Principal) store.PrincipalRecord {
	return store.PrincipalRecord{Name: pr.Name, Role: string(pr.Role), Namespace: pr.Namespace, CreatedAt: p.clock.Now()}
}

func (p principals) ByTokenHash(h [sha256.Size]byte) (api.Principal, bool) {
	r, ok, err := p.st.PrincipalByToken(context.Background(), store.TokenHash(h))
	if err != nil {
		p.log.Error("principal lookup failed", "err", err)
		return api.Principal{}, false
	}
	return toPrincipal(r), ok
}

func (p principals) ByName(name string) (api.Principal, bool) {
	r, ok, err := p.st.PrincipalByName(context.Background(), name)
	if err != nil {
		p.log.Error("principal lookup failed", "err", err)
		return api.Principal{}, false
	}
	return toPrincipal(r), ok
}

func (p principals) CreateToken(ctx context.Context, pr api.Principal) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := "mgapi_" + base64.RawURLEncoding.EncodeToString(b)
	if err := p.st.PutPrincipalToken(ctx, store.HashToken(tok), p.record(pr)); err != nil {
		return "", err
	}
	return tok, nil
}

func (p principals) Bind(ctx context.Context, pr api.Principal) error {
	return p.st.PutPrincipalName(ctx, p.record(pr))
}
