package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/meshguard/meshguard/internal/lab"
)

func newLabDownCommand(g *globals, o *labOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the lab and remove every namespace, link, nftables table and process it made",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := labRequireRoot(); err != nil {
				return err
			}
			dir, err := labCheckDir(o.stateDir)
			if err != nil {
				return err
			}
			st, err := lab.ReadState(dir)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				fmt.Fprintf(g.stderr, "warning: %v; removing leftovers by name\n", err)
				st = nil
			}
			labRemoveAdminConfig(dir, g) // before the daemon removes the controller's copy
			if st != nil && lab.DaemonAlive(st) {
				// The daemon tears down what it built; wait for it, bounded.
				_ = st.Daemon.Signal(unix.SIGTERM)
				if !st.Daemon.WaitExit(60 * time.Second) {
					_ = st.Daemon.Signal(unix.SIGKILL)
					st.Daemon.WaitExit(5 * time.Second)
				}
			}
			// Whatever the daemon did or did not finish (crash, kill): remove the rest.
			if err := lab.Cleanup(dir, st); err != nil {
				return fmt.Errorf("lab down incomplete: %w", err)
			}
			if st == nil {
				fmt.Fprintln(g.stdout, "no lab state found; leftovers (if any) removed")
			} else {
				fmt.Fprintln(g.stdout, "lab down: everything removed")
			}
			return nil
		},
	}
}

// labRemoveAdminConfig removes ~/.meshguard/config when it is the copy `lab up` made of the
// lab controller's admin.conf: it would point at a controller that is gone.
func labRemoveAdminConfig(dir string, g *globals) {
	lab, err := os.ReadFile(filepath.Join(dir, "controller", "admin.conf"))
	if err != nil {
		return
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return
	}
	dst := filepath.Join(home, ".meshguard", "config")
	if cur, err := os.ReadFile(dst); err == nil && bytes.Equal(cur, lab) {
		if err := os.Remove(dst); err == nil {
			fmt.Fprintf(g.stderr, "removed %s (it pointed at the lab's controller)\n", dst)
		}
		if err := os.Rename(dst+labConfigBackupSuffix, dst); err == nil {
			fmt.Fprintf(g.stderr, "restored your %s\n", dst)
		}
	}
}

func newLabStatusCommand(g *globals, o *labOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the lab's pods and services",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := labRequireRoot(); err != nil {
				return err
			}
			st, err := labReadState(o.stateDir)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			case "text", "":
			default:
				return fmt.Errorf("-o %q: want text or json", output)
			}
			daemon := fmt.Sprintf("running (pid %d)", st.Daemon.PID)
			if !lab.DaemonAlive(st) {
				daemon = "NOT running (run 'meshguard lab down' to clean up)"
			}
			fmt.Fprintf(g.stdout, "lab %s from %s, daemon %s\n\n", st.Phase, st.TopologyFile, daemon)
			labPrintPods(g.stdout, st)
			if len(st.Services) > 0 {
				fmt.Fprintln(g.stdout)
				labPrintServices(g.stdout, st)
			}
			for _, sp := range st.System {
				state := sp.State
				if state == "running" && !sp.Proc.Alive() {
					state = "dead"
				}
				fmt.Fprintf(g.stdout, "\nsystem %s: pid %d %s (log %s)", sp.Name, sp.Proc.PID, state, sp.LogFile)
			}
			if len(st.System) > 0 {
				fmt.Fprintln(g.stdout)
			}
			if lab.DaemonAlive(st) {
				fmt.Fprintln(g.stdout)
				labPrintQuarantined(cmd.Context(), g, g.stdout, filepath.Join(st.StateDir, "controller", "admin.conf"))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json (the state file)")
	return cmd
}
