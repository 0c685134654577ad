// Package policy is meshguard's v1alpha1 policy model: the documents users apply (Group,
// NetworkRule, and the ProcessProfile, FileRule and ResponseRule kinds), their loading and
// validation with errors that point at file, line and field, a deterministic export, and the
// compiled form the sidecar consults for every connection and request.
//
// The document shape is the Kubernetes custom resource shape (apiVersion
// meshguard.io/v1alpha1, kind, metadata{name, namespace, labels}, spec), so the YAML applied
// locally is the YAML a cluster stores, and the JSON the REST API speaks is the same shape.
//
// # Life of a policy
//
//	set, err := policy.LoadPaths(os.Stdin, "-f args"...) // or Parse(name, bytes)
//	merged := current.Merge(set)                         // an apply: upsert by kind/ns/name
//	err = merged.Validate()                              // whole set; all-or-nothing
//	out, _ := merged.Export()                            // deterministic YAML; re-applies identically
//	p, _ := engine.Update(merged)                        // compile + atomic swap
//	d := engine.Decide(&policy.Input{...})               // zero allocations
//
// # Scoping
//
// A document with a namespace may only protect groups of its own namespace: a namespaced
// NetworkRule's to side (and a ProcessProfile's, FileRule's, ResponseRule's group) must be a
// group of that namespace, or a cluster-scoped external group (egress). Its from side may name
// any group: {group: web} means web in the rule's namespace, falling back to a cluster-scoped
// group web; {group: web, namespace: other} names another namespace's group. Cluster-scoped
// documents (no namespace) are for the platform team.
//
// # Decisions
//
// Decide evaluates, for the source's groups and the destination's groups:
//
//  1. explicit deny rules, lowest priority value first: the first that matches denies;
//  2. allow rules, lowest priority value first: the first that matches allows;
//  3. otherwise the strictest mode among the destination's groups: discover allows and asks
//     for learning, monitor allows and reports a violation, protect denies (a violation).
//
// Priorities order rules within each step (and pick the rule named in the decision); they
// never let an allow override a deny. Validate rejects an allow and a deny rule with the same
// from, to, priority, port and application (and no l7 section): the allow could never apply.
//
// A rule matches when the source is in its from group, the destination is in its to group,
// the port matches one of its ports ("any", "tcp/any", "tcp/6379", "udp/53", "tcp/8000-8100";
// none given means any), the application is one of its applications ("any" or none given
// means any; the name is the DPI protocol name), and its l7 section matches (below).
//
// # L7
//
// An l7 section narrows a rule to some requests: http (methods, path prefixes, hosts; for
// http, http2 and grpc), grpc (services, methods "pkg.Service/Method" or "Method"; for grpc
// and http2), dns (names, exact or "*.suffix"), redis (allowCommands, denyCommands) and sql
// (verbs, denyVerbs; for postgres/postgresql/mysql/mariadb). A rule with an l7 section only
// matches applications one of its sections is about, and every section that applies must
// match (AND); within a section every non-empty list must match.
//
// http, grpc and dns sections select requests: an allow rule allows them, a deny rule denies
// them. redis and sql sections filter: a request is permitted when it is in
// allowCommands/verbs (if given) and not in denyCommands/denyVerbs; an allow rule allows the
// permitted requests, a deny rule denies the others — so both `allow` with `denyCommands:
// [FLUSHALL]` and `deny` with `denyCommands: [FLUSHALL]` refuse FLUSHALL.
//
// Decide is called for the connection (Input.L7 nil) and then for each request. For the
// connection, allow rules with an l7 section admit it and deny rules with one do not apply.
// Server-to-client messages are treated as the connection. A request an allow rule refuses
// only by its l7 section is reported in Decision.NearMiss and is never learned.
//
// Path prefixes are plain byte prefixes of the path without its query ("/api" also matches
// "/apix"; write "/api/" to mean the directory). Paths a server could normalise to something
// else (percent-encoding, backslashes, "//", "." or ".." segments) fail closed: they match
// no allow rule's path list and every deny rule's path list. Hosts ignore a ":port" suffix;
// names compare case-insensitively and ignore a trailing dot.
//
// # Group IDs
//
// Inputs carry numeric group IDs (Policy.GroupID, Policy.GroupIDsOf). An Engine keeps one
// GroupIDs table for all its compiles, so IDs a sidecar cached for its peers stay valid
// across updates; a group deleted from the policy simply matches nothing.
package policy
