package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/lab"
)

// newLabDaemonCommand is the long-running lab process `lab up` starts detached. It hosts the
// DNS server, supervises pods and system processes, and tears everything down on SIGTERM.
func newLabDaemonCommand(g *globals, o *labOptions) *cobra.Command {
	var (
		readyFD  int
		epTimout time.Duration
		svidTTL  time.Duration
	)
	cmd := &cobra.Command{
		Use:    "daemon",
		Short:  "Internal: the lab's supervisor process (started by 'lab up')",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := labRequireRoot(); err != nil {
				return err
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			cfg := lab.DaemonConfig{StateDir: o.stateDir, Self: self, Log: log, EndpointTimeout: epTimout}
			if epTimout == 0 {
				cfg.EndpointTimeout = -1
			}
			if readyFD > 0 {
				syscall.CloseOnExec(readyFD) // pods and system processes must not inherit it
				cfg.Ready = os.NewFile(uintptr(readyFD), "ready")
			}
			if c, _, err := cmd.Root().Find([]string{"controller"}); err == nil && c.Name() == "controller" {
				cfg.System = labControllerSpec(g, svidTTL)
				cfg.Sidecars = labSidecars{g: g}
			} else {
				log.Warn("no controller command in this build; the lab runs without a controller")
			}
			d, err := lab.NewDaemon(cfg)
			if err != nil {
				return err
			}
			return d.Run(cmd.Context())
		},
	}
	cmd.Flags().IntVar(&readyFD, "ready-fd", 0, "file descriptor to report readiness on")
	cmd.Flags().DurationVar(&svidTTL, "svid-ttl", 0, "passed to the lab's controller (0: its default)")
	cmd.Flags().DurationVar(&epTimout, "wait-endpoints", time.Minute, "wait this long for service endpoints to accept connections (0: do not wait)")
	return cmd
}

// labControllerSpec runs the controller on the bridge gateway, its data under the lab dir.
func labControllerSpec(g *globals, svidTTL time.Duration) func(s *lab.State) []lab.SystemSpec {
	return func(s *lab.State) []lab.SystemSpec {
		var extra []string
		if svidTTL > 0 {
			extra = []string{"--svid-ttl", svidTTL.String()}
		}
		// The topology's mesh: settings, validated by the parser; the controller checks again.
		if ns := s.Mesh.PermissiveNamespaces; len(ns) > 0 {
			extra = append(extra, "--mtls-permissive", strings.Join(ns, ","))
		}
		if s.Mesh.Egress != "" {
			extra = append(extra, "--egress", s.Mesh.Egress)
		}
		return []lab.SystemSpec{{
			Name: "controller",
			Args: append([]string{"controller",
				"--data-dir", filepath.Join(s.StateDir, "controller"),
				"--listen-api", s.Gateway + ":7443",
				"--listen-identity", s.Gateway + ":7444",
				"--listen-xds", s.Gateway + ":7445",
				"--lab-state", s.StateDir,
				"--log-level", g.logLevel,
			}, extra...),
			ReadyLine: "ready",
			Timeout:   60 * time.Second,
			LogFile:   filepath.Join(s.StateDir, "controller.log"),
		}}
	}
}

// newLabPodInitCommand is re-executed by the daemon as PID 1 of each pod's new namespaces; it
// sets the pod up and execs the pod's command (see lab.PodInit).
func newLabPodInitCommand() *cobra.Command {
	var cfg lab.PodInitConfig
	var uid, gid uint64
	cmd := &cobra.Command{
		Use:    "pod-init --netns PATH --hostname NAME --dir DIR --uid N --gid N -- CMD...",
		Short:  "Internal: become a pod's command inside its namespaces",
		Hidden: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 || len(args) == 0 {
				return errors.New("usage: lab pod-init [flags] -- CMD...")
			}
			if uid > 1<<32-2 || gid > 1<<32-2 {
				return fmt.Errorf("--uid %d / --gid %d out of range", uid, gid)
			}
			cfg.UID, cfg.GID, cfg.Command = uint32(uid), uint32(gid), args
			return lab.PodInit(cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Netns, "netns", "", "network namespace path to join")
	f.StringVar(&cfg.Hostname, "hostname", "", "pod hostname")
	f.StringVar(&cfg.Dir, "dir", "", "pod dir (resolv.conf, hosts, working dir)")
	f.Uint64Var(&uid, "uid", 0, "uid to run the command as")
	f.Uint64Var(&gid, "gid", 0, "gid to run the command as")
	f.IntVar(&cfg.ReadyFD, "ready-fd", 0, "file descriptor to write \"ok\" to right before exec")
	return cmd
}
