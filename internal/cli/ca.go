package cli

import (
	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/api"
)

func newCACommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Manage the controller's certificate authority"}
	var req api.RotateRequest
	rotate := &cobra.Command{
		Use:   "rotate [--root]",
		Short: "Issue a new intermediate (and with --root a new root); old roots stay trusted until they expire",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.postStatus(cmd.Context(), "ca rotate", "/api/v1/ca/rotate", req)
		},
	}
	rotate.Flags().BoolVar(&req.Root, "root", false, "also replace the root CA (rotate at most once per SVID lifetime)")
	cmd.AddCommand(rotate)
	return cmd
}
