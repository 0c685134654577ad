// Package cli builds meshguard's cobra command tree: one file per verb, each a thin layer over
// the packages that do the work.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
)

// globals are the persistent flags every verb sees. They live in a struct built per invocation,
// never in package variables, so tests can run commands in parallel.
type globals struct {
	configPath string
	logFormat  string
	logLevel   string
	stdout     io.Writer
	stderr     io.Writer
}

// logger builds the slog logger the flags ask for.
func (g *globals) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(g.logFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(g.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.stderr, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", g.logFormat)
	}
}

// exitError carries a specific exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// NewRootCommand returns the full command tree writing to the given streams.
func NewRootCommand(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "meshguard",
		Short: "meshguard: workload identity, mTLS and a layer-7 firewall for the service mesh",
		Long: `meshguard gives every workload a SPIFFE identity and mutual TLS, inspects the traffic
inside the mesh, learns who talks to whom and enforces it.

Start a controller with 'meshguard controller --data-dir DIR'; other verbs find it with
--config DIR/admin.conf (or $MESHGUARD_CONFIG, or ~/.meshguard/config).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", "", "admin config written by the controller (default $MESHGUARD_CONFIG, else ~/.meshguard/config)")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")

	root.AddCommand(
		newVersionCommand(g),
		newControllerCommand(g),
		newTokenCommand(g),
		newSVIDCommand(g),
		newCACommand(g),
		newInspectCommand(g),
		newLabCommand(g),
		newApplyCommand(g),
		newGetCommand(g),
		newDeleteCommand(g),
		newPolicyCommand(g),
		newModeCommand(g),
		newExplainCommand(g),
		newGraphCommand(g),
		newAPITokenCommand(g),
		newSidecarCommand(g),
		newQuarantineCommand(g),
		newCaptureCommand(g),
		newSensorCommand(g),
		newStatusCommand(g),
	)
	return root
}

// Execute runs the command tree with args and returns the process exit code.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := NewRootCommand(stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "error:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		return 1
	}
	return 0
}
