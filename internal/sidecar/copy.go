package sidecar

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
)

// bufPool recycles copy buffers in two sizes. A copy holds its buffer while it waits for the
// next chunk, which on a keep-alive connection is most of the time: it starts with a small
// one (enough for a typical request or response) and takes a large one only while reads
// fill the small one (bulk transfers), so idle streams hold 4 KiB per direction, not 32.
type bufPool struct{ small, large sync.Pool }

const (
	copyBufSize  = 32 << 10 // the largest chunk an observer sees
	smallBufSize = 4 << 10
)

func newBufPool() *bufPool {
	return &bufPool{
		small: sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }},
		large: sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }},
	}
}

// copyBuf is the buffer one copy currently holds.
type copyBuf struct {
	bp *bufPool
	b  *[]byte
}

func (bp *bufPool) get() copyBuf { return copyBuf{bp: bp, b: bp.small.Get().(*[]byte)} }

func (c *copyBuf) release() {
	if len(*c.b) == copyBufSize {
		c.bp.large.Put(c.b)
	} else {
		c.bp.small.Put(c.b)
	}
}

// fit switches to the large buffer after a read that filled the small one, and back after
// a read the small one would have held.
func (c *copyBuf) fit(nr int) {
	switch size := len(*c.b); {
	case size == smallBufSize && nr == size:
		c.bp.small.Put(c.b)
		c.b = c.bp.large.Get().(*[]byte)
	case size == copyBufSize && nr < smallBufSize:
		c.bp.large.Put(c.b)
		c.b = c.bp.small.Get().(*[]byte)
	}
}

// closeWriter is a stream that can signal EOF to its peer while still reading.
type closeWriter interface{ CloseWrite() error }

func closeWrite(w io.Writer) {
	if cw, ok := w.(closeWriter); ok {
		_ = cw.CloseWrite()
	}
}

// copyHalf copies src to dst until EOF, flushing dst after each write when it can (HTTP/2
// response writers buffer), then half-closes dst. It returns the bytes copied and the first
// error other than EOF. observe, if set, sees each chunk first; its error stops the copy
// (without half-closing dst) and comes back as a *denyError, except a *Drop (its Forward
// replaces the chunk; its reply is written to back, the writer to src's peer, and a Drop
// with a reply but no back is a denial) and a splicer (it writes the chunk itself).
func (bp *bufPool) copyHalf(dst io.Writer, src io.Reader, observe func([]byte) error, back io.Writer) (int64, error) {
	cb := bp.get()
	defer func() { cb.release() }()
	fl, _ := dst.(http.Flusher)
	var n int64
	for {
		nr, rerr := src.Read(*cb.b)
		if nr > 0 {
			out := (*cb.b)[:nr]
			if observe != nil {
				if err := observe(out); err != nil {
					if sp, ok := err.(splicer); ok {
						nw, werr := sp.writeChunk(dst, out)
						n += int64(nw)
						if werr != nil {
							return n, werr
						}
						if fl != nil {
							fl.Flush()
						}
						out = nil
					} else {
						d, ok := err.(*Drop)
						if !ok && !errors.As(err, &d) || back == nil && len(d.Reply) > 0 {
							return n, &denyError{err: err}
						}
						if len(d.Reply) > 0 {
							if werr := d.sendReply(back); werr != nil {
								return n, werr
							}
						}
						out = d.Forward
					}
				}
			}
			if len(out) > 0 {
				nw, werr := dst.Write(out)
				n += int64(nw)
				if werr != nil {
					return n, werr
				}
				if fl != nil {
					fl.Flush()
				}
			}
			cb.fit(nr) // after the chunk is written: out may point into the buffer
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				closeWrite(dst)
				return n, nil
			}
			return n, rerr // no half-close: the caller may still have to answer on dst
		}
	}
}

// splicer is an observer's answer asking copyHalf to write the chunk through it rather than
// directly: the HTTP/2 layer (grpcdeny.go) puts its replies between the server's frames.
// It is not a verdict.
type splicer interface {
	error
	writeChunk(dst io.Writer, p []byte) (int, error)
}

// isClosedErr tells errors caused by our own teardown from real failures.
func isClosedErr(err error) bool {
	return err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}
