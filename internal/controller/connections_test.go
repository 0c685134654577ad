package controller

import (
	"container/heap"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/learn"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/registry"
	"github.com/meshguard/meshguard/internal/xds"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// emptyDirectory knows no workload: every report side is an address.
type emptyDirectory struct{}

func (emptyDirectory) Workload(string, string) (registry.Workload, bool) {
	return registry.Workload{}, false
}
func (emptyDirectory) ByIP(netip.Addr) (registry.Workload, bool)   { return registry.Workload{}, false }
func (emptyDirectory) BySPIFFEID(string) (registry.Workload, bool) { return registry.Workload{}, false }
func (emptyDirectory) GroupsOf(string, string) []string            { return nil }
func (emptyDirectory) ServiceByVIP(netip.Addr) (registry.Service, bool) {
	return registry.Service{}, false
}

type fixedPolicy struct{ p *policy.Policy }

func (f fixedPolicy) Policy() *policy.Policy { return f.p }

type noObserver struct{}

func (noObserver) Observe(learn.Observation) bool { return false }

type discard struct{}

func (discard) Emit(context.Context, events.Event) {}

func newTestConnections(tb testing.TB) *Connections {
	tb.Helper()
	p, err := policy.Compile(&policy.Set{}, policy.CompileOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	c, err := NewConnections(ConnectionsConfig{Directory: emptyDirectory{}, Policy: fixedPolicy{p}, Learner: noObserver{},
		Events: discard{}, Clock: clockwork.NewFakeClock(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Metrics: prometheus.NewRegistry()})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// report is an inbound connection from 10.x.y.z to 10.255.0.1:port, started at second sec.
func report(src uint32, port uint16, sec int64) *xdsv1.ConnectionReport {
	return &xdsv1.ConnectionReport{Direction: "inbound", Verdict: "allow",
		SourceAddr:      fmt.Sprintf("10.%d.%d.%d:40000", byte(src>>16), byte(src>>8), byte(src)),
		DestinationAddr: "10.255.0.1:8080", DestinationPort: uint32(port), StartUnixNano: sec * int64(time.Second)}
}

// fill puts n distinct flows in c, flow i last seen at second i+1.
func fill(tb testing.TB, c *Connections, n int) {
	tb.Helper()
	from := xds.Node{Namespace: "shop", Workload: "cache"}
	batch := make([]*xdsv1.ConnectionReport, 0, 1024)
	for i := 0; i < n; i++ {
		batch = append(batch, report(uint32(i), 8080, int64(i+1)))
		if len(batch) == cap(batch) || i == n-1 {
			if err := c.HandleReports(context.Background(), from, batch); err != nil {
				tb.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// TestConnectionsEvictLeastRecentlySeen: a full table drops the flow seen longest ago, where
// "seen" is the latest start reported for it, not when it was first inserted.
func TestConnectionsEvictLeastRecentlySeen(t *testing.T) {
	c := newTestConnections(t)
	fill(t, c, maxFlows)
	from := xds.Node{Namespace: "shop", Workload: "cache"}
	// Flow 0 (the oldest insert) is seen again, latest of all; flow 1 is now the oldest.
	if err := c.HandleReports(context.Background(), from, []*xdsv1.ConnectionReport{report(0, 8080, maxFlows+10)}); err != nil {
		t.Fatal(err)
	}
	// A report with an older start than the flow's last sighting leaves its age alone.
	if err := c.HandleReports(context.Background(), from, []*xdsv1.ConnectionReport{report(2, 8080, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := c.HandleReports(context.Background(), from, []*xdsv1.ConnectionReport{report(0, 9090, maxFlows+20), report(0, 9091, maxFlows+21)}); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	conns := c.Connections()
	for _, cn := range conns {
		have[fmt.Sprintf("%s:%d", cn.Source, cn.Port)] = true
	}
	if len(conns) != maxFlows {
		t.Fatalf("%d flows, want the bound %d", len(conns), maxFlows)
	}
	for name, want := range map[string]bool{"10.0.0.0:8080": true, "10.0.0.1:8080": false, "10.0.0.2:8080": false,
		"10.0.0.3:8080": true, "10.0.0.0:9090": true, "10.0.0.0:9091": true} {
		if have[name] != want {
			t.Errorf("flow %s kept = %v, want %v", name, have[name], want)
		}
	}
	for _, cn := range conns {
		if cn.Source == "10.0.0.2" && cn.Port == 8080 {
			t.Fatalf("flow 2 kept with last seen %v", cn.LastSeen)
		}
	}
}

// BenchmarkConnectionsInsertFull is the cost of a report that adds a new flow to a full
// (maxFlows) table, which evicts the least recently seen one: "heap" is the table's own
// eviction, "scan" first finds the victim by scanning the whole table as it used to (then
// removes it, so the report itself evicts nothing), for comparison in the same run.
func BenchmarkConnectionsInsertFull(b *testing.B) {
	for _, scan := range []bool{false, true} {
		name := "heap"
		if scan {
			name = "scan"
		}
		b.Run(name, func(b *testing.B) {
			c := newTestConnections(b)
			fill(b, c, maxFlows)
			from := xds.Node{Namespace: "shop", Workload: "cache"}
			// More sources than the table holds: by the time one comes round again it was
			// evicted, so every report adds a flow.
			srcs := make([]string, 1<<16)
			for i := range srcs {
				srcs[i] = fmt.Sprintf("11.0.%d.%d:40000", byte(i>>8), byte(i))
			}
			r := report(0, 8080, 0)
			batch := []*xdsv1.ConnectionReport{r}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if scan {
					c.mu.Lock()
					e := scanOldest(c.flows)
					heap.Remove(&c.byAge, e.age)
					delete(c.flows, e.key)
					c.mu.Unlock()
				}
				r.SourceAddr = srcs[i%len(srcs)]
				r.StartUnixNano = int64(maxFlows+i+1) * int64(time.Second)
				if err := c.HandleReports(context.Background(), from, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if len(c.flows) != maxFlows || len(c.byAge) != maxFlows {
				b.Fatalf("%d flows, %d in the age heap, want %d", len(c.flows), len(c.byAge), maxFlows)
			}
		})
	}
}

// scanOldest is the eviction the age heap replaced: a scan of the whole table.
func scanOldest(flows map[flowKey]*flowEntry) *flowEntry {
	var oldest *flowEntry
	for _, e := range flows {
		if oldest == nil || e.conn.LastSeen.Before(oldest.conn.LastSeen) {
			oldest = e
		}
	}
	return oldest
}
