package inspect

import (
	"sort"

	"github.com/meshguard/meshguard/internal/dpi"
)

// Reassembly bounds per direction: segments held while waiting for a missing one. Past them
// the hole is declared a gap and the parser resynchronises after it.
const (
	maxPendingSegments = 64
	maxPendingBytes    = 256 << 10
)

type pending struct {
	seq  uint32
	data []byte
}

// tcpHalf reassembles one direction of a TCP connection.
type tcpHalf struct {
	started bool
	next    uint32 // next sequence number to deliver
	fin     bool
	held    []pending // out of order, sorted by seq
	heldLen int
}

// seqDiff is a-b in sequence space (wraps at 2^32).
func seqDiff(a, b uint32) int32 { return int32(a - b) }

func (f *flow) tcp(dir dpi.Direction, p *packetInfo) {
	h := &f.half[dir]
	if p.flags&tcpSYN != 0 {
		if !h.started || len(h.held) == 0 {
			h.started, h.next = true, p.seq+1
		}
		if len(p.payload) == 0 {
			return
		}
		p.seq++
	}
	if !h.started {
		h.started, h.next = true, p.seq
	}
	if len(p.payload) > 0 {
		h.segment(f, dir, p.seq, p.payload)
	}
	if p.cut > 0 && p.cut < 1<<16 && h.next == p.seq+uint32(len(p.payload)) {
		// The snaplen cut this segment short: the missing tail is a known hole.
		f.df.Gap(dir)
		h.next += uint32(p.cut)
		h.drain(f, dir)
	}
	if p.flags&tcpFIN != 0 {
		h.fin = true
	}
	if p.flags&tcpRST != 0 || f.half[0].fin && f.half[1].fin {
		f.end()
	}
}

// end finishes a connection (both FINs or a RST): held segments are delivered and the DPI
// flow is closed so its parser state is freed while the rest of the capture is read.
func (f *flow) end() {
	if f.closed {
		return
	}
	f.half[0].flush(f, dpi.ClientToServer)
	f.half[1].flush(f, dpi.ServerToClient)
	f.df.Close()
	f.closed = true
}

func (h *tcpHalf) segment(f *flow, dir dpi.Direction, seq uint32, data []byte) {
	d := seqDiff(seq, h.next)
	if d <= 0 {
		back := -int64(d) // int64: -math.MinInt32 does not fit an int32
		if back >= int64(len(data)) {
			return // a retransmission of bytes already delivered
		}
		data = data[back:]
		h.next += uint32(len(data))
		f.df.Feed(dir, data)
		h.drain(f, dir)
		return
	}
	// Out of order: hold a copy (the capture reader reuses its buffer).
	if len(h.held) >= maxPendingSegments || h.heldLen+len(data) > maxPendingBytes {
		h.skipToHeld(f, dir)
		if seqDiff(seq, h.next) <= 0 {
			h.segment(f, dir, seq, data)
			return
		}
	}
	i := sort.Search(len(h.held), func(i int) bool { return seqDiff(h.held[i].seq, seq) >= 0 })
	if i < len(h.held) && h.held[i].seq == seq && len(h.held[i].data) >= len(data) {
		return // duplicate of a held segment
	}
	h.held = append(h.held, pending{})
	copy(h.held[i+1:], h.held[i:])
	h.held[i] = pending{seq: seq, data: append([]byte(nil), data...)}
	h.heldLen += len(data)
}

// drain delivers held segments that became contiguous.
func (h *tcpHalf) drain(f *flow, dir dpi.Direction) {
	for len(h.held) > 0 {
		s := h.held[0]
		d := seqDiff(s.seq, h.next)
		if d > 0 {
			return
		}
		h.held = h.held[1:]
		h.heldLen -= len(s.data)
		if back := -int64(d); back < int64(len(s.data)) {
			data := s.data[back:]
			h.next += uint32(len(data))
			f.df.Feed(dir, data)
		}
	}
}

// skipToHeld declares the bytes before the first held segment lost.
func (h *tcpHalf) skipToHeld(f *flow, dir dpi.Direction) {
	if len(h.held) == 0 {
		return
	}
	f.df.Gap(dir)
	h.next = h.held[0].seq
	h.drain(f, dir)
}

// flush delivers everything held, declaring each hole a gap (end of capture or connection).
func (h *tcpHalf) flush(f *flow, dir dpi.Direction) {
	for len(h.held) > 0 {
		h.skipToHeld(f, dir)
	}
	h.held = nil
	h.heldLen = 0
}
