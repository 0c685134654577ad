package cli

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/api"
)

func newPolicyCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Export the whole policy, or test a proposed change against recorded traffic",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "export",
		Short: "Print the whole policy (learned rules and automatic groups included) as YAML",
		Long: `Print every policy document as YAML in a fixed order. Applying the output to an empty
controller gives the identical policy, so the export is a backup and a review artefact.`,
		Example: `  meshguard policy export > policy.yaml
  meshguard policy export | meshguard apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			var out api.PolicyResponse
			if err := c.do(cmd.Context(), "GET", "/api/v1/policy", nil, &out); err != nil {
				return err
			}
			_, err = io.WriteString(cmd.OutOrStdout(), out.YAML)
			return err
		},
	})
	var files []string
	var output string
	test := &cobra.Command{
		Use:   "test -f NEW.yaml",
		Short: "Replay recorded connections against a proposed policy and list verdicts that change",
		Long: `Merge the given documents into a copy of the current policy (as apply would, with the same
validation), replay every flow recorded from sidecars' connection reports against it and list
the flows whose verdict would change. Nothing is applied.`,
		Example: `  meshguard policy test -f protect-cache.yaml
  meshguard policy test -f policies/ -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(output, "table", "json", "yaml"); err != nil {
				return err
			}
			in, err := readPolicyFiles(cmd.InOrStdin(), files)
			if err != nil {
				return err
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			var out api.PolicyTestResponse
			if err := c.do(cmd.Context(), "POST", "/api/v1/policy/test", api.ApplyRequest{Files: in}, &out); err != nil {
				return err
			}
			return printOut(cmd.OutOrStdout(), output, out, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "# %d of %d recorded flows would change verdict\n", len(out.Changes), out.Flows)
				if len(out.Changes) == 0 {
					return
				}
				fmt.Fprintln(tw, "FLOW\tAPP\tNOW\tPROPOSED\tWHY")
				for _, ch := range out.Changes {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ch.Flow, dash(ch.App), ch.Before, ch.After, ch.Why)
				}
			})
		},
	}
	test.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (stdin); repeatable")
	test.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	cmd.AddCommand(test)
	return cmd
}
