package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/meshguard/meshguard/internal/events"
	"github.com/meshguard/meshguard/internal/policy"
	"github.com/meshguard/meshguard/internal/registry"
	"github.com/meshguard/meshguard/internal/xds"
)

// StatusError is an error the caller can fix; the API answers with Status and the message
// verbatim (policy validation errors keep their file:line: field lines intact).
type StatusError struct {
	Status int
	Err    error
}

func (e *StatusError) Error() string { return e.Err.Error() }
func (e *StatusError) Unwrap() error { return e.Err }

// Invalid marks err as the request's fault (HTTP 400).
func Invalid(err error) error { return &StatusError{Status: http.StatusBadRequest, Err: err} }

// NotFound marks err as naming something that does not exist (HTTP 404).
func NotFound(err error) error { return &StatusError{Status: http.StatusNotFound, Err: err} }

// Conflict marks err as a request the current state cannot serve (HTTP 409).
func Conflict(err error) error { return &StatusError{Status: http.StatusConflict, Err: err} }

// File is one policy file as the user wrote it; the server parses it so errors name the
// user's file and line.
type File struct {
	Name    string `json:"name"`
	Content string `json:"content"`
}

// ApplyRequest is the body of POST /api/v1/policy/apply and /api/v1/policy/test.
type ApplyRequest struct {
	Files []File `json:"files"`
}

// ApplyResponse says which documents an apply wrote and the policy version it made.
type ApplyResponse struct {
	Version uint64             `json:"version"`
	Objects []policy.ObjectRef `json:"objects"`
}

// PolicyResponse is GET /api/v1/policy: the whole policy as deterministic YAML.
type PolicyResponse struct {
	Version uint64 `json:"version"`
	YAML    string `json:"yaml"`
}

// ModeRequest is the body of POST /api/v1/policy/mode.
type ModeRequest struct {
	Group string      `json:"group"` // "ns/name", or "name" for a cluster-scoped group
	Mode  policy.Mode `json:"mode"`
}

// ExplainRequest asks how the policy decides a connection (and optionally one request)
// without sending traffic.
type ExplainRequest struct {
	From   string `json:"from"`           // "ns/workload"
	To     string `json:"to"`             // "ns/workload" or "ns/service"
	Port   uint16 `json:"port,omitempty"` // 0: any port
	UDP    bool   `json:"udp,omitempty"`
	App    string `json:"app,omitempty"` // DPI application name ("http", "redis")
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
}

// ExplainResponse is the decision and a human account of every rule about the destination.
type ExplainResponse struct {
	Decision    DecisionView `json:"decision"`
	Summary     string       `json:"summary"`
	Explanation string       `json:"explanation"`
	FromGroups  []string     `json:"fromGroups"`
	ToGroups    []string     `json:"toGroups"`
}

// DecisionView is policy.Decision as the API sends it (and clients decode it).
type DecisionView struct {
	Verdict   policy.Verdict `json:"verdict"`
	Violation bool           `json:"violation,omitempty"`
	Learn     bool           `json:"learn,omitempty"`
	Mode      policy.Mode    `json:"mode"`
	Reason    string         `json:"reason"`
	RuleID    string         `json:"rule,omitempty"`
	Learned   bool           `json:"learned,omitempty"`
	Group     string         `json:"group,omitempty"`
	NearMiss  string         `json:"nearMiss,omitempty"`
}

// ViewOf converts a decision.
func ViewOf(d policy.Decision) DecisionView {
	return DecisionView{Verdict: d.Verdict, Violation: d.Violation, Learn: d.Learn, Mode: d.Mode, Reason: d.Reason.String(),
		RuleID: d.RuleID, Learned: d.Learned, Group: d.Group, NearMiss: d.NearMiss}
}

// FlowChange is one recorded flow whose verdict a proposed policy would change.
type FlowChange struct {
	Flow   string         `json:"flow"`
	App    string         `json:"app,omitempty"`
	Before policy.Verdict `json:"before"`
	After  policy.Verdict `json:"after"`
	Why    string         `json:"why"`
	Detail DecisionView   `json:"decision"`
}

// PolicyTestResponse is POST /api/v1/policy/test.
type PolicyTestResponse struct {
	Flows   int          `json:"flows"` // recorded flows replayed
	Changes []FlowChange `json:"changes"`
}

// PolicyAdmin is what the API needs from the controller's policy store. Errors that are the
// caller's fault are *StatusError (Invalid, NotFound); anything else is a 500.
type PolicyAdmin interface {
	Current() (*policy.Set, uint64)
	Apply(ctx context.Context, by string, incoming *policy.Set) (uint64, error)
	Delete(ctx context.Context, by, kind, key string) (uint64, error)
	SetMode(ctx context.Context, by, groupKey string, m policy.Mode) (uint64, error)
	Explain(ctx context.Context, q ExplainRequest) (ExplainResponse, error)
	Test(ctx context.Context, proposed *policy.Set) (PolicyTestResponse, error)
}

// RegistryView is what the API reads from the registry.
type RegistryView interface {
	Workloads() []registry.Workload
	Services() []registry.Service
	GroupsOf(namespace, name string) []string
	Members(groupKey string) []string
}

// SidecarLister reports the connected sidecars (the xds server).
type SidecarLister interface {
	Sidecars() []xds.SidecarStatus
	Version() uint64
}

// Connection is one aggregated flow seen in connection reports.
type Connection struct {
	Source      string    `json:"source"`      // "ns/workload", or an address when unknown
	Destination string    `json:"destination"` // "ns/workload", or an address
	SrcGroup    string    `json:"sourceGroup,omitempty"`
	DstGroup    string    `json:"destinationGroup,omitempty"`
	Port        uint16    `json:"port"`
	Transport   string    `json:"transport"` // tcp or udp
	App         string    `json:"app,omitempty"`
	Verdict     string    `json:"verdict"`
	RuleID      string    `json:"rule,omitempty"`
	Count       uint64    `json:"count"`
	Bytes       uint64    `json:"bytes"`
	LastSeen    time.Time `json:"lastSeen"`
	System      bool      `json:"system,omitempty"` // mesh system traffic (controller, DNS)
	// Authenticated: the source proved a SPIFFE identity over mTLS. False for plaintext a
	// PERMISSIVE namespace accepted (or STRICT refused) and for calls to unmeshed pods.
	Authenticated bool `json:"authenticated"`
	// Mismatch: DPI found a protocol on a port registered to another (e.g. SSH on 443).
	Mismatch bool `json:"mismatch,omitempty"`
}

// ConnectionSource lists aggregated connections, newest activity last.
type ConnectionSource interface {
	Connections() []Connection
}

// EventStore is the persistent event store (events.Store implements it).
type EventStore interface {
	Query(q events.Query) ([]events.Event, error)
	Subscribe(ctx context.Context, q events.Query, buf int) <-chan events.Event
}

// Role is what a principal may do.
type Role string

const (
	RoleAdmin           Role = "admin"            // everything
	RoleNamespaceEditor Role = "namespace-editor" // read everything, change its namespace's policy
	RoleViewer          Role = "viewer"           // read everything
)

// Roles lists the roles for error messages.
func Roles() []string {
	return []string{string(RoleAdmin), string(RoleNamespaceEditor), string(RoleViewer)}
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool {
	return r == RoleAdmin || r == RoleNamespaceEditor || r == RoleViewer
}

// Principal is who makes a request.
type Principal struct {
	Name      string `json:"name"`
	Role      Role   `json:"role"`
	Namespace string `json:"namespace,omitempty"` // namespace-editor only
}

// Validate checks a principal before it is stored.
func (p Principal) Validate() error {
	if p.Name == "" {
		return errors.New("name is required")
	}
	if !p.Role.Valid() {
		return errors.New("role " + string(p.Role) + ": want admin, namespace-editor or viewer")
	}
	if (p.Role == RoleNamespaceEditor) != (p.Namespace != "") {
		return errors.New("namespace is required for role namespace-editor and only for it")
	}
	return nil
}
