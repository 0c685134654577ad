package cli

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/policy"
)

// readPolicyFiles reads -f arguments: files, directories (every *.yaml, *.yml and *.json below
// them, in lexical order) and "-" (stdin). The server parses them, so errors name these files.
func readPolicyFiles(stdin io.Reader, paths []string) ([]api.File, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("-f is required: a file, a directory or - for stdin")
	}
	var out []api.File
	total := 0
	add := func(name string, b []byte) error {
		total += len(b)
		if total > policy.MaxInputBytes {
			return fmt.Errorf("%s: policy input larger than %d bytes", name, policy.MaxInputBytes)
		}
		out = append(out, api.File{Name: name, Content: string(b)})
		return nil
	}
	for _, p := range paths {
		if p == "-" {
			b, err := io.ReadAll(io.LimitReader(stdin, policy.MaxInputBytes+1))
			if err != nil {
				return nil, fmt.Errorf("stdin: %w", err)
			}
			if err := add("-", b); err != nil {
				return nil, err
			}
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			if err := add(p, b); err != nil {
				return nil, err
			}
			continue
		}
		var files []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if ext := strings.ToLower(filepath.Ext(path)); !d.IsDir() && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		slices.Sort(files)
		if len(files) == 0 {
			return nil, fmt.Errorf("%s: no *.yaml, *.yml or *.json files", p)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			if err := add(f, b); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func newApplyCommand(g *globals) *cobra.Command {
	var files []string
	var output string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Create or update policy documents (Group, NetworkRule, ...): all or nothing",
		Long: `Apply policy documents (apiVersion: meshguard.io/v1alpha1; kinds Group, NetworkRule,
ProcessProfile, FileRule, ResponseRule). Documents replace those of the same kind, namespace
and name. The whole resulting policy is validated first: if anything is wrong, nothing is
applied, and every problem is reported with its file, line, field and the allowed values.

A document:

  apiVersion: meshguard.io/v1alpha1
  kind: NetworkRule
  metadata: {name: web-to-cache, namespace: shop}
  spec:
    from: {group: web}
    to: {group: cache}
    ports: ["tcp/6379"]          # or "any"
    applications: [redis]         # or "any"
    l7: {redis: {denyCommands: [FLUSHALL, CONFIG]}}
    action: allow                 # allow | deny`,
		Example: `  meshguard apply -f shop-policy.yaml
  meshguard apply -f policies/            # every *.yaml, *.yml, *.json below, in order
  meshguard policy export | meshguard apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(output, "text", "json"); err != nil {
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
			var out api.ApplyResponse
			if err := c.do(cmd.Context(), "POST", "/api/v1/policy/apply", api.ApplyRequest{Files: in}, &out); err != nil {
				return err
			}
			if output == "json" {
				return printOut(cmd.OutOrStdout(), "json", out, nil)
			}
			for _, o := range out.Objects {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s applied\n", o.Kind, policy.Key(o.Namespace, o.Name))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "policy version %d\n", out.Version)
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (stdin); repeatable")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
