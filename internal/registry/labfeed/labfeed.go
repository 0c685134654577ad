// Package labfeed feeds the registry from the lab: it reads the lab's state file (pods with
// namespace, service account, labels and IP; services with VIP, ports and selector) and
// re-reads it when it changes, writing the differences to a registry.Sink.
package labfeed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/meshguard/meshguard/internal/lab"
	"github.com/meshguard/meshguard/internal/registry"
)

// Config configures a Feeder.
type Config struct {
	StateDir string // the lab's state dir (holds state.json)
	Clock    clockwork.Clock
	Log      *slog.Logger
	Poll     time.Duration // how often the file's modification time is checked; default 1s
	// Node names the machine the lab runs on (registry.Workload.Node).
	Node string
}

// Feeder implements registry.Feeder for the lab.
type Feeder struct{ cfg Config }

// New validates cfg.
func New(cfg Config) (*Feeder, error) {
	if cfg.StateDir == "" || cfg.Clock == nil || cfg.Log == nil {
		return nil, errors.New("labfeed: state dir, clock and logger are required")
	}
	if cfg.Poll == 0 {
		cfg.Poll = time.Second
	}
	if cfg.Poll < 0 {
		return nil, fmt.Errorf("labfeed: poll interval %v must be positive", cfg.Poll)
	}
	return &Feeder{cfg: cfg}, nil
}

var _ registry.Feeder = (*Feeder)(nil)

// Run writes the lab's current pods and services to sink, then keeps them in sync until ctx
// ends. A missing state file means an empty lab (not an error): the lab may start later.
func (f *Feeder) Run(ctx context.Context, sink registry.Sink) error {
	var (
		last []byte // the state file as last applied; nil when there is none
		wl   = map[string]registry.Workload{}
		svcs = map[string]registry.Service{}
	)
	tick := f.cfg.Clock.NewTicker(f.cfg.Poll)
	defer tick.Stop()
	for {
		// The file is small and rewritten atomically: comparing bytes is cheaper to get right
		// than modification times, whose granularity can hide a quick second write.
		raw, err := os.ReadFile(lab.StatePath(f.cfg.StateDir))
		switch {
		case err == nil && !bytes.Equal(raw, last):
			st, err := lab.ReadState(f.cfg.StateDir)
			if err != nil {
				f.cfg.Log.Warn("lab state unreadable; keeping the last workloads", "err", err)
				break
			}
			last = raw
			w2, s2 := Convert(st, f.cfg.Node)
			sync(sink, wl, w2, svcs, s2, f.cfg.Log)
			wl, svcs = w2, s2
		case errors.Is(err, os.ErrNotExist) && last != nil:
			sync(sink, wl, nil, svcs, nil, f.cfg.Log)
			wl, svcs, last = map[string]registry.Workload{}, map[string]registry.Service{}, nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.Chan():
		}
	}
}

func sync(sink registry.Sink, oldW, newW map[string]registry.Workload, oldS, newS map[string]registry.Service, log *slog.Logger) {
	for k, w := range oldW {
		if _, ok := newW[k]; !ok {
			sink.DeleteWorkload(w.Namespace, w.Name)
		}
	}
	for k, w := range newW {
		if o, ok := oldW[k]; ok && sameWorkload(o, w) {
			continue
		}
		if err := sink.UpsertWorkload(w); err != nil {
			log.Warn("lab pod not registered", "pod", k, "err", err)
		}
	}
	for k, s := range oldS {
		if _, ok := newS[k]; !ok {
			sink.DeleteService(s.Namespace, s.Name)
		}
	}
	for k, s := range newS {
		if o, ok := oldS[k]; ok && sameService(o, s) {
			continue
		}
		if err := sink.UpsertService(s); err != nil {
			log.Warn("lab service not registered", "service", k, "err", err)
		}
	}
}

func sameWorkload(a, b registry.Workload) bool {
	return a.IP == b.IP && a.ServiceAccount == b.ServiceAccount && a.Node == b.Node && a.Sidecar == b.Sidecar && maps.Equal(a.Labels, b.Labels)
}

func sameService(a, b registry.Service) bool {
	return a.VIP == b.VIP && slices.Equal(a.Ports, b.Ports) && maps.Equal(a.Selector, b.Selector)
}

// Convert turns a lab state into registry workloads and services keyed "ns/name". Pods
// without an address (not created yet) are left out.
func Convert(st *lab.State, node string) (map[string]registry.Workload, map[string]registry.Service) {
	wl := map[string]registry.Workload{}
	for _, p := range st.Pods {
		ip, err := netip.ParseAddr(p.IP)
		if err != nil {
			continue
		}
		sa := p.ServiceAccount
		if sa == "" {
			sa = "default"
		}
		wl[p.Key()] = registry.Workload{Namespace: p.Namespace, Name: p.Name, IP: ip, ServiceAccount: sa,
			Labels: maps.Clone(p.Labels), Node: node, Sidecar: p.Sidecar}
	}
	svcs := map[string]registry.Service{}
	for _, s := range st.Services {
		vip, err := netip.ParseAddr(s.VIP)
		if err != nil {
			continue
		}
		rs := registry.Service{Namespace: s.Namespace, Name: s.Name, VIP: vip, Selector: maps.Clone(s.Selector)}
		for _, p := range s.Ports {
			rs.Ports = append(rs.Ports, registry.ServicePort{Protocol: "tcp", Port: p.Port, TargetPort: p.TargetPort})
		}
		svcs[s.Key()] = rs
	}
	return wl, svcs
}
