// Package identitytest runs a real identity service on loopback for tests of its clients.
package identitytest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/store"
)

// TrustDomain is the trust domain test servers issue for.
var TrustDomain = spiffeid.RequireTrustDomainFromString("test.local")

// Server is a running identity service.
type Server struct {
	Addr    string
	Dir     string
	CA      *identity.CA
	Service *identity.Service
	Events  *events.Ring
	Store   *store.Bolt
	Clock   *clockwork.FakeClock
}

// Start runs an identity service with a fake clock (at the real now) until the test ends;
// opts adjust the service's Config before it is built.
func Start(t testing.TB, ttl time.Duration, opts ...func(*identity.Config)) *Server {
	t.Helper()
	dir := t.TempDir()
	clk := clockwork.NewFakeClockAt(time.Now().Truncate(time.Second))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ca, err := identity.LoadCA(identity.CAConfig{Dir: filepath.Join(dir, "ca"), TrustDomain: TrustDomain, Clock: clk, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenBolt(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ring := events.NewRing(1000)
	cfg := identity.Config{
		CA: ca, JoinTokens: &identity.JoinTokens{Store: st, Clock: clk, TrustDomain: TrustDomain},
		Revocations: st, Events: ring, Clock: clk, Log: log, SVIDTTL: ttl, Listener: ln,
		ServerHosts: []string{"127.0.0.1", "localhost"},
	}
	for _, o := range opts {
		o(&cfg)
	}
	svc, err := identity.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("identity service: %v", err)
		}
		st.Close()
	})
	return &Server{Addr: ln.Addr().String(), Dir: dir, CA: ca, Service: svc, Events: ring, Store: st, Clock: clk}
}

// Token creates a join token for id valid for ttl.
func (s *Server) Token(t testing.TB, id string, ttl time.Duration) string {
	t.Helper()
	tok, _, err := s.Service.CreateToken(context.Background(), id, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Audit returns the audit events recorded so far.
func (s *Server) Audit() []events.Event { return s.Events.List(events.Filter{Kind: events.KindAudit}) }
