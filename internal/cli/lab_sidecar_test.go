package cli

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/lab"
)

// The topology's mesh.threatDetection reaches the sidecar's command line, as a flag the
// sidecar command defines (default on).
func TestLabSidecarThreatDetectionFlag(t *testing.T) {
	f := newFakeAPI(t, map[string]http.HandlerFunc{"POST /api/v1/tokens": func(w http.ResponseWriter, _ *http.Request) {
		writeJSONReply(w, http.StatusOK, api.CreateTokenResponse{Token: "tok"})
	}})
	adm, err := api.LoadAdminConfig(f.conf)
	if err != nil {
		t.Fatal(err)
	}
	adm.Identity, adm.XDS = "10.0.0.1:15012", "10.0.0.1:15010"
	stateDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(stateDir, "controller"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := api.WriteAdminConfig(filepath.Join(stateDir, "controller", "admin.conf"), adm); err != nil {
		t.Fatal(err)
	}
	pod := &lab.PodState{Pod: lab.Pod{Name: "app", Namespace: "bench", ServiceAccount: "app"}, Dir: t.TempDir()}
	l := labSidecars{g: &globals{logLevel: "info"}}
	for _, off := range []bool{false, true} {
		st := &lab.State{StateDir: stateDir, DNS: "10.0.0.1:53", Mesh: lab.Mesh{ThreatDetectionOff: off}}
		spec, err := l.SidecarSpec(st, pod)
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Contains(spec.Args, "--threat-detection=false"); got != off {
			t.Errorf("threatDetectionOff=%v: args %q", off, spec.Args)
		}
	}
	fl := newSidecarCommand(&globals{}).Flags().Lookup("threat-detection")
	if fl == nil || fl.DefValue != "true" {
		t.Fatalf("sidecar --threat-detection: %+v, want a flag defaulting to true", fl)
	}
}
