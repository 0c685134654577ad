package labfeed

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/meshguard/meshguard/internal/lab"
	"github.com/meshguard/meshguard/internal/registry"
)

func writeState(t *testing.T, dir string, pods ...lab.PodState) {
	t.Helper()
	st := lab.State{Version: 1, StateDir: dir, Pods: pods,
		Services: []lab.ServiceState{{Service: lab.Service{Name: "web", Namespace: "shop", Selector: map[string]string{"app": "web"},
			Ports: []lab.ServicePort{{Port: 80, TargetPort: 8080}}}, VIP: "10.96.0.10"}}}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	tmp := lab.StatePath(dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, lab.StatePath(dir)); err != nil {
		t.Fatal(err)
	}
}

func pod(name, app, ip string) lab.PodState {
	return lab.PodState{Pod: lab.Pod{Name: name, Namespace: "shop", ServiceAccount: app, Labels: map[string]string{"app": app}}, IP: ip}
}

func TestFeederFollowsTheStateFile(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg, err := registry.New(registry.Config{Log: log, TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	clock := clockwork.NewFakeClock()
	f, err := New(Config{StateDir: dir, Clock: clock, Log: log, Poll: time.Second, Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	writeState(t, dir, pod("web-0", "web", "10.244.0.2"), pod("cache-0", "cache", "10.244.0.3"), lab.PodState{Pod: lab.Pod{Name: "pending", Namespace: "shop"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Run(ctx, f) }()
	defer func() { cancel(); <-done }()

	wait := func(cond func() bool, what string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for !cond() {
			ch := reg.Changed()
			if cond() {
				return
			}
			select {
			case <-ch:
			case <-time.After(20 * time.Millisecond):
				clock.Advance(time.Second) // next poll
			case <-deadline:
				t.Fatalf("timed out waiting for %s; workloads %+v", what, reg.Workloads())
			}
		}
	}
	wait(func() bool { return len(reg.Workloads()) == 2 && len(reg.Services()) == 1 }, "two workloads and a service")
	w, ok := reg.Workload("shop", "web-0")
	if !ok || w.SPIFFEID != "spiffe://cluster.local/ns/shop/sa/web" || w.Node != "n1" || w.IP.String() != "10.244.0.2" {
		t.Fatalf("web-0: %+v", w)
	}
	if s := reg.Services()[0]; s.VIP.String() != "10.96.0.10" || len(s.Endpoints) != 1 || s.Endpoints[0] != "shop/web-0" {
		t.Fatalf("service: %+v", s)
	}

	// A pod goes, another comes: the registry follows.
	writeState(t, dir, pod("web-0", "web", "10.244.0.2"), pod("web-1", "web", "10.244.0.4"))
	wait(func() bool {
		_, gone := reg.Workload("shop", "cache-0")
		_, there := reg.Workload("shop", "web-1")
		return !gone && there
	}, "cache-0 gone and web-1 registered")

	// The lab goes away entirely.
	if err := os.Remove(lab.StatePath(dir)); err != nil {
		t.Fatal(err)
	}
	wait(func() bool { return len(reg.Workloads()) == 0 && len(reg.Services()) == 0 }, "an empty registry")
}

// Whether a pod runs a sidecar decides how peers reach it (tunnel or plaintext), so it must
// reach the registry, and a change of it alone must be re-registered.
func TestConvertCarriesSidecar(t *testing.T) {
	meshed, bare := pod("web-0", "web", "10.244.0.2"), pod("legacy-0", "legacy", "10.244.0.3")
	meshed.Sidecar = true
	wl, _ := Convert(&lab.State{Pods: []lab.PodState{meshed, bare}}, "n1")
	if !wl["shop/web-0"].Sidecar || wl["shop/legacy-0"].Sidecar {
		t.Fatalf("sidecar flags lost: %+v", wl)
	}
	if sameWorkload(wl["shop/web-0"], registry.Workload{IP: wl["shop/web-0"].IP, ServiceAccount: "web", Node: "n1", Labels: map[string]string{"app": "web"}}) {
		t.Fatal("a workload losing its sidecar compares equal, so the registry would keep tunnelling to it")
	}
}
