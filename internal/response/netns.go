package response

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/meshguard/meshguard/internal/intercept"
)

// NetnsQuarantiner is the production Quarantiner: intercept's nftables quarantine table in
// the pod's network namespace (established connections cut, processes left running).
type NetnsQuarantiner struct {
	// NetnsPath resolves a pod to its network namespace path (the node agent knows it).
	NetnsPath func(namespace, pod string) (string, error)
	// Options keep the pod's sidecar channel to the controller open (its mark and the
	// controller's addresses); the zero value cuts everything.
	Options intercept.QuarantineOptions
	Log     *slog.Logger
}

// Quarantine implements Quarantiner.
func (q NetnsQuarantiner) Quarantine(_ context.Context, namespace, pod string) error {
	path, err := q.path(namespace, pod)
	if err != nil {
		return err
	}
	res, err := intercept.QuarantineWith(path, q.Options)
	if q.Log != nil {
		q.Log.Info("quarantine", "workload", namespace+"/"+pod, "socketsKilled", res.SocketsKilled, "err", err)
	}
	return err
}

// Release implements Quarantiner.
func (q NetnsQuarantiner) Release(_ context.Context, namespace, pod string) error {
	path, err := q.path(namespace, pod)
	if err != nil {
		return err
	}
	return intercept.Release(path)
}

func (q NetnsQuarantiner) path(namespace, pod string) (string, error) {
	if q.NetnsPath == nil {
		return "", errors.New("response: NetnsQuarantiner.NetnsPath is required")
	}
	p, err := q.NetnsPath(namespace, pod)
	if err != nil {
		return "", fmt.Errorf("response: network namespace of %s/%s: %w", namespace, pod, err)
	}
	return p, nil
}
