// Package dpi detects application protocols from the bytes of a flow (never from the port) and
// turns each flow into L7 messages with incremental, bounded parsers.
//
// Every protocol meshguard understands is one file in this package implementing Protocol, and
// one line in DefaultProtocols (registry.go). Detection and parsing work on []byte views: a
// Message and its attribute values are only valid during the emit callback; copy what you keep.
package dpi

import "unsafe"

// Direction of bytes within a flow.
type Direction uint8

const (
	ClientToServer Direction = iota // from the side that opened the flow
	ServerToClient
)

func (d Direction) String() string {
	if d == ServerToClient {
		return "server"
	}
	return "client"
}

// Transport is the layer-4 protocol a Protocol runs over.
type Transport uint8

const (
	TCP Transport = 1 << iota
	UDP
	ICMP
)

func (t Transport) String() string {
	switch t {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case ICMP:
		return "icmp"
	}
	return "unknown"
}

// Verdict is a detector's answer about the bytes seen so far.
type Verdict uint8

const (
	No       Verdict = iota // certainly not this protocol
	NeedMore                // could be, more bytes (or the other direction) would tell
	Maybe                   // plausible, but a Yes from another protocol wins
	Yes                     // this protocol
)

// Probe is what detection sees: the first bytes of each direction of a flow (for UDP, the
// first datagram of each direction). Either side may be empty, and for flows seen from the
// middle the bytes may start mid-message.
type Probe struct {
	Transport  Transport
	Client     []byte
	Server     []byte
	ServerPort uint16 // for tie-breaking only; detection must not rely on it
	Midstream  bool   // the flow's start was not seen
}

// MaxProbe is how many bytes per direction detection looks at before giving up.
const MaxProbe = 2048

// MaxBuffer bounds what any parser buffers per direction to reassemble one message; data past
// it is skipped (the parser resynchronises), never accumulated.
const MaxBuffer = 64 << 10

// Protocol is one application protocol.
type Protocol interface {
	// Name is the lowercase protocol name used in policy and output ("http", "redis", ...).
	Name() string
	// Transports says which layer-4 protocols it runs over (a bit set).
	Transports() Transport
	// Ports lists its well-known ports, used only to flag protocol/port mismatches.
	Ports() []uint16
	// Detect inspects a probe.
	Detect(p *Probe) Verdict
	// NewParser returns a parser for one flow detected as this protocol.
	NewParser() Parser
}

// Parser turns one flow's bytes into messages. Implementations buffer at most MaxBuffer per
// direction, accept arbitrarily segmented input, tolerate starting mid-stream, and never panic.
type Parser interface {
	// Feed gives the next bytes of dir (for UDP/ICMP: one datagram). emit is called for every
	// complete message; the *Message is reused after emit returns. Feed returns an error only
	// when the flow can no longer be parsed as this protocol; the caller then stops feeding.
	Feed(dir Direction, data []byte, emit func(*Message)) error
}

// Message is one L7 unit: an HTTP request or response, a DNS query, a Redis command, a TLS
// ClientHello... Its Type and attributes are views valid only during the emit callback.
type Message struct {
	Dir   Direction
	Type  string // protocol-specific kind: "request", "response", "query", "command", "hello"...
	attrs [16]Attr
	n     int
}

// Attr is one L7 attribute of a message.
type Attr struct {
	Key   string // one of the Attr* constants where one fits
	Value []byte // read-only: it may view a parser's buffer or a string constant
}

// Common attribute keys. Policy and threat detection read these; protocol-specific extras may
// use other lowercase keys.
const (
	AttrMethod    = "method"    // HTTP method, gRPC: POST
	AttrHost      = "host"      // HTTP Host / :authority
	AttrPath      = "path"      // HTTP path (raw, with query)
	AttrStatus    = "status"    // HTTP status, reply codes (SMTP 250, FTP 230...)
	AttrService   = "service"   // gRPC service ("pkg.Service")
	AttrRPC       = "rpc"       // gRPC method name
	AttrCommand   = "command"   // Redis/SMTP/FTP/IMAP/POP3/Memcached/NATS... command, uppercased
	AttrVerb      = "verb"      // SQL statement verb, uppercased (SELECT, INSERT, DROP...)
	AttrQuery     = "query"     // SQL text or similar free text (capped by the parser)
	AttrName      = "name"      // DNS query name, LDAP DN, ZooKeeper path...
	AttrQType     = "qtype"     // DNS query type (A, AAAA, TXT...)
	AttrRCode     = "rcode"     // DNS rcode (NOERROR, NXDOMAIN...)
	AttrAnswer    = "answer"    // DNS answer data, one attr per answer
	AttrUser      = "user"      // user / login name
	AttrDatabase  = "database"  // database / keyspace / vhost
	AttrTopic     = "topic"     // Kafka/MQTT/NATS/AMQP topic, subject, queue or exchange
	AttrClientID  = "client_id" // Kafka/MQTT client id
	AttrSNI       = "sni"       // TLS server name
	AttrALPN      = "alpn"      // TLS ALPN, one attr per protocol
	AttrVersion   = "version"   // protocol version string
	AttrJA3       = "ja3"       // TLS JA3 hash
	AttrJA4       = "ja4"       // TLS JA4 fingerprint
	AttrUserAgent = "user_agent"
	AttrSoftware  = "software" // SSH/server banner software
)

// Reset empties the message for reuse.
func (m *Message) Reset(dir Direction, typ string) {
	m.Dir, m.Type, m.n = dir, typ, 0
}

// Add appends an attribute; past the fixed capacity (16) further attributes are dropped.
func (m *Message) Add(key string, value []byte) {
	if m.n < len(m.attrs) {
		m.attrs[m.n] = Attr{Key: key, Value: value}
		m.n++
	}
}

// AddString appends an attribute from a string without copying it: the value is a read-only
// view of the string's bytes (consumers never modify attribute values).
func (m *Message) AddString(key, value string) {
	m.Add(key, unsafe.Slice(unsafe.StringData(value), len(value)))
}

// Attrs returns the attributes in insertion order (a view).
func (m *Message) Attrs() []Attr { return m.attrs[:m.n] }

// Get returns the first value for key, or nil.
func (m *Message) Get(key string) []byte {
	for i := 0; i < m.n; i++ {
		if m.attrs[i].Key == key {
			return m.attrs[i].Value
		}
	}
	return nil
}
