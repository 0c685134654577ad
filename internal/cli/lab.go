package cli

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/lab"
)

// labOptions are the flags every lab verb shares.
type labOptions struct {
	stateDir string
}

func newLabCommand(g *globals) *cobra.Command {
	o := &labOptions{}
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run a local mesh of network-namespace pods on this machine (root)",
		Long: `lab runs a local "cluster" on one Linux machine: each pod is a real process with its own
network, PID, mount and UTS namespace, IP, hostname, labels and service account; services get a
virtual IP and a DNS name <svc>.<ns>.svc.cluster.local. A background daemon owns the lab;
'lab down' removes everything it made. The topology file's optional top-level
'mesh: {permissiveNamespaces: [NS...], egress: allow-any|registry-only, threatDetection: false}'
configures the lab's controller and sidecars (see examples/shop.yaml; threatDetection: false runs
the sidecars without detectors, a benchmark baseline); it is read at 'lab up', so change it with
down + up.
'dns: {zones: [{name: t.example.net, server: NS/POD}]}' delegates a zone to a pod's DNS server
(port 53) or to an ip:port, as a resolver forwards to an authoritative server: how a DNS tunnel
to an "external" pod runs in the lab.

  meshguard lab up -f examples/shop.yaml
  meshguard lab status
  meshguard lab exec client -- curl -s http://web.shop.svc.cluster.local/
  meshguard lab logs web
  meshguard lab down`,
	}
	cmd.PersistentFlags().StringVar(&o.stateDir, "state-dir", labDefaultStateDir(), "lab state directory (default $MESHGUARD_LAB_DIR, else "+lab.DefaultStateDir+")")
	cmd.AddCommand(
		newLabUpCommand(g, o),
		newLabDownCommand(g, o),
		newLabStatusCommand(g, o),
		newLabExecCommand(g, o),
		newLabLogsCommand(g, o),
		newLabDaemonCommand(g, o),
		newLabPodInitCommand(),
	)
	return cmd
}

func labDefaultStateDir() string {
	if d := os.Getenv("MESHGUARD_LAB_DIR"); d != "" {
		return d
	}
	return lab.DefaultStateDir
}

// labRequireRoot refuses to run a lab verb without root, saying why.
func labRequireRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("the lab needs root (it creates network namespaces, a bridge and nftables rules): run it with sudo")
	}
	return nil
}

// labCheckDir refuses state dirs whose removal would be dangerous.
func labCheckDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("--state-dir %q: %w", dir, err)
	}
	if abs == "/" || filepath.Dir(abs) == "/" {
		return "", fmt.Errorf("--state-dir %q: too close to / (lab down removes it); use e.g. %s", dir, lab.DefaultStateDir)
	}
	return abs, nil
}

func labReadState(dir string) (*lab.State, error) {
	s, err := lab.ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errors.New("no lab is running (start one with 'meshguard lab up -f TOPOLOGY.yaml')")
	}
	return s, err
}

// labLookupUser resolves a topology's user name with the host's user database.
func labLookupUser(name string) (uint32, uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, 0, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return 0, 0, err
	}
	return uint32(uid), uint32(gid), nil
}

func labParsePrefix(flag, v string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return p, fmt.Errorf("%s %q: want a CIDR such as 10.244.0.0/24: %w", flag, v, err)
	}
	return p, nil
}
