package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/api"
)

func newAPITokenCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "apitoken",
		Short: "Create REST API principals: tokens or client-certificate bindings with a role",
	}
	var req api.TokenRequest
	create := &cobra.Command{
		Use:   "create --name NAME --role admin|namespace-editor|viewer [--namespace NS] [--certificate]",
		Short: "Create an API token for a role (printed once), or bind a client certificate's SPIFFE ID",
		Long: `Roles: admin (everything), namespace-editor (read everything, change only the policy of
--namespace), viewer (read everything). The token is printed once and stored only as a hash;
put it in a copy of admin.conf (token:) for the person or tool that uses it.

With --certificate, --name is a SPIFFE ID: clients presenting a certificate with that ID
(signed by the meshguard CA) act with the role; no token is created.`,
		Example: `  meshguard apitoken create --name alice --role namespace-editor --namespace shop
  meshguard apitoken create --name grafana --role viewer
  meshguard apitoken create --certificate --name spiffe://cluster.local/ns/ops/sa/ci --role admin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := req.Principal.Validate(); err != nil {
				return err
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			var out api.TokenResponse
			if err := c.do(cmd.Context(), "POST", "/api/v1/apitokens", req, &out); err != nil {
				return err
			}
			if out.Token != "" {
				fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "client certificates with SPIFFE ID %s now act as %s\n", out.Principal.Name, out.Principal.Role)
			}
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&req.Name, "name", "", "who the token is for (audit records show it), or a SPIFFE ID with --certificate")
	f.StringVar((*string)(&req.Role), "role", "", "admin, namespace-editor or viewer")
	f.StringVar(&req.Namespace, "namespace", "", "the namespace a namespace-editor may change")
	f.BoolVar(&req.CertificateOnly, "certificate", false, "bind client certificates with SPIFFE ID --name instead of creating a token")
	cmd.AddCommand(create)
	return cmd
}
