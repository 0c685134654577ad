package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/dpi"
	"github.com/meshguard/meshguard/internal/inspect"
)

func newInspectCommand(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect [--format table|json] FILE...",
		Short: "Detect the application protocol of every flow in pcap/pcapng captures",
		Long: `inspect reads pcap and pcapng captures (Ethernet, Linux cooked, raw IP; IPv4, IPv6,
VLAN), reassembles TCP, detects each flow's application protocol from its bytes (never from
the port) and prints one line per flow with its L7 summary. Flows whose protocol does not
belong on their server port are flagged as mismatches.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			if format != "table" && format != "json" {
				return fmt.Errorf("--format %q: want table or json", format)
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
			if err != nil {
				return err
			}
			in, err := inspect.New(inspect.Config{Engine: eng, Log: log})
			if err != nil {
				return err
			}
			var failed []error
			for _, name := range files {
				res, err := inspectFile(cmd, in, name)
				if res != nil {
					if werr := writeFlows(g.stdout, format, res.Flows); werr != nil {
						return werr
					}
				}
				switch {
				case errors.Is(err, inspect.ErrTruncated):
					fmt.Fprintf(g.stderr, "warning: %s: %v (flows so far are shown)\n", name, err)
				case err != nil:
					failed = append(failed, fmt.Errorf("%s: %w", name, err))
				}
			}
			return errors.Join(failed...)
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "output format: table or json (one object per line)")
	return cmd
}

func inspectFile(cmd *cobra.Command, in *inspect.Inspector, name string) (*inspect.Result, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return in.Read(cmd.Context(), f)
}

func writeFlows(w io.Writer, format string, flows []inspect.Report) error {
	if format == "json" {
		for i := range flows {
			b, err := flows[i].MarshalLine()
			if err != nil {
				return err
			}
			if _, err := w.Write(append(b, '\n')); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SRC\tDST\tTRANSPORT\tPROTOCOL\tPACKETS\tBYTES\tL7")
	for i := range flows {
		r := &flows[i]
		proto := r.Protocol
		if r.Mismatch {
			proto += " (port mismatch)"
		}
		l7, _ := r.L7.MarshalJSON()
		if bytes.Equal(l7, []byte("{}")) {
			l7 = []byte("-")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Src, r.Dst, r.Transport, proto,
			strconv.FormatUint(r.Packets, 10), strconv.FormatUint(r.Bytes, 10), l7)
	}
	return tw.Flush()
}
