package cli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/meshguard/meshguard/internal/api"
)

func getConnections(ctx context.Context, c *apiClient, w io.Writer, o *getOptions) error {
	path := "/api/v1/connections" + nsQuery(o.namespace)
	if o.includeSystem {
		if o.namespace == "" {
			path += "?includeSystem=true"
		} else {
			path += "&includeSystem=true"
		}
	}
	var out []api.Connection
	if err := c.do(ctx, "GET", path, nil, &out); err != nil {
		return err
	}
	return printOut(w, o.output, out, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "SOURCE\tDESTINATION\tPORT\tAPP\tVERDICT\tRULE\tMTLS\tFLAGS\tCOUNT\tLAST-SEEN")
		for _, x := range out {
			mtls, flags := "yes", "-"
			if !x.Authenticated {
				mtls = "no"
			}
			if x.Mismatch {
				flags = "mismatch"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s/%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", x.Source, x.Destination, x.Transport, x.Port, dash(x.App),
				x.Verdict, dash(x.RuleID), mtls, flags, x.Count, x.LastSeen.Local().Format(time.DateTime))
		}
	})
}
