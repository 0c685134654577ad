package cli

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/api"
)

// splitNSName parses "namespace/name"; what names the argument in the error ("NS/POD").
func splitNSName(arg, what, example string) (ns, name string, err error) {
	ns, name, ok := strings.Cut(arg, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("%s %q: want namespace/name, e.g. %s", what, arg, example)
	}
	return ns, name, nil
}

// workloadPath is /api/v1/workloads/NS/NAME with both parts escaped.
func workloadPath(ns, name string) string {
	return "/api/v1/workloads/" + url.PathEscape(ns) + "/" + url.PathEscape(name)
}

func newQuarantineCommand(g *globals) *cobra.Command {
	var reason string
	var release bool
	cmd := &cobra.Command{
		Use:   "quarantine NS/POD [--reason R] [--release]",
		Short: "Cut every connection in and out of a workload while its processes keep running",
		Long: `Quarantine a workload: the controller installs rules in the pod's network namespace
that drop every packet in and out of it, established connections included. Its processes keep
running, so you can inspect them (forensics); nothing reaches them and they reach nothing.

A response rule can quarantine a workload automatically (e.g. on a DNS tunnel); this verb does
it by hand. --release lifts the quarantine and connections can be made again.
'meshguard quarantine list' and 'meshguard status' show what is quarantined.`,
		Example: `  meshguard quarantine shop/web-0 --reason "investigating a dns-tunnel event"
  meshguard quarantine list
  meshguard quarantine shop/web-0 --release`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, name, err := splitNSName(args[0], "NS/POD", "shop/web-0")
			if err != nil {
				return err
			}
			if release && cmd.Flags().Changed("reason") {
				return errors.New("--reason goes with quarantining, not with --release: drop one of them")
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			path := workloadPath(ns, name) + "/quarantine"
			if release {
				if err := c.do(cmd.Context(), "DELETE", path, nil, nil); err != nil {
					return fmt.Errorf("release %s: %w", args[0], err)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "released %s/%s\n", ns, name)
				return err
			}
			var st api.QuarantineStatus
			if err := c.do(cmd.Context(), "POST", path, api.QuarantineRequest{Reason: reason}, &st); err != nil {
				return fmt.Errorf("quarantine %s: %w", args[0], err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "quarantined %s/%s\n", ns, name)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&reason, "reason", "", "why (kept with the quarantine, shown in list, status and the event)")
	f.BoolVar(&release, "release", false, "lift the quarantine: connections may be made again")
	cmd.AddCommand(newQuarantineListCommand(g))
	return cmd
}

func newQuarantineListCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List quarantined workloads: WORKLOAD SINCE REASON",
		Example: "  meshguard quarantine list\n  meshguard quarantine list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return getList(cmd, g, output, "quarantine list", "/api/v1/quarantines", func(tw *tabwriter.Writer, qs []api.QuarantineStatus) {
				quarantineTable(tw, qs, "")
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	return cmd
}

func quarantineTable(tw *tabwriter.Writer, qs []api.QuarantineStatus, indent string) {
	fmt.Fprintln(tw, indent+"WORKLOAD\tSINCE\tREASON")
	for _, q := range qs {
		fmt.Fprintf(tw, "%s%s\t%s\t%s\n", indent, q.Workload, q.Since.Local().Format(time.DateTime), dash(termSafe(q.Reason)))
	}
}

// termSafe escapes control characters (a reason or evidence may carry an attacker's bytes,
// and raw escape sequences would drive the terminal) and tabs (they would break the table).
func termSafe(s string) string {
	clean := true
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\uFFFD' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	q := fmt.Sprintf("%+q", s) // ASCII-only, every control byte escaped
	return q[1 : len(q)-1]
}
