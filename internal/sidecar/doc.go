// Package sidecar is the data path of a pod's sidecar: the outbound proxy takes the app's
// intercepted connections (intercept redirects them and gives the original destination),
// resolves each destination to a peer sidecar and carries the stream to it inside mutual TLS
// as an HTTP/2 CONNECT tunnel (h2tunnel), many streams multiplexed over one pooled connection per peer,
// after checking that the peer presents the SPIFFE ID the config expects. The inbound proxy
// accepts those tunnels on one port, hands the authenticated source identity to the admission
// hook (policy) and each stream's plaintext to the inspection hook (DPI, threats), and
// delivers it to the app over loopback; plaintext from unmeshed sources is refused (STRICT)
// or delivered and reported as unauthenticated (PERMISSIVE). Every connection ends in a
// ConnReport.
//
// Wiring, in the pod's network namespace:
//
//	creds := sidecar.WorkloadCredentials(workloadSource)     // SVID read per handshake
//	rules, _ := intercept.New(intercept.Config{OutboundPort: 15001, InboundPort: 15006,
//		TunnelPort: 15008, DNSPort: 15053, ExcludeMark: 0x539, ...})
//	in, _ := sidecar.NewInbound(sidecar.InboundConfig{Creds: creds, TunnelListener: ln15008,
//		PlainListener: ln15006, OriginalDst: intercept.OriginalDst, Admit: ..., Inspect: ..., Report: ...})
//	client, _ := sidecar.NewTunnelClient(sidecar.TunnelClientConfig{Creds: creds, Mark: 0x539, ...})
//	res, _ := sidecar.NewIndexResolver(sidecar.IndexResolverConfig{Current: index.Load, Ready: ready})
//	out, _ := sidecar.NewOutbound(sidecar.OutboundConfig{Listener: ln15001,
//		OriginalDst: intercept.OriginalDst, Resolver: res, Tunnel: client, Mark: 0x539, ...})
//	// rules.Install(); go in.Run(ctx); go out.Run(ctx); after each snapshot: in.SetMode(sidecar.InboundMode(x))
//
// Runtime (runtime.go) is that wiring for the `meshguard sidecar` process: SVID from the
// identity service (join token), interception rules, the proxies, a loopback DNS proxy, the
// config client (snapshots -> resolver index, inbound mode, L4 policy admission; fail-static),
// connection reports with the DPI protocol and L7 summary, and /healthz, /readyz, /metrics on
// 127.0.0.1:15020. It logs "sidecar ready" once it has identity and config.
//
// Enforcement (admit.go, enforce.go): admission decides each inbound stream on source groups,
// destination groups and port. When some rule is application-scoped, a port-level refusal
// (other than an explicit deny rule) is provisional: EnforcingInspector decides again once
// DPI has named the application (failing closed while it has not), then decides every
// request. A refusal answers natively where the protocol allows (HTTP/1 403 with Connection:
// close, Redis -ERR, PostgreSQL ErrorResponse 42501, MySQL ERR 1142) and cuts the stream
// (gRPC/HTTP/2 and other protocols: the stream ends, plaintext TCP is reset). A refused Redis
// command that arrives as whole commands in its chunk is dropped instead (StreamObserver's
// *Drop): the client gets the error and the connection carries on. Reports carry the verdict,
// the deciding rule, the explanation (l7 "reason") and the count of refused requests.
package sidecar
