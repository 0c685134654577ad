package threat

import (
	"github.com/meshguard/meshguard/internal/dpi"
)

// MessageDetectors runs the detectors that work on DPI messages (DNS questions, Redis commands,
// SQL statements): the sidecar hands every message from a dpi.Flow's callback to Inspect.
type MessageDetectors struct {
	DNS *DNSDetector // nil: DNS is not inspected
}

// Inspect appends the findings for one DPI message of the protocol proto ("dns", "redis",
// "postgres", "mysql"...) sent by client. adminAllowed says whether client may run
// administrative commands on this destination (from policy); it silences the
// dangerous-command detectors. Messages of other protocols are ignored.
func (d *MessageDetectors) Inspect(proto, client string, m *dpi.Message, adminAllowed bool, dst []Finding) []Finding {
	if m.Dir != dpi.ClientToServer {
		return dst
	}
	switch proto {
	case "dns", "mdns":
		if d.DNS == nil {
			return dst
		}
		if name := m.Get(dpi.AttrName); name != nil {
			dst = d.DNS.Observe(DNSQuery{Client: client, Name: name, QType: string(m.Get(dpi.AttrQType))}, dst)
		}
	case "redis":
		if cmd := m.Get(dpi.AttrCommand); cmd != nil {
			var args [1][]byte
			n := 0
			if k := m.Get("key"); k != nil { // dpi's redis parser reports the first argument as "key"
				args[0], n = k, 1
			}
			dst = InspectRedis(cmd, args[:n], adminAllowed, dst)
		}
	case "postgres", "mysql", "mssql", "tds":
		if q := m.Get(dpi.AttrQuery); q != nil {
			dst = InspectSQL(q, adminAllowed, dst)
		}
	}
	return dst
}
