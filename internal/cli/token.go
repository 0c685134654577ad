package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/identity"
)

func newTokenCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage join tokens (single-use workload attestation)"}
	var req api.CreateTokenRequest
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create --spiffe-id ID [--ttl 10m]",
		Short: "Create a single-use join token bound to one SPIFFE ID; prints only the token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			req.TTL = ttl.String()
			var resp api.CreateTokenResponse
			if err := c.do(cmd.Context(), "POST", "/api/v1/tokens", req, &resp); err != nil {
				return fmt.Errorf("token create: %w", err)
			}
			_, err = fmt.Fprintln(g.stdout, resp.Token)
			return err
		},
	}
	create.Flags().StringVar(&req.SPIFFEID, "spiffe-id", "", "spiffe://<trust-domain>/ns/<namespace>/sa/<service-account> (required)")
	create.Flags().DurationVar(&ttl, "ttl", identity.DefaultJoinTokenTTL, "how long the token may be used")
	_ = create.MarkFlagRequired("spiffe-id")
	cmd.AddCommand(create)
	return cmd
}
