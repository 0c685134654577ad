package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/version"
)

func newVersionCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the meshguard version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := version.Get()
			switch output {
			case "json":
				enc := json.NewEncoder(g.stdout)
				return enc.Encode(info)
			case "text", "":
				fmt.Fprintf(g.stdout, "meshguard %s", info.Version)
				if info.Commit != "" {
					fmt.Fprintf(g.stdout, " (%s)", info.Commit)
				}
				fmt.Fprintf(g.stdout, " %s %s\n", info.GoVersion, info.Platform)
				return nil
			default:
				return fmt.Errorf("-o %q: want text or json", output)
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
