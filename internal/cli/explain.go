package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/api"
)

func newExplainCommand(g *globals) *cobra.Command {
	var q api.ExplainRequest
	var output string
	cmd := &cobra.Command{
		Use:   "explain --from NS/WORKLOAD --to NS/WORKLOAD[:PORT] [--app A] [--method M --path P]",
		Short: "Show how the policy decides a connection (or request), and why, without sending traffic",
		Long: `Decide a connection from one workload to another with the current policy and explain
it: the rule that decided, or the mode of the destination's group when no rule matched, and
why each rule about the destination did or did not apply. --to may name a service
(NAMESPACE/SERVICE): its first endpoint stands for it. --method and --path decide one HTTP
request (the application defaults to http then).`,
		Example: `  meshguard explain --from shop/web-0 --to shop/cache-0:6379 --app redis
  meshguard explain --from shop/client --to shop/web-0:8080 --method DELETE --path /api/items
  meshguard explain --from shop/web-0 --to shop/db-0:5432 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(output, "text", "json", "yaml"); err != nil {
				return err
			}
			if q.From == "" || q.To == "" {
				return fmt.Errorf("--from and --to are required (NAMESPACE/WORKLOAD)")
			}
			if to, port, ok := strings.Cut(q.To, ":"); ok {
				n, err := strconv.ParseUint(port, 10, 16)
				if err != nil || n == 0 {
					return fmt.Errorf("--to %q: port %q must be 1-65535", q.To, port)
				}
				q.To, q.Port = to, uint16(n)
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			var out api.ExplainResponse
			if err := c.do(cmd.Context(), "POST", "/api/v1/explain", q, &out); err != nil {
				return err
			}
			if output != "text" {
				return printOut(cmd.OutOrStdout(), output, out, nil)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%s\n", strings.ToUpper(out.Decision.Verdict.String()))
			fmt.Fprintf(w, "%s\n", out.Summary)
			fmt.Fprintf(w, "from groups: %s\nto groups:   %s\n", joinOr(out.FromGroups), joinOr(out.ToGroups))
			if out.Explanation != "" {
				fmt.Fprintf(w, "\n%s", out.Explanation)
				if !strings.HasSuffix(out.Explanation, "\n") {
					fmt.Fprintln(w)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.From, "from", "", "source workload NAMESPACE/NAME")
	f.StringVar(&q.To, "to", "", "destination workload or service NAMESPACE/NAME[:PORT]")
	f.StringVar(&q.App, "app", "", "application protocol as DPI names it (http, grpc, redis, postgres, dns...)")
	f.BoolVar(&q.UDP, "udp", false, "the port is UDP")
	f.StringVar(&q.Method, "method", "", "HTTP method of one request to decide")
	f.StringVar(&q.Path, "path", "", "HTTP path of one request to decide")
	f.StringVarP(&output, "output", "o", "text", "output format: text, json or yaml")
	return cmd
}
