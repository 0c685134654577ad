package cli

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/policy"
)

// outputFormats are what every get supports.
var outputFormats = []string{"table", "json", "yaml"}

// printOut writes v as JSON or YAML, or calls table with a tab writer.
func printOut(w io.Writer, format string, v any, table func(tw *tabwriter.Writer)) error {
	switch format {
	case "json":
		b, err := jsonIndent(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "table", "":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}
	return fmt.Errorf("-o %q: want one of %s", format, strings.Join(outputFormats, ", "))
}

func checkFormat(format string, allowed ...string) error {
	if !slices.Contains(allowed, format) {
		return fmt.Errorf("-o %q: want one of %s", format, strings.Join(allowed, ", "))
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func joinOr(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

type getOptions struct {
	namespace string
	output    string
	// events
	kind     string
	since    string
	limit    int
	follow   bool
	evidence bool
	// connections
	includeSystem bool
}

func newGetCommand(g *globals) *cobra.Command {
	o := &getOptions{}
	cmd := &cobra.Command{
		Use:   "get groups|rules|workloads|services|sidecars|events|connections",
		Short: "List what the controller knows: policy, registry, sidecars, events, connections",
		Long: `List objects from the controller's REST API.

  groups       policy groups with their mode and current members (automatic groups included)
  rules        network rules, learned ones marked
  workloads    registered workloads with their groups
  services     services with their virtual IPs and endpoints
  sidecars     connected sidecars and the config version each applied
  events       stored events (violations, connections, threats, audit); see --kind, --since, --follow;
               --kind threat shows NAME SEVERITY ACTION (block or alert) SOURCE DESTINATION and CAPTURE
               (the ID for 'meshguard capture get'); --evidence adds the offending bytes
  connections  flows seen in sidecars' connection reports (mesh system traffic hidden unless --include-system);
               VERDICT is the sidecar's decision (a STRICT refusal of plaintext is a deny), MTLS "no" marks
               plaintext (PERMISSIVE namespaces, pods without a sidecar), FLAGS "mismatch" a protocol on a
               port registered to another (also a protocol-mismatch threat event)

Every list supports -o table (default), -o json and -o yaml, and -n NAMESPACE.`,
		Example: `  meshguard get workloads -n shop
  meshguard get groups -o yaml
  meshguard get rules -n shop -o json
  meshguard get events --kind violation --since 10m
  meshguard get events --kind audit -o json
  meshguard get events --kind threat --since 1h --evidence
  meshguard get events --kind violation --follow
  meshguard get connections --include-system`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"groups", "rules", "workloads", "services", "sidecars", "events", "connections"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(o.output, outputFormats...); err != nil {
				return err
			}
			c, err := g.apiClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			w := cmd.OutOrStdout()
			switch kind := strings.ToLower(args[0]); kind {
			case "group", "groups":
				return getGroups(ctx, c, w, o)
			case "rule", "rules", "networkrule", "networkrules":
				return getRules(ctx, c, w, o)
			case "workload", "workloads", "wl":
				return getWorkloads(ctx, c, w, o)
			case "service", "services", "svc":
				return getServices(ctx, c, w, o)
			case "sidecar", "sidecars":
				return getSidecars(ctx, c, w, o)
			case "event", "events":
				return getEvents(ctx, c, w, o)
			case "connection", "connections", "conn", "conns":
				return getConnections(ctx, c, w, o)
			default:
				return fmt.Errorf("get %q: want one of groups, rules, workloads, services, sidecars, events, connections", args[0])
			}
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.namespace, "namespace", "n", "", "only this namespace")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table, json or yaml")
	f.StringVar(&o.kind, "kind", "", "events: only this kind (connection, violation, threat, incident, audit)")
	f.StringVar(&o.since, "since", "", "events: only newer than this duration (10m, 2h) or RFC 3339 time")
	f.IntVar(&o.limit, "limit", 0, "events: only the newest N (0: all)")
	f.BoolVarP(&o.follow, "follow", "f", false, "events: keep printing new events as they arrive (Ctrl-C stops)")
	f.BoolVar(&o.evidence, "evidence", false, "events --kind threat: add an EVIDENCE column with the offending bytes (escaped; -o json/yaml always carry them)")
	f.BoolVar(&o.includeSystem, "include-system", false, "connections: include mesh system traffic (controller, DNS)")
	return cmd
}

func nsQuery(ns string) string {
	if ns == "" {
		return ""
	}
	return "?namespace=" + url.QueryEscape(ns)
}

func getGroups(ctx context.Context, c *apiClient, w io.Writer, o *getOptions) error {
	var out []api.GroupView
	if err := c.do(ctx, "GET", "/api/v1/groups"+nsQuery(o.namespace), nil, &out); err != nil {
		return err
	}
	return printOut(w, o.output, out, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tMODE\tMEMBERS\tSELECTS")
		for _, g := range out {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", dash(g.Metadata.Namespace), g.Metadata.Name, g.Spec.Mode, len(g.Members), selects(g.Spec))
		}
	})
}

func selects(s policy.GroupSpec) string {
	var parts []string
	if s.Selector != nil {
		keys := make([]string, 0, len(s.Selector.MatchLabels))
		for k := range s.Selector.MatchLabels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			parts = append(parts, k+"="+s.Selector.MatchLabels[k])
		}
		if n := len(s.Selector.MatchExpressions); n > 0 {
			parts = append(parts, fmt.Sprintf("%d expressions", n))
		}
	}
	if s.Namespace != "" {
		parts = append(parts, "namespace="+s.Namespace)
	}
	if s.ServiceAccount != "" {
		parts = append(parts, "serviceAccount="+s.ServiceAccount)
	}
	if e := s.External; e != nil {
		parts = append(parts, e.CIDRs...)
		parts = append(parts, e.DNSNames...)
	}
	return joinOr(parts)
}

func groupRef(r policy.GroupRef) string {
	if r.Namespace != "" {
		return r.Namespace + "/" + r.Group
	}
	return r.Group
}

func getRules(ctx context.Context, c *apiClient, w io.Writer, o *getOptions) error {
	var out []policy.NetworkRule
	if err := c.do(ctx, "GET", "/api/v1/rules"+nsQuery(o.namespace), nil, &out); err != nil {
		return err
	}
	return printOut(w, o.output, out, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tFROM\tTO\tPORTS\tAPPS\tACTION\tLEARNED")
		for _, r := range out {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%v\n", dash(r.Metadata.Namespace), r.Metadata.Name, groupRef(r.Spec.From),
				groupRef(r.Spec.To), joinOr(r.Spec.Ports), joinOr(r.Spec.Applications), r.Spec.Action, r.Spec.Learned)
		}
	})
}

func getWorkloads(ctx context.Context, c *apiClient, w io.Writer, o *getOptions) error {
	var out []api.WorkloadView
	if err := c.do(ctx, "GET", "/api/v1/workloads"+nsQuery(o.namespace), nil, &out); err != nil {
		return err
	}
	return printOut(w, o.output, out, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tIP\tSERVICE-ACCOUNT\tGROUPS")
		for _, x := range out {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", x.Namespace, x.Name, x.IP, x.ServiceAccount, joinOr(x.Groups))
		}
	})
}

func getServices(ctx context.Context, c *apiClient, w io.Writer, o *getOptions) error {
	var out []api.ServiceView
	if err := c.do(ctx, "GET", "/api/v1/services"+nsQuery(o.namespace), nil, &out); err != nil {
		return err
	}
	return printOut(w, o.output, out, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tVIP\tPORTS\tENDPOINTS")
		for _, s := range out {
			var ports []string
			for _, p := range s.Ports {
				ports = append(ports, fmt.Sprintf("%s/%d", p.Protocol, p.Port))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Namespace, s.Name, s.VIP, joinOr(ports), joinOr(s.Endpoints))
		}
	})
}

func getSidecars(ctx context.Context, c *apiClient, w io.Writer, o *getOptions) error {
	var out api.SidecarsResponse
	if err := c.do(ctx, "GET", "/api/v1/sidecars"+nsQuery(o.namespace), nil, &out); err != nil {
		return err
	}
	return printOut(w, o.output, out, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "# config version %d\n", out.Version)
		fmt.Fprintln(tw, "SIDECAR\tIDENTITY\tNODE\tAPPLIED\tUP-TO-DATE\tCONNECTED\tERROR")
		for _, s := range out.Sidecars {
			errText := s.NackError
			if errText == "" {
				errText = s.GenerateError
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%v\t%s\t%s\n", s.Node.Key(), s.Node.ID, dash(s.Node.Node), s.AckedVersion,
				s.UpToDate(out.Version), s.ConnectedAt.Format(time.RFC3339), dash(errText))
		}
	})
}
