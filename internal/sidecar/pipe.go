package sidecar

import (
	"io"
	"sync"
)

// streamPipe carries a tunnel stream's upload to the HTTP/2 transport, which reads request
// bodies in a goroutine of its own. Unlike io.Pipe, whose Write waits until the reader has
// taken every byte (the reader wakes, copies, wakes the writer back), Write here returns as
// soon as the bytes are buffered: one goroutine hand-off per chunk instead of two. Writers
// still wait while a previous chunk is unread, so a slow peer slows the app down as before.
// The buffer comes from the pool only while it holds bytes: an idle stream holds none.
type streamPipe struct {
	pool *bufPool

	mu   sync.Mutex
	cond sync.Cond
	buf  *[]byte // from pool.large while len(data) > 0
	data []byte  // unread bytes, inside *buf
	werr error   // set by closeWrite: what Read returns once data is drained
	rerr error   // set by the reader's Close: what Write returns
}

func newStreamPipe(pool *bufPool) *streamPipe {
	p := &streamPipe{pool: pool}
	p.cond.L = &p.mu
	return p
}

// Write buffers b (at most copyBufSize at a time), waiting while earlier bytes are unread.
func (p *streamPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for len(b) > 0 {
		for len(p.data) > 0 && p.rerr == nil && p.werr == nil {
			p.cond.Wait()
		}
		switch {
		case p.rerr != nil:
			return n, p.rerr
		case p.werr != nil:
			return n, io.ErrClosedPipe
		}
		if p.buf == nil {
			p.buf = p.pool.large.Get().(*[]byte)
		}
		c := copy(*p.buf, b)
		p.data = (*p.buf)[:c]
		b, n = b[c:], n+c
		p.cond.Broadcast()
	}
	return n, nil
}

// Read returns buffered bytes, waiting for some; after closeWrite, its error once drained.
func (p *streamPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.data) == 0 && p.werr == nil && p.rerr == nil {
		p.cond.Wait()
	}
	if p.rerr != nil {
		return 0, io.ErrClosedPipe
	}
	if len(p.data) == 0 {
		return 0, p.werr
	}
	n := copy(b, p.data)
	p.data = p.data[n:]
	if len(p.data) == 0 {
		p.pool.large.Put(p.buf)
		p.buf, p.data = nil, nil
		p.cond.Broadcast()
	}
	return n, nil
}

// Close is the reader's (the transport's): later writes fail with io.ErrClosedPipe.
func (p *streamPipe) Close() error {
	p.closeRead(io.ErrClosedPipe)
	return nil
}

func (p *streamPipe) closeRead(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rerr == nil {
		p.rerr = err
	}
	if p.buf != nil {
		p.pool.large.Put(p.buf)
		p.buf, p.data = nil, nil
	}
	p.cond.Broadcast()
}

// abort ends the upload at once, dropping unread bytes: the reader gets err.
func (p *streamPipe) abort(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.werr == nil {
		p.werr = err
	}
	if p.buf != nil {
		p.pool.large.Put(p.buf)
		p.buf, p.data = nil, nil
	}
	p.cond.Broadcast()
}

// closeWrite ends the upload: the reader gets the buffered bytes, then err (io.EOF for a
// clean end).
func (p *streamPipe) closeWrite(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.werr == nil {
		p.werr = err
	}
	p.cond.Broadcast()
}
