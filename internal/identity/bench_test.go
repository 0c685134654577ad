package identity_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshguard/meshguard/internal/identity"
)

// BenchmarkSignSVID measures SVID signings per second (the CA's hot path on mass restarts).
func BenchmarkSignSVID(b *testing.B) {
	ca, err := identity.LoadCA(caConfig(b, b.TempDir(), clockwork.NewRealClock()))
	if err != nil {
		b.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := spiffeid.RequireFromString(testID)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := ca.SignSVID(key.Public(), id, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signings/s")
}
