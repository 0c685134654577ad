package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/identity/workload"
)

func newSVIDCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "svid", Short: "Obtain and revoke workload identities (X.509-SVIDs)"}
	cmd.AddCommand(newSVIDFetchCommand(g), newSVIDRenewCommand(g), newSVIDRevokeCommand(g))
	return cmd
}

func newSVIDFetchCommand(g *globals) *cobra.Command {
	var addr, caFile, token, out, spiffeID string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "fetch --identity ADDR --ca-file FILE --token TOKEN --out DIR",
		Short: "Attest with a join token and write svid.pem, key.pem and bundle.pem",
		Long: `Generate a private key locally (it never leaves this machine), attest to the
controller's identity service with a join token and write OUT/svid.pem (leaf then
intermediates), OUT/key.pem (0600) and OUT/bundle.pem (trusted roots).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			raw, err := os.ReadFile(caFile)
			if err != nil {
				return fmt.Errorf("--ca-file: %w", err)
			}
			roots, err := identity.ParseCertsPEM(raw)
			if err != nil || len(roots) == 0 {
				return fmt.Errorf("--ca-file %s: no PEM certificate found", caFile)
			}
			src, err := workload.New(workload.Config{Addr: addr, ServerCAs: roots, JoinToken: token, SPIFFEID: spiffeID, Clock: clockwork.NewRealClock(), Log: log})
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if err := src.Attest(ctx); err != nil {
				if s, ok := status.FromError(errors.Unwrap(err)); ok {
					return fmt.Errorf("svid fetch refused: %s", s.Message())
				}
				return fmt.Errorf("svid fetch: %w", err)
			}
			return writeSVID(g, src, out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "identity", "", "identity service host:port (admin.conf's identity field; required)")
	f.StringVar(&caFile, "ca-file", "", "PEM bundle trusted for the identity service (admin.conf's caFile; required)")
	f.StringVar(&token, "token", "", "single-use join token from 'meshguard token create' (required)")
	f.StringVar(&out, "out", "", "directory for svid.pem, key.pem, bundle.pem (required)")
	f.StringVar(&spiffeID, "spiffe-id", "", "optional: the SPIFFE ID expected; refused if the token is bound to another")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	for _, n := range []string{"identity", "ca-file", "token", "out"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

func newSVIDRevokeCommand(g *globals) *cobra.Command {
	var req api.RevokeRequest
	cmd := &cobra.Command{
		Use:   "revoke --spiffe-id ID",
		Short: "Refuse every renewal of the SVIDs issued so far for ID (it must attest again)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.postStatus(cmd.Context(), "svid revoke", "/api/v1/svids/revoke", req)
		},
	}
	cmd.Flags().StringVar(&req.SPIFFEID, "spiffe-id", "", "SPIFFE ID to revoke (required)")
	_ = cmd.MarkFlagRequired("spiffe-id")
	return cmd
}

// writeSVID writes the source's SVID as OUT/svid.pem (leaf then intermediates), OUT/key.pem
// (0600) and OUT/bundle.pem.
func writeSVID(g *globals, src *workload.Source, out string) error {
	chain, key, bundle, err := src.PEM()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{"key.pem", key, 0o600}, {"svid.pem", chain, 0o644}, {"bundle.pem", bundle, 0o644}} {
		p := filepath.Join(out, f.name)
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	fmt.Fprintln(g.stderr, "wrote", src.SVID().ID.String(), "to", out)
	return nil
}

func newSVIDRenewCommand(g *globals) *cobra.Command {
	var addr, dir string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "renew --identity ADDR --dir DIR",
		Short: "Renew the still-valid SVID in DIR over mTLS (no token) and rewrite its files",
		Long: `Renew the SVID in DIR (svid.pem, key.pem, bundle.pem as written by 'svid fetch') with
a fresh local key, authenticating with the current SVID. Refused when it has expired or was
revoked: attest again with a new join token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			var files [3][]byte
			for i, n := range []string{"svid.pem", "key.pem", "bundle.pem"} {
				if files[i], err = os.ReadFile(filepath.Join(dir, n)); err != nil {
					return fmt.Errorf("--dir: %w", err)
				}
			}
			roots, err := identity.ParseCertsPEM(files[2])
			if err != nil || len(roots) == 0 {
				return fmt.Errorf("--dir %s: bundle.pem holds no PEM certificate", dir)
			}
			src, err := workload.New(workload.Config{Addr: addr, ServerCAs: roots, Clock: clockwork.NewRealClock(), Log: log})
			if err != nil {
				return err
			}
			if err := src.Load(files[0], files[1], files[2]); err != nil {
				return fmt.Errorf("--dir %s: %w", dir, err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if err := src.Renew(ctx); err != nil {
				if s, ok := status.FromError(errors.Unwrap(err)); ok {
					return fmt.Errorf("svid renew refused: %s", s.Message())
				}
				return fmt.Errorf("svid renew: %w", err)
			}
			return writeSVID(g, src, dir)
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "identity", "", "identity service host:port (required)")
	f.StringVar(&dir, "dir", "", "directory holding svid.pem, key.pem, bundle.pem (required)")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	_ = cmd.MarkFlagRequired("identity")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}
