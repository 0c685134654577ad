package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/policy"
)

func newModeCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mode",
		Short: "Change a group's mode: discover, monitor or protect",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "set NAMESPACE/GROUP discover|monitor|protect",
		Short: "Set the mode that decides traffic to a group when no rule does",
		Long: `Set a group's mode. It decides traffic to the group's workloads that no rule covers:

  discover  allow it and learn a rule for it (the allow-list writes itself)
  monitor   allow it and report a violation event
  protect   refuse it (TCP reset, or a native refusal such as HTTP 403 naming the reason)

Leaving discover freezes the group's learning; learned rules stay and keep allowing.`,
		Example: `  meshguard mode set shop/cache discover
  meshguard mode set shop/cache monitor
  meshguard get events --kind violation --since 10m
  meshguard mode set shop/cache protect`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m := policy.Mode(args[1])
			switch m {
			case policy.ModeDiscover, policy.ModeMonitor, policy.ModeProtect:
			default:
				return fmt.Errorf("mode %q: want discover, monitor or protect", args[1])
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			var out api.ApplyResponse
			if err := c.do(cmd.Context(), "POST", "/api/v1/policy/mode", api.ModeRequest{Group: args[0], Mode: m}, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "group %s is in %s mode\npolicy version %d\n", args[0], m, out.Version)
			return nil
		},
	})
	return cmd
}
