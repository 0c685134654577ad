package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/controller"
	"github.com/meshguard/meshguard/internal/lab"
)

// labSidecars starts a sidecar for every pod with sidecar: true: it creates the pod's join
// token through the lab controller's API and runs `meshguard sidecar` in the pod's netns.
type labSidecars struct{ g *globals }

var _ lab.SidecarLauncher = labSidecars{}

// SidecarSpec implements lab.SidecarLauncher.
func (l labSidecars) SidecarSpec(s *lab.State, p *lab.PodState) (lab.SystemSpec, error) {
	adminPath := filepath.Join(s.StateDir, "controller", "admin.conf")
	gg := *l.g
	gg.configPath = adminPath
	c, err := gg.apiClient()
	if err != nil {
		return lab.SystemSpec{}, fmt.Errorf("lab controller: %w", err)
	}
	adm, err := api.LoadAdminConfig(adminPath)
	if err != nil {
		return lab.SystemSpec{}, err
	}
	sa := p.ServiceAccount
	if sa == "" {
		sa = "default"
	}
	id := fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", controller.DefaultTrustDomain, p.Namespace, sa)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var resp api.CreateTokenResponse
	if err := c.do(ctx, "POST", "/api/v1/tokens", api.CreateTokenRequest{SPIFFEID: id, TTL: "10m"}, &resp); err != nil {
		return lab.SystemSpec{}, fmt.Errorf("join token for %s: %w", id, err)
	}
	// Root-owned 0700 inside the pod dir: the pod's uid owns the pod dir but cannot read this.
	dir := filepath.Join(p.Dir, ".sidecar")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return lab.SystemSpec{}, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return lab.SystemSpec{}, err
	}
	tokenFile := filepath.Join(dir, "join-token")
	if err := os.WriteFile(tokenFile, []byte(resp.Token+"\n"), 0o600); err != nil {
		return lab.SystemSpec{}, fmt.Errorf("write join token: %w", err)
	}
	args := []string{"sidecar",
		"--spiffe-id", id,
		"--namespace", p.Namespace,
		"--workload", p.Name,
		"--identity", adm.Identity,
		"--xds", adm.XDS,
		"--ca-file", adm.CAFile,
		"--join-token-file", tokenFile,
		"--upstream-dns", s.DNS,
		"--state-file", filepath.Join(dir, "config.pb"),
		"--capture-dir", filepath.Join(dir, "captures"),
		// Inside the lab's 3s grace before SIGKILL on lab down.
		"--drain-timeout", "2s",
		"--log-level", l.g.logLevel,
	}
	if s.Mesh.ThreatDetectionOff {
		args = append(args, "--threat-detection=false")
	}
	return lab.SystemSpec{
		Name:      "sidecar:" + p.Key(),
		Args:      args,
		Netns:     p.Netns,
		ReadyLine: "sidecar ready",
		Timeout:   60 * time.Second,
		LogFile:   filepath.Join(s.StateDir, "sidecar-"+p.Namespace+"_"+p.Name+".log"),
	}, nil
}
