package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/api"
)

func newGraphCommand(g *globals) *cobra.Command {
	var output string
	var system bool
	cmd := &cobra.Command{
		Use:   "graph [-o text|dot|json] [--include-system]",
		Short: "Who talks to whom, with which protocol (from sidecars' connection reports)",
		Long: `Print the service graph built from the connections sidecars reported: one edge per
source and destination workload with its ports, applications, connection count and verdict.
Mesh system traffic (to the controller, DNS) is hidden unless --include-system.

-o dot writes Graphviz: meshguard graph -o dot | dot -Tsvg > graph.svg`,
		Example: `  meshguard graph
  meshguard graph -o dot | dot -Tpng > graph.png
  meshguard graph -o json --include-system`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(output, "text", "dot", "json"); err != nil {
				return err
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			path := "/api/v1/graph"
			if system {
				path += "?includeSystem=true"
			}
			var gr api.Graph
			if err := c.do(cmd.Context(), "GET", path, nil, &gr); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			switch output {
			case "json":
				return printOut(w, "json", gr, nil)
			case "dot":
				writeDot(w, gr)
			default:
				if len(gr.Edges) == 0 {
					fmt.Fprintln(w, "no connections reported yet")
				}
				for _, e := range gr.Edges {
					fmt.Fprintf(w, "%s -> %s  %s  %s  %d conns", e.From, e.To, strings.Join(e.Apps, ","), strings.Join(e.Ports, ","), e.Count)
					if e.Denied > 0 {
						fmt.Fprintf(w, " (%d denied)", e.Denied)
					}
					if e.System {
						fmt.Fprint(w, " [system]")
					}
					fmt.Fprintln(w)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, dot or json")
	cmd.Flags().BoolVar(&system, "include-system", false, "include mesh system traffic (controller, DNS)")
	return cmd
}

func writeDot(w io.Writer, gr api.Graph) {
	q := func(s string) string {
		return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
	}
	fmt.Fprintln(w, "digraph meshguard {")
	fmt.Fprintln(w, "  rankdir=LR;")
	fmt.Fprintln(w, "  node [shape=box];")
	for _, n := range gr.Nodes {
		fmt.Fprintf(w, "  %s;\n", q(n.ID))
	}
	for _, e := range gr.Edges {
		attrs := fmt.Sprintf("label=%s", q(strings.Join(e.Apps, ",")+" "+strings.Join(e.Ports, ",")))
		switch e.Verdict {
		case "deny":
			attrs += ", color=red"
		case "mixed":
			attrs += ", color=orange"
		}
		if e.System {
			attrs += ", style=dashed"
		}
		fmt.Fprintf(w, "  %s -> %s [%s];\n", q(e.From), q(e.To), attrs)
	}
	fmt.Fprintln(w, "}")
}
