package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
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

// apiStatusError is a non-2xx answer of the REST API, kept with its status code so callers
// can tell "this controller does not have the route" (404) from a refusal.
type apiStatusError struct {
	code int
	msg  string
}

func (e *apiStatusError) Error() string { return e.msg }

// fetch sends in (JSON, unless nil) and returns the body of a 2xx answer, refusing one larger
// than limit bytes; unlike do it keeps the raw bytes (pcaps) and the status code of failures.
func (c *apiClient) fetch(ctx context.Context, method, path string, in any, limit int64) ([]byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("controller API %s: %w (is the controller running?)", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e api.Error
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return nil, &apiStatusError{code: resp.StatusCode, msg: e.Error}
		}
		return nil, &apiStatusError{code: resp.StatusCode, msg: fmt.Sprintf("controller API %s %s: %s", method, path, resp.Status)}
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("controller API %s %s: read answer: %w", method, path, err)
	}
	if int64(len(raw)) > limit {
		return nil, fmt.Errorf("controller API %s %s: answer larger than %d bytes", method, path, limit)
	}
	return raw, nil
}

// isNotFound reports whether err is the API's 404.
func isNotFound(err error) bool {
	var se *apiStatusError
	return errors.As(err, &se) && se.code == http.StatusNotFound
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
			if err := checkFormat(output, outputFormats...); err != nil {
				return err
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			var out []api.QuarantineStatus
			if err := c.do(cmd.Context(), "GET", "/api/v1/quarantines", nil, &out); err != nil {
				return fmt.Errorf("quarantine list: %w", err)
			}
			if out == nil {
				out = []api.QuarantineStatus{}
			}
			return printOut(cmd.OutOrStdout(), output, out, func(tw *tabwriter.Writer) {
				quarantineTable(tw, out, "")
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
