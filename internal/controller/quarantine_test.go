package controller

import (
	"encoding/json"
	"log/slog"
	"os"
	"testing"

	"github.com/meshguard/meshguard/internal/intercept"
	"github.com/meshguard/meshguard/internal/intercept/nstest"
	"github.com/meshguard/meshguard/internal/lab"
)

type adopted []string

func (a *adopted) Adopt(ns, pod, _ string) { *a = append(*a, ns+"/"+pod) }

// TestAdoptLabQuarantines: after a restart the controller lists the lab pods whose netns
// still holds the quarantine table, and only those.
func TestAdoptLabQuarantines(t *testing.T) {
	p := nstest.NewPair(t) // skips without root
	if _, err := intercept.Quarantine(p.A); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = intercept.Release(p.A) })
	dir := t.TempDir()
	st := lab.State{Version: 1, StateDir: dir, Pods: []lab.PodState{
		{Pod: lab.Pod{Name: "web-0", Namespace: "shop"}, Netns: p.A},
		{Pod: lab.Pod{Name: "cache-0", Namespace: "shop"}, Netns: p.B},
		{Pod: lab.Pod{Name: "gone-0", Namespace: "shop"}, Netns: "/nonexistent/netns"},
		{Pod: lab.Pod{Name: "host-0", Namespace: "shop"}},
	}}
	b, _ := json.Marshal(st)
	if err := os.WriteFile(lab.StatePath(dir), b, 0o600); err != nil {
		t.Fatal(err)
	}
	var got adopted
	adoptLabQuarantines(dir, &got, slog.New(slog.DiscardHandler))
	if len(got) != 1 || got[0] != "shop/web-0" {
		t.Fatalf("adopted %v, want [shop/web-0]", got)
	}
}
