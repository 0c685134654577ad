package sidecar

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	xdsv1 "github.com/meshguard/meshguard/api/xds/v1"
)

// Direction says which proxy handled a connection.
type Direction string

const (
	Outbound Direction = "outbound"
	Inbound  Direction = "inbound"
)

// CloseReason says how a connection ended; reports carry it for the controller and metrics.
type CloseReason string

const (
	ReasonClosed       CloseReason = "closed"        // both sides finished normally
	ReasonReset        CloseReason = "reset"         // a side failed mid-stream (read/write error)
	ReasonStrictRefuse CloseReason = "strict-refuse" // plaintext from an unmeshed source, STRICT mode
	ReasonDenied       CloseReason = "denied"        // the admission hook or resolver refused it
	ReasonDialFailed   CloseReason = "dial-failed"   // the app (inbound) or peer/destination (outbound) was unreachable
	ReasonTunnelFailed CloseReason = "tunnel-failed" // TLS or HTTP/2 to the peer failed, including a wrong peer identity
	ReasonDrained      CloseReason = "drained"       // cut because the sidecar shut down after its drain timeout
)

// ConnReport summarises one proxied connection (one tunnel stream, or one plaintext
// connection) after it ended. The sidecar batches these to the controller.
type ConnReport struct {
	Direction Direction
	// Source and Destination are SPIFFE IDs; a zero ID means unknown. Inbound: Source is the
	// authenticated peer (zero and Authenticated=false for PERMISSIVE plaintext), Destination
	// this sidecar. Outbound: Source is this sidecar, Destination the verified peer (zero for
	// passthrough to an unmeshed destination).
	Source, Destination spiffeid.ID
	// Authenticated: inbound, the source proved its identity (mTLS); outbound, the
	// destination did (tunnel to a verified peer).
	Authenticated bool
	SourceAddr    netip.AddrPort // the app (outbound) or the remote peer (inbound)
	DestAddr      netip.AddrPort // original destination (outbound) or delivered app address (inbound)
	PeerAddr      string         // outbound: the peer sidecar's tunnel address, empty for passthrough
	BytesSent     int64          // source -> destination
	BytesReceived int64          // destination -> source
	Start         time.Time
	Duration      time.Duration
	Reason        CloseReason
	Err           string // detail for non-normal reasons; never contains payload or secrets
	// AppProtocol and L7 are filled by an inspection observer that implements Annotator
	// (DPI): the detected application protocol and a bounded L7 summary.
	AppProtocol string
	L7          map[string]string
	// Policy outcome, filled where the policy decided (admission, the enforcing observer):
	// Verdict "allow" or "deny" ("" when nothing decided), the deciding rule, the decision's
	// explanation, and how many single requests were refused on an otherwise allowed stream.
	Verdict        string
	RuleID         string
	Decision       string
	DeniedRequests int
}

// noteDenial records the policy decision carried by a refusal error, if it carries one.
func (r *ConnReport) noteDenial(err error) {
	var pd *policyDenial
	if errors.As(err, &pd) {
		r.Verdict, r.RuleID, r.Decision = "deny", pd.d.RuleID, pd.text()
	}
}

// DialFunc opens a TCP connection; the proxies take one so a process outside the pod's
// network namespace (tests, a node agent) can dial from inside it. nil means net.Dialer.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Reporter receives connection reports. It is called on the connection's goroutine after the
// connection ended, so it must not block (queue and batch).
type Reporter func(ConnReport)

// Proto converts the report for the controller (xds Batcher.Add). Policy fields (verdict,
// rule) are left for the layers that know them.
func (r ConnReport) Proto() *xdsv1.ConnectionReport {
	p := &xdsv1.ConnectionReport{
		Direction:     string(r.Direction),
		Authenticated: r.Authenticated,
		BytesSent:     uint64(max(r.BytesSent, 0)),
		BytesReceived: uint64(max(r.BytesReceived, 0)),
		StartUnixNano: r.Start.UnixNano(),
		DurationNanos: int64(r.Duration),
		CloseReason:   string(r.Reason),
		Error:         r.Err,
		AppProtocol:   r.AppProtocol,
		L7:            r.L7,
		Verdict:       r.Verdict,
		RuleId:        r.RuleID,
	}
	if r.Decision != "" || r.DeniedRequests > 0 {
		l7 := make(map[string]string, len(r.L7)+2)
		for k, v := range r.L7 {
			l7[k] = v
		}
		if r.Decision != "" {
			l7["reason"] = r.Decision
		}
		if r.DeniedRequests > 0 {
			l7["denied_requests"] = strconv.Itoa(r.DeniedRequests)
		}
		p.L7 = l7
	}
	if !r.Source.IsZero() {
		p.SourceSpiffeId = r.Source.String()
	}
	if !r.Destination.IsZero() {
		p.DestinationSpiffeId = r.Destination.String()
	}
	// Dual-stack listeners see IPv4 peers as ::ffff:a.b.c.d; the controller keys on plain IPv4.
	if r.SourceAddr.IsValid() {
		p.SourceAddr = netip.AddrPortFrom(r.SourceAddr.Addr().Unmap(), r.SourceAddr.Port()).String()
	}
	if r.DestAddr.IsValid() {
		p.DestinationAddr = r.DestAddr.Addr().Unmap().String()
		p.DestinationPort = uint32(r.DestAddr.Port())
	}
	return p
}
