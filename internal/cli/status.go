package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/api"
)

// statusView is `meshguard status -o json`.
type statusView struct {
	Server          string                 `json:"server"`
	ConfigVersion   uint64                 `json:"configVersion"`
	Sidecars        int                    `json:"sidecars"`
	SidecarsCurrent int                    `json:"sidecarsUpToDate"`
	Quarantined     []api.QuarantineStatus `json:"quarantined"`
	// QuarantineUnknown: the controller predates quarantine (its API has no /quarantines).
	QuarantineUnknown bool `json:"quarantineUnknown,omitempty"`
}

func newStatusCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Summarise the mesh: controller, sidecars and quarantined workloads",
		Long: `Ask the controller for a one-screen summary: the config version, how many sidecars are
connected and up to date, and which workloads are quarantined (with why and since when).
Details: 'meshguard get sidecars', 'meshguard quarantine list'.`,
		Example: "  meshguard status\n  meshguard status -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(output, "table", "json", "yaml"); err != nil {
				return err
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			v := statusView{Server: c.base, Quarantined: []api.QuarantineStatus{}}
			var sc api.SidecarsResponse
			if err := c.do(ctx, "GET", "/api/v1/sidecars", nil, &sc); err != nil {
				return fmt.Errorf("status: %w", err)
			}
			v.ConfigVersion, v.Sidecars = sc.Version, len(sc.Sidecars)
			for _, s := range sc.Sidecars {
				if s.UpToDate(sc.Version) {
					v.SidecarsCurrent++
				}
			}
			qs, unknown, err := fetchQuarantined(ctx, c)
			if err != nil {
				return fmt.Errorf("status: quarantines: %w", err)
			}
			v.QuarantineUnknown = unknown // an older controller: say so rather than fail
			if qs != nil {
				v.Quarantined = qs
			}
			if output != "table" {
				return printOut(cmd.OutOrStdout(), output, v, nil)
			}
			return printStatus(cmd.OutOrStdout(), v)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	return cmd
}

func printStatus(w io.Writer, v statusView) error {
	fmt.Fprintf(w, "Controller:  %s (config version %d)\n", v.Server, v.ConfigVersion)
	fmt.Fprintf(w, "Sidecars:    %d connected, %d up to date\n", v.Sidecars, v.SidecarsCurrent)
	printQuarantined(w, v.Quarantined, v.QuarantineUnknown)
	return nil
}

// fetchQuarantined asks the API for the quarantined workloads; unknown is true when the
// controller predates quarantine (404) rather than an error.
func fetchQuarantined(ctx context.Context, c *apiClient) (qs []api.QuarantineStatus, unknown bool, err error) {
	raw, err := c.doRaw(ctx, "GET", "/api/v1/quarantines", nil, maxAnswer)
	if isNotFound(err) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	if err := json.Unmarshal(raw, &qs); err != nil {
		return nil, false, fmt.Errorf("quarantines: %w", err)
	}
	return qs, false, nil
}

// labPrintQuarantined adds the Quarantined section to `lab status`, asking the lab's
// controller (its admin.conf) briefly; a controller that does not answer is reported, not fatal.
func labPrintQuarantined(ctx context.Context, g *globals, w io.Writer, adminConf string) {
	lg := *g
	lg.configPath = adminConf
	c, err := lg.apiClient()
	if err == nil {
		c.http.Timeout = 3 * time.Second
		var qs []api.QuarantineStatus
		var unknown bool
		if qs, unknown, err = fetchQuarantined(ctx, c); err == nil {
			printQuarantined(w, qs, unknown)
			return
		}
	}
	fmt.Fprintf(w, "Quarantined: unknown (controller: %v)\n", err)
}

func printQuarantined(w io.Writer, qs []api.QuarantineStatus, unknown bool) {
	switch {
	case unknown:
		fmt.Fprintln(w, "Quarantined: unknown (this controller has no quarantine API; upgrade it)")
		return
	case len(qs) == 0:
		fmt.Fprintln(w, "Quarantined: none")
		return
	}
	fmt.Fprintf(w, "Quarantined: %d\n", len(qs))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	quarantineTable(tw, qs, "  ")
	tw.Flush()
}
