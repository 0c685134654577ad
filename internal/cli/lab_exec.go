package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/lab"
)

func newLabExecCommand(g *globals, o *labOptions) *cobra.Command {
	var uid int
	cmd := &cobra.Command{
		Use:   "exec POD -- CMD [ARG...]",
		Short: "Run a command inside a pod's namespaces (POD is name or namespace/name)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return errors.New("usage: meshguard lab exec POD -- CMD [ARG...]")
			}
			if err := labRequireRoot(); err != nil {
				return err
			}
			st, err := labReadState(o.stateDir)
			if err != nil {
				return err
			}
			p, err := st.FindPod(args[0])
			if err != nil {
				return err
			}
			if !p.Proc.Alive() {
				return fmt.Errorf("pod %s is not running (state %s; see 'meshguard lab logs %s')", p.Key(), p.State, p.Key())
			}
			// nsenter from util-linux, argv only (never a shell string): it joins the pod's
			// network, mount (resolv.conf), UTS and PID namespaces; the user's argv follows "--".
			nsArgs := []string{"--target", strconv.Itoa(p.Proc.PID), "--net", "--mount", "--uts", "--pid"}
			if uid >= 0 {
				nsArgs = append(nsArgs, "--setuid", strconv.Itoa(uid), "--setgid", strconv.Itoa(uid))
			}
			nsArgs = append(nsArgs, "--")
			nsArgs = append(nsArgs, args[1:]...)
			c := exec.Command("nsenter", nsArgs...)
			c.Env = append(lab.PodEnv(st.StateDir, p), "TERM="+os.Getenv("TERM"))
			c.Dir = p.Dir
			c.Stdin, c.Stdout, c.Stderr = cmd.InOrStdin(), g.stdout, g.stderr
			err = c.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return &exitError{code: ee.ExitCode(), err: fmt.Errorf("command in pod %s exited with code %d", p.Key(), ee.ExitCode())}
			}
			if err != nil {
				return fmt.Errorf("exec in pod %s: %w", p.Key(), err)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&uid, "uid", -1, "run as this uid (and gid) instead of root")
	return cmd
}

func newLabLogsCommand(g *globals, o *labOptions) *cobra.Command {
	var follow, sidecar bool
	cmd := &cobra.Command{
		Use:   "logs POD",
		Short: "Print a pod's output (or a lab system process's, e.g. controller)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := labRequireRoot(); err != nil {
				return err
			}
			st, err := labReadState(o.stateDir)
			if err != nil {
				return err
			}
			path := ""
			p, perr := st.FindPod(args[0])
			if perr == nil {
				path = p.LogFile
				if sidecar {
					if p.SidecarLog == "" {
						return fmt.Errorf("pod %s has no sidecar running", p.Key())
					}
					path = p.SidecarLog
				}
			} else {
				for _, sp := range st.System {
					if sp.Name == args[0] {
						path = sp.LogFile
					}
				}
				if path == "" {
					return perr
				}
			}
			f, err := os.Open(path)
			if err != nil {
				return fmt.Errorf("open log: %w", err)
			}
			defer f.Close()
			if _, err := io.Copy(g.stdout, f); err != nil || !follow {
				return err
			}
			// Follow: poll for appended output until Ctrl-C or the lab removes the log.
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-cmd.Context().Done():
					return nil
				case <-tick.C:
				}
				if _, err := io.Copy(g.stdout, f); err != nil {
					return err
				}
				if _, err := os.Stat(path); err != nil {
					return nil
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until interrupted or the lab goes down")
	cmd.Flags().BoolVar(&sidecar, "sidecar", false, "print the pod's sidecar output instead of its command's")
	return cmd
}
