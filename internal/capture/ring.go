package capture

import (
	"sync"
	"time"
)

// chunk is one write of the stream: a TCP segment's worth of payload or one UDP datagram.
// pos is the absolute stream offset of its first byte in the recorder's byte ring.
type chunk struct {
	at         int64 // unix nanoseconds
	pos        uint64
	n          int
	fromClient bool
}

// ring keeps the newest bytes and chunks of one connection, both directions interleaved in
// arrival order. It grows on demand up to max bytes (so idle connections cost little) and
// then wraps, evicting the oldest chunks; chunks older than the window are evicted too.
type ring struct {
	buf    []byte
	chunks []chunk // circular, chunkHead is the oldest
	ch, cn int     // chunk head, chunk count
	head   uint64  // absolute offset of the oldest retained byte
	tail   uint64  // absolute offset one past the newest byte
}

// bytes retained.
func (r *ring) size() int { return int(r.tail - r.head) }

// put copies p in, evicting what it must; it returns the change in buffer capacity (what
// the global budget must account for). grow reports how many more bytes the buffer may take.
func (r *ring) put(at int64, fromClient bool, p []byte, limit int, grow func(want int) int) int {
	added := 0
	if len(p) > limit {
		p = p[len(p)-limit:] // only the newest limit bytes of a huge write fit
	}
	if need := r.size() + len(p); need > len(r.buf) && len(r.buf) < limit {
		want := max(need, 2*len(r.buf), 4096)
		want = min(want, limit)
		if extra := grow(want - len(r.buf)); extra > 0 {
			r.resize(len(r.buf) + extra)
			added = extra
		}
	}
	if len(r.buf) == 0 {
		return added
	}
	if len(p) > len(r.buf) {
		p = p[len(p)-len(r.buf):]
	}
	for r.cn > 0 && r.size()+len(p) > len(r.buf) {
		r.evictOne()
	}
	r.write(r.tail, p)
	if r.cn == len(r.chunks) {
		r.growChunks()
	}
	r.chunks[(r.ch+r.cn)%len(r.chunks)] = chunk{at: at, pos: r.tail, n: len(p), fromClient: fromClient}
	r.cn++
	r.tail += uint64(len(p))
	return added
}

// maxChunks bounds chunk records per connection (a flood of 1-byte writes must not grow it
// without limit); past it the oldest chunk is evicted.
const maxChunks = 1 << 14

func (r *ring) growChunks() {
	if len(r.chunks) >= maxChunks {
		r.evictOne()
		return
	}
	n := max(16, 2*len(r.chunks))
	c := make([]chunk, n)
	for i := range r.cn {
		c[i] = r.chunks[(r.ch+i)%len(r.chunks)]
	}
	r.chunks, r.ch = c, 0
}

func (r *ring) evictOne() {
	if r.cn == 0 {
		return
	}
	c := r.chunks[r.ch]
	r.ch = (r.ch + 1) % len(r.chunks)
	r.cn--
	r.head = c.pos + uint64(c.n)
	if r.cn == 0 {
		r.head = r.tail
	}
}

// expire evicts chunks that arrived before cutoff.
func (r *ring) expire(cutoff int64) {
	for r.cn > 0 && r.chunks[r.ch].at < cutoff {
		r.evictOne()
	}
}

func (r *ring) resize(n int) {
	nb := make([]byte, n)
	old := r.buf
	r.buf = nb
	if len(old) > 0 {
		for a := r.head; a < r.tail; {
			i := int(a % uint64(len(old)))
			seg := min(len(old)-i, int(r.tail-a))
			r.write(a, old[i:i+seg])
			a += uint64(seg)
		}
	}
}

// write copies p at absolute offset a, wrapping at the end of buf.
func (r *ring) write(a uint64, p []byte) {
	i := int(a % uint64(len(r.buf)))
	n := copy(r.buf[i:], p)
	copy(r.buf, p[n:])
}

// read appends the bytes at [a, a+n) to dst.
func (r *ring) read(dst []byte, a uint64, n int) []byte {
	i := int(a % uint64(len(r.buf)))
	seg := min(n, len(r.buf)-i)
	dst = append(dst, r.buf[i:i+seg]...)
	return append(dst, r.buf[:n-seg]...)
}

// snapshot copies out the retained chunks, oldest first.
func (r *ring) snapshot() []Segment {
	out := make([]Segment, 0, r.cn)
	for i := range r.cn {
		c := r.chunks[(r.ch+i)%len(r.chunks)]
		out = append(out, Segment{Time: time.Unix(0, c.at), FromClient: c.fromClient, Data: r.read(nil, c.pos, c.n)})
	}
	return out
}

// Segment is one recorded write: a chunk of a TCP stream or one UDP datagram.
type Segment struct {
	Time       time.Time
	FromClient bool
	Data       []byte
}

// budget is the global byte budget shared by every recorder of a Manager.
type budget struct {
	mu    sync.Mutex
	limit int64
	used  int64
}

// take grants up to want bytes.
func (b *budget) take(want int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	got := min(int64(want), b.limit-b.used)
	if got <= 0 {
		return 0
	}
	b.used += got
	return int(got)
}

func (b *budget) give(n int) {
	b.mu.Lock()
	b.used -= int64(n)
	b.mu.Unlock()
}
