package sidecar

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/xds"
)

const admitPolicy = `apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: web, namespace: shop}
spec: {mode: protect}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: client, namespace: shop}
spec: {mode: discover}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: other, namespace: shop}
spec: {mode: discover}
---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: client-to-web, namespace: shop}
spec: {from: {group: client}, to: {group: web}, ports: [tcp/8080], applications: [any], action: allow}
`

func TestPolicyAdmitterEnforcesTheSnapshotPolicy(t *testing.T) {
	snap := &xdsv1.Snapshot{
		Self: &xdsv1.Workload{Namespace: "shop", Name: "web", SpiffeId: "spiffe://cluster.local/ns/shop/sa/web", Ips: []string{"10.0.0.2"}, Groups: []string{"shop/web"}},
		Peers: []*xdsv1.Workload{
			{Namespace: "shop", Name: "client", SpiffeId: "spiffe://cluster.local/ns/shop/sa/client", Ips: []string{"10.0.0.3"}, Groups: []string{"shop/client"}, TunnelPort: 15008},
			{Namespace: "shop", Name: "other", SpiffeId: "spiffe://cluster.local/ns/shop/sa/other", Ips: []string{"10.0.0.4"}, Groups: []string{"shop/other"}, TunnelPort: 15008},
		},
		Policy: []byte(admitPolicy), PolicyFormat: "yaml", TrustDomain: "cluster.local",
	}
	x, err := xds.NewIndex(snap)
	if err != nil {
		t.Fatal(err)
	}
	pv, err := compilePolicy(policy.NewEngine(policy.CompileOptions{}), snap)
	if err != nil || pv == nil {
		t.Fatalf("compile: %v", err)
	}
	var view atomic.Pointer[policyView]
	view.Store(pv)
	admit := policyAdmitter(&view, func() *xds.Index { return x })
	from := func(id, ip string, port uint16) StreamInfo {
		return StreamInfo{Direction: Inbound, Authenticated: true, Source: spiffeid.RequireFromString(id),
			SourceAddr: netip.MustParseAddrPort(ip + ":40000"), DestPort: port}
	}
	if err := admit(context.Background(), from("spiffe://cluster.local/ns/shop/sa/client", "10.0.0.3", 8080)); err != nil {
		t.Errorf("client -> web:8080 is allowed by a rule, got %v", err)
	}
	for name, s := range map[string]StreamInfo{
		"other group":        from("spiffe://cluster.local/ns/shop/sa/other", "10.0.0.4", 8080),
		"port not in rule":   from("spiffe://cluster.local/ns/shop/sa/client", "10.0.0.3", 9090),
		"unauthenticated":    {Direction: Inbound, SourceAddr: netip.MustParseAddrPort("10.9.9.9:1"), DestPort: 8080},
		"identity, wrong ip": from("spiffe://cluster.local/ns/shop/sa/other", "10.0.0.3", 8080),
	} {
		err := admit(context.Background(), s)
		if !errors.Is(err, errPolicyDenied) || !strings.Contains(err.Error(), "protect") {
			t.Errorf("%s: err %v, want a protect-mode denial", name, err)
		}
	}

	// No policy in the snapshot: nothing to enforce.
	empty, err := compilePolicy(policy.NewEngine(policy.CompileOptions{}), &xdsv1.Snapshot{Self: snap.Self})
	if err != nil || empty != nil {
		t.Fatalf("empty policy: %v, %v", empty, err)
	}
	view.Store(nil)
	if err := admit(context.Background(), from("spiffe://cluster.local/ns/shop/sa/other", "10.0.0.4", 8080)); err != nil {
		t.Errorf("without a policy everything authenticated is admitted, got %v", err)
	}
	if _, err := compilePolicy(policy.NewEngine(policy.CompileOptions{}), &xdsv1.Snapshot{Self: snap.Self, Policy: []byte("kind: [")}); err == nil {
		t.Error("a broken policy must be rejected (NACK)")
	}
}
