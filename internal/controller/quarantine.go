package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/intercept"
	"github.com/meshguard/meshguard/internal/lab"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/response"
)

// DefaultSidecarMark is sidecar.DefaultMark: the SO_MARK on a sidecar's own sockets, which a
// quarantine lets through to the controller (the sidecar package is not imported here: the
// controller does not link the data path).
const DefaultSidecarMark = 0x539

// QuarantineEngine is what the quarantine API needs from the response engine.
type QuarantineEngine interface {
	Quarantine(ctx context.Context, ns, pod, reason string) error
	Release(ctx context.Context, ns, pod string) error
	Quarantined() []response.QuarantineStatus
}

// quarantines implements api.Quarantines over the response engine, so manual and automatic
// quarantines share one state (one nftables table, one audit trail).
type quarantines struct {
	engine    QuarantineEngine
	workloads func(namespace, name string) bool
}

var _ api.Quarantines = quarantines{}

func (q quarantines) known(ns, name string) error {
	if !q.workloads(ns, name) {
		return api.NotFound(fmt.Errorf("no workload %s (see 'meshguard get workloads')", policy.Key(ns, name)))
	}
	return nil
}

// Quarantine implements api.Quarantines; a workload already quarantined keeps its first
// reason and time.
func (q quarantines) Quarantine(ctx context.Context, ns, name, reason string) (api.QuarantineStatus, error) {
	if err := q.known(ns, name); err != nil {
		return api.QuarantineStatus{}, err
	}
	if err := q.engine.Quarantine(ctx, ns, name, reason); err != nil {
		// Admin-only route: the cause (no netns, no privileges) is what the admin must fix.
		return api.QuarantineStatus{}, &api.StatusError{Status: http.StatusInternalServerError, Err: err}
	}
	key := policy.Key(ns, name)
	for _, s := range q.Quarantined() {
		if s.Workload == key {
			return s, nil
		}
	}
	return api.QuarantineStatus{}, errors.New("quarantine applied but not listed") // cannot happen: the engine marks first
}

// Release implements api.Quarantines.
func (q quarantines) Release(ctx context.Context, ns, name string) error {
	if err := q.known(ns, name); err != nil {
		return err
	}
	if err := q.engine.Release(ctx, ns, name); err != nil {
		return &api.StatusError{Status: http.StatusInternalServerError, Err: err}
	}
	return nil
}

// Quarantined implements api.Quarantines.
func (q quarantines) Quarantined() []api.QuarantineStatus {
	list := q.engine.Quarantined()
	out := make([]api.QuarantineStatus, len(list))
	for i, s := range list {
		out[i] = api.QuarantineStatus{Workload: s.Workload, Since: s.Since, Reason: s.Reason}
	}
	return out
}

// netnsQuarantiner is the production quarantiner: nftables in the pod's network namespace,
// found in the lab's state (the node agent will resolve it in a cluster). The sidecar keeps
// its marked channel to the controller's own listeners.
func netnsQuarantiner(labStateDir string, mark uint32, controller []net.Addr, log *slog.Logger) response.NetnsQuarantiner {
	opts := intercept.QuarantineOptions{AllowMark: mark}
	for _, a := range controller {
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil || ap.Addr().IsUnspecified() || ap.Addr().IsLoopback() {
			// A wildcard or loopback listener has no address a pod dials: nothing to allow.
			log.Warn("quarantined sidecars cannot reach this controller listener (bind it to the address pods dial)", "listener", a.String())
			continue
		}
		opts.AllowTo = append(opts.AllowTo, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return response.NetnsQuarantiner{Options: opts, Log: log, NetnsPath: func(ns, pod string) (string, error) {
		if labStateDir == "" {
			return "", errors.New("no network namespace resolver: quarantine needs the lab (--lab-state-dir) or a node agent")
		}
		return lab.PodNetns(labStateDir, policy.Key(ns, pod))
	}}
}

// Adopter takes quarantines found in place (response.Engine.Adopt).
type Adopter interface {
	Adopt(ns, pod, reason string)
}

// adoptLabQuarantines lists, after a controller restart, the lab pods whose network namespace
// still holds the quarantine table, so status shows them and release works as before.
// Unreadable state or namespaces are skipped: a pod that cannot be checked is not listed.
func adoptLabQuarantines(labStateDir string, eng Adopter, log *slog.Logger) {
	st, err := lab.ReadState(labStateDir)
	if err != nil {
		log.Debug("quarantines not restored", "err", err)
		return
	}
	for _, p := range st.Pods {
		if p.Netns == "" {
			continue // "" would mean the controller's own namespace
		}
		ok, err := intercept.TableExists(p.Netns, intercept.QuarantineTable)
		if err != nil || !ok {
			continue
		}
		eng.Adopt(p.Namespace, p.Name, "found in place at controller start")
		log.Info("quarantine found in place", "workload", policy.Key(p.Namespace, p.Name))
	}
}
