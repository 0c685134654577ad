package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/capture"
	"github.com/meshguard/meshguard/internal/fileutil"
)

const (
	// captureSlack is added to the capture's duration for the HTTP timeout: the controller
	// waits up to duration+30s for the sidecar's upload, and the answer must still arrive.
	captureSlack = 60 * time.Second
	// maxPCAP bounds a download: the controller refuses uploads above 48 MiB.
	maxPCAP = 48 << 20
	// downloadTimeout bounds `capture get`: a 48 MiB pcap over a slow link.
	downloadTimeout = 5 * time.Minute
)

type captureOutput struct {
	file  string // "" means ID.pcap, "-" stdout
	force bool
}

func (o *captureOutput) flags(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.file, "output", "o", "", `file to write the pcap to, "-" for stdout (default ID.pcap in the current directory)`)
	cmd.Flags().BoolVar(&o.force, "force", false, "overwrite the output file if it exists")
}

// checkFree refuses an existing output file before any work starts, unless --force, and
// binary output to a terminal.
func (o *captureOutput) checkFree(path string, stdout io.Writer) error {
	if path == "-" {
		if f, ok := stdout.(*os.File); ok {
			if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
				return errors.New("-o -: stdout is a terminal and a pcap is binary; pipe it (| tshark -r -) or give a file name")
			}
		}
		return nil
	}
	if path == "" || o.force {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("-o %s: file exists; pass --force to overwrite it or choose another name", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("-o %s: %w", path, err)
	}
	return nil
}

// write stores the pcap (0600, atomically) or streams it to stdout, then says what it did.
func (o *captureOutput) write(g *globals, cmd *cobra.Command, id string, pcap []byte) error {
	path := o.file
	if path == "" {
		path = id + ".pcap"
	}
	if path == "-" {
		if _, err := cmd.OutOrStdout().Write(pcap); err != nil {
			return fmt.Errorf("write pcap to stdout: %w", err)
		}
		fmt.Fprintf(g.stderr, "wrote %d bytes to stdout (capture %s)\n", len(pcap), id)
		return nil
	}
	// Checked again: the capture took a while and a file may have appeared meanwhile.
	if err := o.checkFree(path, nil); err != nil {
		return err
	}
	if err := fileutil.WriteAtomic(path, pcap, 0o600); err != nil {
		return fmt.Errorf("-o %s: %w", path, err)
	}
	_, err := fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%d bytes, capture %s)\n", path, len(pcap), id)
	return err
}

func capturePath(id string) string { return "/api/v1/captures/" + url.PathEscape(id) }

func checkCaptureID(id string) error {
	if !capture.ValidID(id) {
		return fmt.Errorf("capture ID %q: want the form 20260102T150405Z-0123456789ab (see 'meshguard capture list' or an event's CAPTURE column)", id)
	}
	return nil
}

func newCaptureCommand(g *globals) *cobra.Command {
	var out captureOutput
	var duration time.Duration
	cmd := &cobra.Command{
		Use:   "capture NS/POD --duration 30s -o FILE.pcap",
		Short: "Record a workload's decrypted traffic as a pcap, or fetch a stored capture",
		Long: `Record the plaintext of a workload's connections for a while and download it as a pcap.

The pod's sidecar sees the traffic after mTLS is removed, so the capture shows the application
protocol in clear (re-framed as TCP/IP: Wireshark and tshark open it) although the wire between
pods carried only mTLS. The command waits for the whole duration, then downloads the file.

Captures triggered by response rules are stored by the controller too: their IDs are in the
CAPTURE column of 'meshguard get events --kind threat' and in 'meshguard capture list'.

The file is written with mode 0600 (it holds application data in clear); an existing file is
kept unless --force.`,
		Example: `  meshguard capture shop/web-0 --duration 30s -o web.pcap
  tshark -r web.pcap -Y http
  meshguard capture shop/web-0 --duration 10s -o - | tshark -r - -V
  meshguard capture list
  meshguard capture get 20261125T044107Z-0123456789ab -o attack.pcap`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, name, err := splitNSName(args[0], "NS/POD", "shop/web-0")
			if err != nil {
				return err
			}
			if duration < api.MinCaptureDuration || duration > api.MaxCaptureDuration {
				return fmt.Errorf("--duration %v: want between %v and %v", duration, api.MinCaptureDuration, api.MaxCaptureDuration)
			}
			if err := out.checkFree(out.file, cmd.OutOrStdout()); err != nil {
				return err
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			c.http.Timeout = duration + captureSlack // the client is this command's own
			fmt.Fprintf(g.stderr, "capturing %s/%s for %v...\n", ns, name, duration)
			stop := captureProgress(g, duration)
			var info capture.Info
			raw, err := c.doRaw(cmd.Context(), "POST", workloadPath(ns, name)+"/captures",
				api.CaptureRequest{Duration: duration.String()}, 1<<20)
			stop()
			if err != nil {
				return fmt.Errorf("capture %s: %w", args[0], err)
			}
			if err := json.Unmarshal(raw, &info); err != nil {
				return fmt.Errorf("capture %s: controller answer: %w", args[0], err)
			}
			if err := checkCaptureID(info.ID); err != nil {
				return fmt.Errorf("capture %s: controller answered with a bad %w", args[0], err)
			}
			if info.Connections == 0 {
				fmt.Fprintf(g.stderr, "note: no connections of %s/%s were seen during the capture\n", ns, name)
			}
			if info.Truncated {
				fmt.Fprintln(g.stderr, "note: the capture hit its size bound and was truncated")
			}
			fmt.Fprintf(g.stderr, "downloading capture %s (%d bytes)...\n", info.ID, info.Bytes)
			return downloadCapture(cmd.Context(), g, cmd, c, info.ID, &out)
		},
	}
	cmd.Flags().DurationVar(&duration, "duration", 30*time.Second, "how long to record (1s to 5m)")
	out.flags(cmd)
	cmd.AddCommand(newCaptureGetCommand(g), newCaptureListCommand(g))
	return cmd
}

// captureProgress prints the elapsed time every progressEvery on stderr while the controller
// holds the request, so a long capture does not look hung; the returned func stops it.
func captureProgress(g *globals, d time.Duration) (stop func()) {
	const progressEvery = 10 * time.Second
	if d <= progressEvery {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				el := now.Sub(start).Round(time.Second)
				if el < d {
					fmt.Fprintf(g.stderr, "  %v of %v\n", el, d)
				} else {
					fmt.Fprintf(g.stderr, "  %v: waiting for the sidecar's upload\n", el)
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

func downloadCapture(ctx context.Context, g *globals, cmd *cobra.Command, c *apiClient, id string, out *captureOutput) error {
	pcap, err := c.doRaw(ctx, "GET", capturePath(id)+"/pcap", nil, maxPCAP)
	if err != nil {
		return fmt.Errorf("download capture %s: %w", id, err)
	}
	return out.write(g, cmd, id, pcap)
}

func newCaptureGetCommand(g *globals) *cobra.Command {
	var out captureOutput
	cmd := &cobra.Command{
		Use:   "get ID [-o FILE.pcap]",
		Short: "Download a stored capture (automatic or on-demand) as a pcap",
		Example: `  meshguard get events --kind threat      # the CAPTURE column names the ID
  meshguard capture get 20261125T044107Z-0123456789ab -o attack.pcap
  meshguard capture get 20261125T044107Z-0123456789ab -o - | tshark -r -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := checkCaptureID(id); err != nil {
				return err
			}
			path := out.file
			if path == "" {
				path = id + ".pcap"
			}
			if err := out.checkFree(path, cmd.OutOrStdout()); err != nil {
				return err
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			c.http.Timeout = downloadTimeout
			return downloadCapture(cmd.Context(), g, cmd, c, id, &out)
		},
	}
	out.flags(cmd)
	return cmd
}

func newCaptureListCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List stored captures, newest first",
		Example: "  meshguard capture list\n  meshguard capture list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return getList(cmd, g, output, "capture list", "/api/v1/captures", func(tw *tabwriter.Writer, list []capture.Info) {
				fmt.Fprintln(tw, "ID\tCREATED\tWORKLOAD\tCONNECTIONS\tBYTES\tTRUNCATED\tREASON")
				for _, x := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%v\t%s\n", x.ID, x.Created.Local().Format(time.DateTime),
						dash(x.Workload), x.Connections, x.Bytes, x.Truncated, dash(termSafe(x.Reason)))
				}
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	return cmd
}
