package threat

import (
	"bytes"
	"container/list"
	"fmt"
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/net/publicsuffix"
)

// DNSConfig tunes the DNS tunnel and zone-transfer detector. Zero fields take the defaults.
type DNSConfig struct {
	Clock clockwork.Clock // required
	// Window over which per-client, per-domain counters accumulate: 60 s.
	Window time.Duration
	// MaxTracked bounds the (client, base domain) pairs kept; the least recently seen pair is
	// forgotten first: 10000 (about 1 KiB each).
	MaxTracked int
	// EncodedQueries: distinct encoded-looking names (long, high-entropy or non-hostname labels,
	// or NULL records) per pair and window before a tunnel is reported: 5.
	EncodedQueries int
	// UniqueNames: distinct names under one base domain per pair and window: 100.
	UniqueNames int
	// RecordVolume: TXT/NULL/ANY/CNAME/KEY queries per pair and window (with at least 10 distinct
	// names, so polling one TXT record is fine): 40.
	RecordVolume int
}

func (c DNSConfig) withDefaults() (DNSConfig, error) {
	if c.Clock == nil {
		return c, fmt.Errorf("threat: dns detector needs a clock (clockwork.NewRealClock())")
	}
	set := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Window <= 0 {
		c.Window = time.Minute
	}
	set(&c.MaxTracked, 10000)
	set(&c.EncodedQueries, 5)
	set(&c.UniqueNames, 100)
	set(&c.RecordVolume, 40)
	return c, nil
}

// DNSQuery is one observed DNS question (from dpi: AttrName and AttrQType of a "query").
type DNSQuery struct {
	Client string // source workload identity or address
	Name   []byte // query name, with or without the trailing dot
	QType  string // "A", "TXT", "NULL", "AXFR"... (dpi's spelling; "TYPE10" also works)
}

// DNSDetector finds DNS tunnels and zone transfer attempts. Safe for concurrent use; memory is
// bounded by MaxTracked.
type DNSDetector struct {
	cfg  DNSConfig
	seed maphash.Seed

	mu    sync.Mutex
	pairs map[string]*list.Element // key: client "\x00" base
	lru   list.List                // of *dnsPair, most recent first
	key   []byte
}

type dnsPair struct {
	key                       string
	start                     time.Time
	queries, encoded, records int
	unique                    map[uint64]struct{}
	reported                  bool
	axfrReported              bool
	lastEncoded               string
}

// maxUniqueTracked bounds each pair's distinct-name set.
const maxUniqueTracked = 512

// NewDNS builds the DNS detector.
func NewDNS(cfg DNSConfig) (*DNSDetector, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &DNSDetector{cfg: cfg, seed: maphash.MakeSeed(), pairs: make(map[string]*list.Element)}, nil
}

// Observe accounts one query and appends a finding when it completes a tunnel pattern (at most
// one dns-tunnel finding per client and base domain per window) or is a zone transfer.
func (d *DNSDetector) Observe(q DNSQuery, dst []Finding) []Finding {
	name := bytes.TrimSuffix(q.Name, []byte("."))
	if len(name) == 0 || len(name) > 255 {
		return dst
	}
	base := baseDomain(name)
	sub := name[:len(name)-len(base)]
	sub = bytes.TrimSuffix(sub, []byte("."))
	qt := strings.ToUpper(q.QType)
	encoded, why := encodedName(sub)
	if qt == "NULL" || qt == "TYPE10" {
		encoded, why = true, "NULL record query"
	}
	record := false
	switch qt {
	case "TXT", "NULL", "TYPE10", "ANY", "CNAME", "KEY", "TYPE65399", "PRIVATE":
		record = true
	}

	now := d.cfg.Clock.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.pair(q.Client, base, now)
	if qt == "AXFR" || qt == "IXFR" {
		if !p.axfrReported {
			p.axfrReported = true
			dst = append(dst, NewFinding(DNSZoneTransfer, "dns:"+string(base), name, qt+" request from "+q.Client))
		}
		return dst
	}
	p.queries++
	h := maphash.Bytes(d.seed, sub)
	_, seen := p.unique[h]
	if !seen && len(p.unique) < maxUniqueTracked {
		p.unique[h] = struct{}{}
	}
	// Tunnels carry new data in every name; re-resolving one odd-looking name is not a tunnel.
	if encoded && !seen {
		p.encoded++
		p.lastEncoded = string(name[:min(len(name), MaxEvidence)])
	}
	if record {
		p.records++
	}
	if p.reported {
		return dst
	}
	var reason string
	switch {
	case p.encoded >= d.cfg.EncodedQueries:
		reason = fmt.Sprintf("%d queries with encoded-looking names (%s)", p.encoded, why)
	case len(p.unique) >= d.cfg.UniqueNames:
		reason = fmt.Sprintf("%d distinct names under one domain", len(p.unique))
	case p.records >= d.cfg.RecordVolume && len(p.unique) >= 10:
		reason = fmt.Sprintf("%d TXT/NULL/ANY/CNAME queries over %d names", p.records, len(p.unique))
	default:
		return dst
	}
	p.reported = true
	ev := p.lastEncoded
	if ev == "" {
		ev = string(name)
	}
	return append(dst, NewFinding(DNSTunnel, "dns:"+string(base), []byte(ev),
		fmt.Sprintf("client %s: %s in %s", q.Client, reason, d.cfg.Window)))
}

// pair returns the (client, base) state, creating it (and evicting the oldest past MaxTracked)
// and starting a new window when the current one has passed. Called with mu held.
func (d *DNSDetector) pair(client string, base []byte, now time.Time) *dnsPair {
	d.key = append(append(append(d.key[:0], client...), 0), base...)
	if e, ok := d.pairs[string(d.key)]; ok {
		d.lru.MoveToFront(e)
		p := e.Value.(*dnsPair)
		if now.Sub(p.start) >= d.cfg.Window {
			p.start, p.queries, p.encoded, p.records, p.reported, p.axfrReported, p.lastEncoded = now, 0, 0, 0, false, false, ""
			clear(p.unique)
		}
		return p
	}
	var p *dnsPair
	if d.lru.Len() >= d.cfg.MaxTracked {
		e := d.lru.Back()
		p = e.Value.(*dnsPair)
		delete(d.pairs, p.key)
		d.lru.Remove(e)
		clear(p.unique)
		*p = dnsPair{unique: p.unique}
	} else {
		p = &dnsPair{unique: make(map[uint64]struct{})}
	}
	p.key, p.start = string(d.key), now
	d.pairs[p.key] = d.lru.PushFront(p)
	return p
}

// Tracked is how many (client, base domain) pairs are held (for tests and metrics).
func (d *DNSDetector) Tracked() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lru.Len()
}

// baseDomain returns the registrable domain (eTLD+1 by the public suffix list; the last two
// labels when the list has no answer), a suffix of name.
func baseDomain(name []byte) []byte {
	n := string(name) // publicsuffix takes a string; names are short
	if base, err := publicsuffix.EffectiveTLDPlusOne(strings.ToLower(n)); err == nil && len(base) <= len(name) {
		return name[len(name)-len(base):]
	}
	dots := 0
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '.' {
			dots++
			if dots == 2 {
				return name[i+1:]
			}
		}
	}
	return name
}

// Label thresholds: tunnels pack data into labels close to the 63-byte limit; hostnames made by
// people and most machine-made ones (CDN, cloud) stay well below it or repeat words.
const (
	longLabel       = 50
	minEntropyChars = 24 // shorter labels cannot show their entropy
)

// encodedName reports whether a subdomain (the part left of the base domain) looks like encoded
// data: a label near the length limit, bytes no hostname has, or a long label with digits whose
// Shannon entropy is as high as random base32/base64/hex data of that length has.
func encodedName(sub []byte) (bool, string) {
	for len(sub) > 0 {
		label := sub
		if i := bytes.IndexByte(sub, '.'); i >= 0 {
			label, sub = sub[:i], sub[i+1:]
		} else {
			sub = nil
		}
		if len(label) >= longLabel {
			return true, "label of 50+ bytes"
		}
		digits := 0
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return true, "non-hostname bytes in label"
			}
			if c >= '0' && c <= '9' {
				digits++
			}
		}
		// Words ("kubernetes-dashboard-metrics") have no digits; encoded data almost always does.
		if len(label) < minEntropyChars || digits == 0 {
			continue
		}
		var counts [256]uint8
		for _, c := range label {
			counts[lower(c)]++
		}
		var h float64
		n := float64(len(label))
		for _, k := range counts {
			if k > 0 {
				p := float64(k) / n
				h -= p * math.Log2(p)
			}
		}
		// About the 5th percentile of random base32 of this length (3.6 bits at 24 chars, 4.1 at 63).
		if h >= 4.4-19/n {
			return true, fmt.Sprintf("label entropy %.2f bits/char", h)
		}
	}
	return false, ""
}

// MismatchFinding reports a protocol on a port registered to another one (dpi.Flow.Mismatch), or
// anything but DNS on port 53, which is how tunnels and covert channels leave a network.
func MismatchFinding(transport string, port uint16, detected string) Finding {
	msg := fmt.Sprintf("%s on %s/%d", detected, transport, port)
	f := NewFinding(ProtocolMismatch, fmt.Sprintf("%s/%d", transport, port), []byte(detected), msg)
	if port == 53 && detected != "dns" {
		f.Severity = High
		f.Message = "non-DNS payload (" + detected + ") on port 53: possible tunnel"
	}
	return f
}
