package inspect

import (
	"net/netip"
	"sort"
	"time"
)

// IP fragment reassembly, IPv4 and IPv6 alike. gopacket's ip4defrag covers IPv4 only, needs a
// decoded layers.IPv4 per fragment and has no cap on datagrams in flight; captures of
// hostile or lossy networks need hard bounds, so one small reassembler serves both families.
const (
	maxFragDatagrams = 256              // datagrams being reassembled at once; the oldest is evicted
	maxFragsPerDgram = 64               // fragments per datagram (64 KiB / 1 KiB)
	maxDgramSize     = 65535            // an IP datagram cannot be larger
	fragTimeout      = 30 * time.Second // capture time; as Linux's ipfrag_time
)

type fragKey struct {
	src, dst netip.Addr
	id       uint32
	proto    uint8
}

type fragPiece struct {
	off  int
	data []byte
}

type fragDgram struct {
	first   time.Time
	total   int // payload length, known once the last fragment (MF clear) arrived; -1 before
	pieces  []fragPiece
	size    int // bytes held
	frames  uint64
	wireLen uint64
}

type defragger struct {
	dgrams map[fragKey]*fragDgram
	buf    []byte // the last reassembled payload; valid until the next add
	// Counters for the result.
	fragments, reassembled, discarded uint64
}

func newDefragger() *defragger { return &defragger{dgrams: make(map[fragKey]*fragDgram)} }

// add takes one fragment's payload (off in bytes, more = MF flag). When the datagram is
// complete it returns its transport payload (valid until the next call), how many frames it
// spanned and their wire bytes.
func (d *defragger) add(k fragKey, off int, more bool, data []byte, ts time.Time, wireLen int) (payload []byte, frames, bytes uint64, ok bool) {
	d.fragments++
	if off+len(data) > maxDgramSize || (more && len(data)%8 != 0) {
		d.discarded++
		return nil, 0, 0, false
	}
	g := d.dgrams[k]
	if g != nil && ts.Sub(g.first) > fragTimeout {
		delete(d.dgrams, k)
		d.discarded++
		g = nil
	}
	if g == nil {
		if len(d.dgrams) >= maxFragDatagrams {
			d.expire(ts)
			if len(d.dgrams) >= maxFragDatagrams {
				d.evictOldest()
			}
		}
		g = &fragDgram{first: ts, total: -1}
		d.dgrams[k] = g
	}
	g.frames++
	g.wireLen += uint64(wireLen)
	if !more {
		end := off + len(data)
		if g.total >= 0 && g.total != end {
			d.drop(k) // two different ends: not one datagram
			return nil, 0, 0, false
		}
		g.total = end
	}
	if len(g.pieces) >= maxFragsPerDgram {
		d.drop(k)
		return nil, 0, 0, false
	}
	g.pieces = append(g.pieces, fragPiece{off: off, data: append([]byte(nil), data...)})
	g.size += len(data)
	if g.total < 0 {
		return nil, 0, 0, false
	}
	// Complete when the pieces, sorted, cover [0, total) without a hole. Overlaps (allowed in
	// IPv4, forbidden in IPv6) keep the first copy of each byte.
	sort.SliceStable(g.pieces, func(i, j int) bool { return g.pieces[i].off < g.pieces[j].off })
	covered := 0
	for _, p := range g.pieces {
		if p.off > covered {
			return nil, 0, 0, false
		}
		if e := p.off + len(p.data); e > covered {
			covered = e
		}
	}
	if covered < g.total {
		return nil, 0, 0, false
	}
	if cap(d.buf) < g.total {
		d.buf = make([]byte, g.total)
	}
	d.buf = d.buf[:g.total]
	covered = 0
	for _, p := range g.pieces {
		if e := p.off + len(p.data); e > covered {
			copy(d.buf[covered:min(e, g.total)], p.data[covered-p.off:])
			covered = e
		}
	}
	delete(d.dgrams, k)
	d.reassembled++
	return d.buf, g.frames, g.wireLen, true
}

func (d *defragger) drop(k fragKey) {
	delete(d.dgrams, k)
	d.discarded++
}

// expire drops datagrams older than the timeout.
func (d *defragger) expire(now time.Time) {
	for k, g := range d.dgrams {
		if now.Sub(g.first) > fragTimeout {
			d.drop(k)
		}
	}
}

func (d *defragger) evictOldest() {
	var oldest fragKey
	var t time.Time
	for k, g := range d.dgrams {
		if t.IsZero() || g.first.Before(t) {
			oldest, t = k, g.first
		}
	}
	d.drop(oldest)
}
