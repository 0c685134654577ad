package events

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SyslogConfig configures an RFC 5424 syslog exporter.
type SyslogConfig struct {
	Name     string // exporter name; default "syslog:" + Addr
	Network  string // "udp" (RFC 5426, one message per datagram) or "tcp" (RFC 6587 octet counting)
	Addr     string // host:port
	Hostname string // HOSTNAME field; "-" when empty
	AppName  string // default "meshguard"
	Facility int    // 0..23; default 16 (local0)
	Timeout  time.Duration
	Dial     func(ctx context.Context, network, addr string) (net.Conn, error) // default net.Dialer
}

// SDID is the structured-data element carrying event fields. 32473 is the private enterprise
// number RFC 5612 reserves for documentation; operators filter on the element name.
const SDID = "meshguard@32473"

// maxSyslogEvidence caps the evidence a syslog message carries (base64 in the SD element),
// keeping UDP datagrams well under common receiver limits.
const maxSyslogEvidence = 512

// Syslog writes events as RFC 5424 messages; a TCP connection is kept and redialled once on
// a write error.
type Syslog struct {
	cfg  SyslogConfig
	mu   sync.Mutex
	conn net.Conn
}

// NewSyslog validates cfg; it does not dial (the first Export does).
func NewSyslog(cfg SyslogConfig) (*Syslog, error) {
	if cfg.Network != "udp" && cfg.Network != "tcp" {
		return nil, fmt.Errorf("events: syslog network %q must be udp or tcp", cfg.Network)
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("events: syslog addr %q must be host:port: %w", cfg.Addr, err)
	}
	if cfg.Facility < 0 || cfg.Facility > 23 {
		return nil, fmt.Errorf("events: syslog facility %d must be 0..23", cfg.Facility)
	}
	if cfg.Facility == 0 {
		cfg.Facility = 16
	}
	if cfg.Name == "" {
		cfg.Name = "syslog:" + cfg.Addr
	}
	if cfg.AppName == "" {
		cfg.AppName = "meshguard"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Dial == nil {
		d := &net.Dialer{}
		cfg.Dial = d.DialContext
	}
	return &Syslog{cfg: cfg}, nil
}

// Name implements Exporter.
func (s *Syslog) Name() string { return s.cfg.Name }

// Close drops the connection.
func (s *Syslog) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}

// Export implements Exporter.
func (s *Syslog) Export(ctx context.Context, e Event) error {
	msg := FormatRFC5424(e, s.cfg.Facility, s.cfg.Hostname, s.cfg.AppName)
	if s.cfg.Network == "tcp" {
		msg = append(strconv.AppendInt(nil, int64(len(msg)), 10), append([]byte{' '}, msg...)...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for try := 0; try < 2; try++ {
		if s.conn == nil {
			dctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
			s.conn, err = s.cfg.Dial(dctx, s.cfg.Network, s.cfg.Addr)
			cancel()
			if err != nil {
				s.conn = nil
				return fmt.Errorf("events: syslog %s: dial: %w", s.cfg.Name, err)
			}
		}
		_ = s.conn.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
		if _, err = s.conn.Write(msg); err == nil {
			return nil
		}
		s.conn.Close()
		s.conn = nil
	}
	return fmt.Errorf("events: syslog %s: write: %w", s.cfg.Name, err)
}

// syslogSeverity maps event severity to RFC 5424 severity codes.
func syslogSeverity(e Event) int {
	switch e.Severity {
	case SeverityCritical:
		return 2
	case SeverityHigh:
		return 3
	case SeverityMedium:
		return 4
	case SeverityLow:
		return 5
	}
	if e.Kind == KindThreat || e.Kind == KindViolation {
		return 4
	}
	return 6
}

// FormatRFC5424 renders one syslog message (without transport framing):
//
//	<PRI>1 TIMESTAMP HOSTNAME APP-NAME - KIND [meshguard@32473 name="..." ...] summary
func FormatRFC5424(e Event, facility int, hostname, app string) []byte {
	var b strings.Builder
	b.WriteByte('<')
	b.WriteString(strconv.Itoa(facility*8 + syslogSeverity(e)))
	b.WriteString(">1 ")
	t := e.Time
	if t.IsZero() {
		t = time.Now()
	}
	b.WriteString(t.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
	b.WriteByte(' ')
	b.WriteString(header(hostname, 255))
	b.WriteByte(' ')
	b.WriteString(header(app, 48))
	b.WriteString(" - ")
	b.WriteString(header(string(e.Kind), 32))
	b.WriteString(" [")
	b.WriteString(SDID)
	param := func(k, v string) {
		if v == "" {
			return
		}
		b.WriteByte(' ')
		b.WriteString(k)
		b.WriteString(`="`)
		for _, r := range v {
			switch {
			case r == '"' || r == '\\' || r == ']':
				b.WriteByte('\\')
			case r < 0x20 || r == 0x7f:
				r = ' ' // line-based receivers must not see a message split in two
			}
			b.WriteRune(r) // invalid UTF-8 becomes U+FFFD, keeping the message valid UTF-8
		}
		b.WriteByte('"')
	}
	param("kind", string(e.Kind))
	param("name", e.Name)
	param("severity", string(e.Severity))
	param("action", e.Action)
	param("src", e.Source.Workload)
	param("srcIdentity", e.Source.Identity)
	param("srcGroup", e.Source.Group)
	param("srcAddr", e.Source.Address)
	param("dst", e.Destination.Workload)
	param("dstIdentity", e.Destination.Identity)
	param("dstGroup", e.Destination.Group)
	param("dstAddr", e.Destination.Address)
	param("protocol", e.Protocol)
	param("l7", e.L7)
	param("rule", e.RuleID)
	param("reason", e.Reason)
	param("captureRef", e.CaptureRef)
	if len(e.Evidence) > 0 {
		ev := e.Evidence
		if len(ev) > maxSyslogEvidence {
			ev = ev[:maxSyslogEvidence]
		}
		param("evidenceB64", base64.StdEncoding.EncodeToString(ev))
	}
	b.WriteString("] ")
	b.WriteString(summary(e))
	return []byte(b.String())
}

// header renders a header field: printable US-ASCII without spaces, bounded, "-" when empty.
func header(s string, limit int) string {
	out := make([]byte, 0, min(len(s), limit))
	for i := 0; i < len(s) && len(out) < limit; i++ {
		if c := s[i]; c > 32 && c < 127 {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return string(out)
}

func summary(e Event) string {
	var parts []string
	for _, p := range []string{e.Name, e.Action, e.Reason} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	s := strings.Join(parts, ": ")
	if e.Source.Workload != "" || e.Destination.Workload != "" {
		s += " (" + e.Source.Workload + " -> " + e.Destination.Workload + ")"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r // strings.Map turns invalid UTF-8 into U+FFFD
	}, s)
}
