package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/meshguard/meshguard/internal/api"
	"github.com/meshguard/meshguard/internal/events"
)

func jsonIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	return append(b, '\n'), err
}

func eventsQuery(o *getOptions) string {
	q := url.Values{}
	if o.kind != "" {
		q.Set("kind", o.kind)
	}
	if o.since != "" {
		q.Set("since", o.since)
	}
	if o.limit > 0 {
		q.Set("limit", strconv.Itoa(o.limit))
	}
	if o.follow {
		q.Set("follow", "true")
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

func eventRow(tw io.Writer, e events.Event) {
	src, dst := e.Source.Workload, e.Destination.Workload
	if src == "" {
		src = e.Source.Identity
	}
	if dst == "" {
		dst = e.Destination.Identity
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format(time.DateTime), e.Kind, dash(e.Name),
		dash(src), dash(dst), dash(e.Protocol), dash(e.Action), dash(e.Reason))
}

const eventHeader = "TIME\tKIND\tNAME\tSOURCE\tDESTINATION\tPROTOCOL\tACTION\tREASON"

// threatHeader is the table for --kind threat: what was detected, what the data path did and
// the capture to download ('meshguard capture get ID'); --evidence adds the offending bytes.
const threatHeader = "TIME\tNAME\tSEVERITY\tACTION\tSOURCE\tDESTINATION\tCAPTURE\tREASON"

// maxEvidenceColumn bounds the evidence shown in a table cell; -o json has all of it.
const maxEvidenceColumn = 200

func threatRow(tw io.Writer, e events.Event, evidence bool) {
	src, dst := e.Source.Workload, e.Destination.Workload
	if src == "" {
		src = e.Source.Identity
	}
	if dst == "" {
		dst = e.Destination.Identity
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", e.Time.Local().Format(time.DateTime), dash(termSafe(e.Name)),
		dash(string(e.Severity)), dash(e.Action), dash(termSafe(src)), dash(termSafe(dst)), dash(e.CaptureRef), dash(termSafe(e.Reason)))
	if evidence {
		ev := e.Evidence
		more := ""
		if len(ev) > maxEvidenceColumn {
			ev, more = ev[:maxEvidenceColumn], fmt.Sprintf("... (%d bytes, -o json has all)", len(e.Evidence))
		}
		fmt.Fprintf(tw, "\t%s%s", dash(termSafe(string(ev))), more)
	}
	fmt.Fprintln(tw)
}

// eventTable picks the columns: threat columns when only threats are listed.
func eventTable(o *getOptions) (header string, row func(io.Writer, events.Event)) {
	if o.kind == string(events.KindThreat) {
		header = threatHeader
		if o.evidence {
			header += "\tEVIDENCE"
		}
		return header, func(w io.Writer, e events.Event) { threatRow(w, e, o.evidence) }
	}
	return eventHeader, eventRow
}

func getEvents(ctx context.Context, c *apiClient, w io.Writer, o *getOptions) error {
	if o.evidence && o.kind != string(events.KindThreat) {
		return fmt.Errorf("--evidence shows threat evidence: add --kind threat (or use -o json)")
	}
	if o.follow {
		return followEvents(ctx, c, w, o)
	}
	var out api.EventsResponse
	if err := c.do(ctx, "GET", "/api/v1/events"+eventsQuery(o), nil, &out); err != nil {
		return err
	}
	header, row := eventTable(o)
	return printOut(w, o.output, out.Events, func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, header)
		for _, e := range out.Events {
			row(tw, e)
		}
	})
}

// followEvents streams JSON lines from the API until ctx ends (Ctrl-C) or the controller
// goes away; each event is printed as it arrives.
func followEvents(ctx context.Context, c *apiClient, w io.Writer, o *getOptions) error {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/api/v1/events"+eventsQuery(o), nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := &http.Client{Transport: c.http.Transport} // no overall timeout: this stream is long-lived
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("controller API %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e api.Error
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e) == nil && e.Error != "" {
			return fmt.Errorf("%s", e.Error)
		}
		return fmt.Errorf("controller API: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header, row := eventTable(o)
	if o.output == "table" {
		fmt.Fprintln(tw, header)
	}
	for sc.Scan() {
		var e events.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("event stream: %w", err)
		}
		switch o.output {
		case "json":
			fmt.Fprintf(w, "%s\n", sc.Bytes())
		case "yaml":
			if err := printOut(w, "yaml", []events.Event{e}, nil); err != nil {
				return err
			}
		default:
			row(tw, e)
			tw.Flush()
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return sc.Err()
}
