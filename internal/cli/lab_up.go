package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/lab"
)

func newLabUpCommand(g *globals, o *labOptions) *cobra.Command {
	var (
		file, podCIDR, svcCIDR          string
		timeout, waitEndpoints, svidTTL time.Duration
	)
	cmd := &cobra.Command{
		Use:   "up -f TOPOLOGY.yaml",
		Short: "Validate a topology and bring the lab up (a stale lab is cleaned first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("-f TOPOLOGY.yaml is required (see examples/shop.yaml)")
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("read topology: %w", err)
			}
			// Validate before anything else, so mistakes are reported even without root.
			topo, err := lab.ParseTopology(file, data, labLookupUser)
			if err != nil {
				return err
			}
			if err := labRequireRoot(); err != nil {
				return err
			}
			dir, err := labCheckDir(o.stateDir)
			if err != nil {
				return err
			}
			pc, err := labParsePrefix("--pod-cidr", podCIDR)
			if err != nil {
				return err
			}
			sc, err := labParsePrefix("--service-cidr", svcCIDR)
			if err != nil {
				return err
			}
			st, err := lab.Plan(topo, dir, pc, sc)
			if err != nil {
				return err
			}
			if old, err := lab.ReadState(dir); err == nil && lab.DaemonAlive(old) {
				return fmt.Errorf("a lab is already running (from %s); run 'meshguard lab down' first", old.TopologyFile)
			} else if err := lab.Cleanup(dir, old); err != nil { // stale or none: remove leftovers
				return fmt.Errorf("clean up a stale lab: %w", err)
			}
			if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
				return err
			}
			if err := lab.WriteState(dir, st); err != nil {
				return err
			}
			if err := labStartDaemon(cmd.Context(), g, dir, timeout, waitEndpoints, svidTTL); err != nil {
				// The daemon cleans up after a failed start; after a timeout or Ctrl-C it
				// may still run: stop it, then remove whatever remains.
				if cur, rerr := lab.ReadState(dir); rerr == nil && lab.DaemonAlive(cur) {
					_ = cur.Daemon.Signal(syscall.SIGTERM)
					cur.Daemon.WaitExit(60 * time.Second)
					_ = lab.Cleanup(dir, cur)
				} else {
					_ = lab.Cleanup(dir, cur)
				}
				return err
			}
			st, err = lab.ReadState(dir)
			if err != nil {
				return err
			}
			if err := labInstallAdminConfig(dir, g.stderr); err != nil {
				return err
			}
			labPrintSummary(g.stdout, st)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "topology file (pods and services)")
	f.StringVar(&podCIDR, "pod-cidr", lab.DefaultPodCIDR.String(), "pod addresses (the first is the bridge gateway)")
	f.StringVar(&svcCIDR, "service-cidr", lab.DefaultServiceCIDR.String(), "service virtual IPs")
	f.DurationVar(&timeout, "timeout", 3*time.Minute, "how long to wait for the lab to be ready")
	f.DurationVar(&svidTTL, "svid-ttl", 0, "lifetime of workload certificates the lab's controller issues (default: the controller's; 5m at least)")
	f.DurationVar(&waitEndpoints, "wait-endpoints", time.Minute, "wait this long for every service endpoint to accept TCP connections (0: do not wait)")
	return cmd
}

// labStartDaemon starts `meshguard lab daemon` detached (own session, output to
// <dir>/daemon.log) and waits for it to report ready on an inherited pipe (fd 3).
func labStartDaemon(ctx context.Context, g *globals, dir string, timeout, waitEndpoints, svidTTL time.Duration) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the meshguard executable: %w", err)
	}
	logPath := filepath.Join(dir, "daemon.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("daemon log: %w", err)
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	cmd := exec.Command(self, "lab", "daemon", "--state-dir", dir, "--ready-fd", "3",
		"--wait-endpoints", waitEndpoints.String(), "--log-level", g.logLevel, "--log-format", g.logFormat)
	if svidTTL > 0 {
		cmd.Args = append(cmd.Args, "--svid-ttl", svidTTL.String())
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("start lab daemon: %w", err)
	}
	pw.Close()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }() // reap it if it dies while we wait
	_ = pr.SetReadDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { _ = pr.SetReadDeadline(time.Now()) }) // Ctrl-C
	defer stop()
	msg, err := bufio.NewReader(io.LimitReader(pr, 64<<10)).ReadString('\n')
	text := strings.TrimSpace(msg)
	if text == "ok" {
		return nil
	}
	tail := labTail(logPath, 20)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("lab not ready within %v (see %s):\n%s", timeout, logPath, tail)
	}
	if text == "" {
		return fmt.Errorf("lab daemon exited before it was ready (daemon log %s):\n%s", logPath, tail)
	}
	return errors.New(strings.TrimPrefix(text, "error: "))
}

func labTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// labConfigBackupSuffix names the user's own ~/.meshguard/config while a lab's replaces it.
const labConfigBackupSuffix = ".before-lab"

// labInstallAdminConfig copies the lab controller's admin.conf to ~/.meshguard/config (0600)
// so other verbs find the lab's controller; a lab without a controller skips it.
func labInstallAdminConfig(dir string, stderr io.Writer) error {
	src := filepath.Join(dir, "controller", "admin.conf")
	b, err := os.ReadFile(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read controller admin config: %w", err)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return fmt.Errorf("find home for ~/.meshguard/config: %w", err)
	}
	dst := filepath.Join(home, ".meshguard", "config")
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	// Keep a config that is not a lab's: lab down puts it back.
	if cur, err := os.ReadFile(dst); err == nil && !bytes.Equal(cur, b) {
		if _, err := os.Stat(dst + labConfigBackupSuffix); errors.Is(err, os.ErrNotExist) {
			if err := os.Rename(dst, dst+labConfigBackupSuffix); err != nil {
				return fmt.Errorf("keep the existing %s: %w", dst, err)
			}
			fmt.Fprintf(stderr, "existing %s saved as %s (lab down restores it)\n", dst, dst+labConfigBackupSuffix)
		}
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	fmt.Fprintf(stderr, "controller admin config written to %s\n", dst)
	return nil
}

func labPrintSummary(w io.Writer, s *lab.State) {
	fmt.Fprintf(w, "lab up: %d pods, %d services (gateway and DNS %s)\n\n", len(s.Pods), len(s.Services), s.Gateway)
	labPrintPods(w, s)
	if len(s.Services) > 0 {
		fmt.Fprintln(w)
		labPrintServices(w, s)
	}
	fmt.Fprintln(w, "\ntry:")
	if client := labClientPod(s); client != "" {
		for _, sv := range s.Services {
			fmt.Fprintf(w, "  meshguard lab exec %s -- %s\n", client, labTryCommand(sv))
		}
	}
	fmt.Fprintln(w, "  meshguard lab status")
	fmt.Fprintln(w, "  meshguard lab logs POD")
	fmt.Fprintln(w, "  meshguard lab down")
}

func labPrintPods(w io.Writer, s *lab.State) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNAMESPACE\tIP\tPID\tSTATE\tSIDECAR")
	for _, p := range s.Pods {
		state := p.State
		if state == "running" && !p.Proc.Alive() {
			state = "dead"
		}
		if p.State == "exited" {
			state = fmt.Sprintf("exited(%d)", p.ExitCode)
		}
		side := "-"
		if p.Sidecar {
			side = "wanted"
			if p.SidecarProc != nil {
				side = fmt.Sprintf("pid %d", p.SidecarProc.PID)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", p.Name, p.Namespace, p.IP, p.Proc.PID, state, side)
	}
	tw.Flush()
}

func labPrintServices(w io.Writer, s *lab.State) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tNAMESPACE\tVIP\tPORTS\tENDPOINTS\tDNS")
	for _, sv := range s.Services {
		ports := make([]string, len(sv.Ports))
		for i, p := range sv.Ports {
			ports[i] = fmt.Sprintf("%d->%d", p.Port, p.TargetPort)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", sv.Name, sv.Namespace, sv.VIP, strings.Join(ports, ","), strings.Join(sv.Endpoints, ","), sv.DNSName)
	}
	tw.Flush()
}

// labClientPod picks a pod to try services from: one no service selects (a client), else the
// last pod.
func labClientPod(s *lab.State) string {
	if len(s.Pods) == 0 {
		return ""
	}
	for _, p := range s.Pods {
		selected := false
		for _, sv := range s.Services {
			selected = selected || sv.Selects(p.Pod)
		}
		if !selected {
			return p.Key()
		}
	}
	return s.Pods[len(s.Pods)-1].Key()
}

// labTryCommand suggests a client command for a service by its well-known port.
func labTryCommand(sv lab.ServiceState) string {
	port := sv.Ports[0].Port
	switch port {
	case 80:
		return "curl -s http://" + sv.DNSName + "/"
	case 8080, 8000, 3000:
		return fmt.Sprintf("curl -s http://%s:%d/", sv.DNSName, port)
	case 6379:
		return "redis-cli -h " + sv.DNSName + " ping"
	case 5432:
		return "psql -h " + sv.DNSName + " -U postgres -c 'select 1'"
	case 3306:
		return "mariadb -h " + sv.DNSName + " -e 'select 1'"
	default:
		return "getent hosts " + sv.DNSName
	}
}
