package cli

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/policy"
)

func newDeleteCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete KIND NAMESPACE/NAME",
		Short: "Delete one policy document (group, rule, processprofile, filerule, responserule)",
		Long: `Delete one policy document by kind and key. KIND is group, rule (networkrule),
processprofile, filerule or responserule; the key is NAMESPACE/NAME, or NAME for a
cluster-scoped document. The rest of the policy must still validate (a group that rules
still reference cannot be deleted), otherwise nothing changes.

Deleting a learned rule while its group is in discover mode lets the flow be learned again.`,
		Example: `  meshguard delete rule shop/web-to-cache
  meshguard delete group shop/legacy
  meshguard delete group platform-egress      # cluster-scoped`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, ok := policy.KindFromName(args[0])
			if !ok {
				return fmt.Errorf("kind %q: want group, rule, processprofile, filerule or responserule", args[0])
			}
			ns, name := policy.SplitKey(args[1])
			if name == "" || strings.Contains(name, "/") {
				return fmt.Errorf("%q: want NAMESPACE/NAME or NAME", args[1])
			}
			path := "/api/v1/policy/" + url.PathEscape(strings.ToLower(kind)) + "/"
			if ns != "" {
				path += url.PathEscape(ns) + "/"
			}
			path += url.PathEscape(name)
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			var out api.ApplyResponse
			if err := c.do(cmd.Context(), "DELETE", path, nil, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s deleted\npolicy version %d\n", kind, policy.Key(ns, name), out.Version)
			return nil
		},
	}
}
