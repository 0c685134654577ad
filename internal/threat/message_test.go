package threat

import (
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/meshguard/meshguard/internal/dpi"
)

func TestMessageDetectors(t *testing.T) {
	dns, err := NewDNS(DNSConfig{Clock: clockwork.NewFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	d := &MessageDetectors{DNS: dns}
	var m dpi.Message

	m.Reset(dpi.ClientToServer, "command")
	m.AddString(dpi.AttrCommand, "CONFIG")
	m.AddString("key", "SET")
	if f := d.Inspect("redis", "10.0.0.9", &m, false, nil); len(f) != 1 || f[0].Detector != RedisDangerousCommand {
		t.Fatalf("redis CONFIG SET: %v", f)
	}
	if f := d.Inspect("redis", "10.0.0.9", &m, true, nil); len(f) != 0 {
		t.Fatalf("allowed admin flagged: %v", f)
	}

	m.Reset(dpi.ClientToServer, "query")
	m.AddString(dpi.AttrVerb, "COPY")
	m.AddString(dpi.AttrQuery, "COPY t FROM PROGRAM 'id'")
	if f := d.Inspect("postgres", "10.0.0.9", &m, false, nil); len(f) != 1 || f[0].Detector != SQLDangerousStatement {
		t.Fatalf("postgres COPY PROGRAM: %v", f)
	}

	m.Reset(dpi.ClientToServer, "query")
	m.AddString(dpi.AttrName, "corp.example.com")
	m.AddString(dpi.AttrQType, "AXFR")
	if f := d.Inspect("dns", "10.0.0.9", &m, false, nil); len(f) != 1 || f[0].Detector != DNSZoneTransfer {
		t.Fatalf("dns AXFR: %v", f)
	}
	// Server-to-client messages are not client behaviour.
	m.Reset(dpi.ServerToClient, "response")
	m.AddString(dpi.AttrName, "other.example.com")
	m.AddString(dpi.AttrQType, "AXFR")
	if f := d.Inspect("dns", "10.0.0.9", &m, false, nil); len(f) != 0 {
		t.Fatalf("response inspected: %v", f)
	}
}
