package h2tunnel

import (
	"io"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Stream is one CONNECT stream: a byte stream in each direction. Read and Write may be used
// from different goroutines; CloseWrite ends this side's bytes (the peer reads EOF), Close
// ends the stream in both directions.
type Stream struct {
	c                 *Conn
	id                uint32
	method, authority string // as the client sent them (server side)

	wmu sync.Mutex // one Write at a time: a chunk's frames are not interleaved with another's

	// Guarded by c.mu: the send side shares the connection's flow-control wait.
	sendWin int64
	werr    error // set when this side stopped sending (END_STREAM or reset)

	mu      sync.Mutex
	cond    sync.Cond
	chunks  []*[]byte // received, unread: (*chunks[0])[off:], then the rest; from c.bufs
	off     int
	recvWin int64 // how much more the peer may send on this stream
	unacked uint32
	gotEnd  bool  // the peer finished (END_STREAM) or the stream was reset
	rerr    error // what Read returns once the chunks are drained
	closed  bool  // Close was called
	noRead  bool  // CloseRead or Close was called: received bytes are dropped
	status  int   // client: the response status, once respc is closed
	reason  string
	respc   chan struct{}
}

// Method and Authority are the request's, as the client sent them.
func (s *Stream) Method() string    { return s.method }
func (s *Stream) Authority() string { return s.authority }

// Read returns received bytes, waiting for some; io.EOF once the peer finished sending.
func (s *Stream) Read(p []byte) (int, error) {
	s.mu.Lock()
	for len(s.chunks) == 0 && s.rerr == nil {
		s.cond.Wait()
	}
	n := 0
	for len(s.chunks) > 0 && n < len(p) {
		first := s.chunks[0]
		c := copy(p[n:], (*first)[s.off:])
		n, s.off = n+c, s.off+c
		if s.off == len(*first) {
			s.popLocked()
		}
	}
	if n == 0 {
		err := s.rerr
		s.mu.Unlock()
		return 0, err
	}
	inc := s.creditLocked(uint32(n))
	s.mu.Unlock()
	s.sendCredit(inc)
	s.c.consumed(uint32(n))
	return n, nil
}

// creditLocked returns n consumed bytes to the stream's receive window and says how much to
// announce now (WINDOW_UPDATEs go out in batches of half the window).
func (s *Stream) creditLocked(n uint32) uint32 {
	if s.gotEnd || n == 0 {
		return 0
	}
	s.unacked += n
	if s.unacked < s.c.cfg.StreamWindow/2 {
		return 0
	}
	inc := s.unacked
	s.unacked = 0
	s.recvWin += int64(inc)
	return inc
}

func (s *Stream) sendCredit(inc uint32) {
	if inc > 0 {
		s.c.control(func(f *http2.Framer) error { return f.WriteWindowUpdate(s.id, inc) })
	}
}

// popLocked gives the first chunk back to the pool.
func (s *Stream) popLocked() {
	*s.chunks[0] = (*s.chunks[0])[:0]
	s.c.bufs.Put(s.chunks[0])
	// Shift rather than reslice, so the array is reused: there are at most a window's worth.
	k := copy(s.chunks, s.chunks[1:])
	s.chunks[k] = nil
	s.chunks, s.off = s.chunks[:k], 0
}

// appendLocked queues received bytes in pooled chunks.
func (s *Stream) appendLocked(data []byte) {
	for len(data) > 0 {
		if k := len(s.chunks); k == 0 || len(*s.chunks[k-1]) == bufSize {
			s.chunks = append(s.chunks, s.c.bufs.Get().(*[]byte))
		}
		last := s.chunks[len(s.chunks)-1]
		c := min(len(data), bufSize-len(*last))
		*last = append(*last, data[:c]...)
		data = data[c:]
	}
}

// Write sends p in DATA frames as the flow-control windows allow, waiting for window when
// the peer reads slower than this side writes.
func (s *Stream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	total := 0
	for len(p) > 0 {
		n, err := s.c.reserveSend(s, len(p))
		if err != nil {
			return total, err
		}
		if err := s.c.writeFrame(func(f *http2.Framer) error { return f.WriteData(s.id, false, p[:n]) }); err != nil {
			return total, err
		}
		p, total = p[n:], total+n
	}
	return total, nil
}

// CloseWrite sends END_STREAM: the peer reads EOF while this side can still read.
func (s *Stream) CloseWrite() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if !s.endSend(io.ErrClosedPipe) {
		return nil
	}
	err := s.c.writeFrame(func(f *http2.Framer) error { return f.WriteData(s.id, true, nil) })
	s.maybeForget()
	return err
}

func (s *Stream) sendErr() error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.werr
}

// endSend marks the send side finished; false if it already was.
func (s *Stream) endSend(err error) bool {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.werr != nil {
		return false
	}
	s.werr = err
	c.fcond.Broadcast()
	return true
}

// Close ends the stream in both directions: RST_STREAM unless both sides had finished
// (NO_ERROR when only the peer's upload was still open, CANCEL otherwise).
func (s *Stream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	gotEnd := s.gotEnd
	unread := s.stopReadingLocked()
	s.mu.Unlock()

	c := s.c
	c.mu.Lock()
	sentEnd := s.werr == io.ErrClosedPipe
	open := s.werr == nil
	if open {
		s.werr = errStreamClosed
		c.fcond.Broadcast()
	}
	c.mu.Unlock()
	if !gotEnd {
		code := http2.ErrCodeCancel
		if sentEnd {
			code = http2.ErrCodeNo // a complete answer; the rest of the upload is not wanted
		}
		c.resetStream(s.id, code)
	} else if open {
		// The peer finished, this side had not: end it cleanly, there is nothing to cancel.
		_ = c.writeFrame(func(f *http2.Framer) error { return f.WriteData(s.id, true, nil) })
	}
	c.forget(s)
	c.consumed(unread)
	return nil
}

// CloseRead stops reading: a blocked Read returns, bytes still arriving are dropped. The
// send side stays open.
func (s *Stream) CloseRead() {
	s.mu.Lock()
	unread := s.stopReadingLocked()
	s.mu.Unlock()
	s.c.consumed(unread)
}

// stopReadingLocked drops the unread bytes and returns how many there were.
func (s *Stream) stopReadingLocked() uint32 {
	s.noRead = true
	unread := -s.off
	for len(s.chunks) > 0 {
		unread += len(*s.chunks[0])
		s.popLocked()
	}
	if s.rerr == nil || s.rerr == io.EOF {
		s.rerr = errStreamClosed
	}
	s.cond.Broadcast()
	return uint32(unread)
}

// Respond answers a client's CONNECT (server side): 200 starts the byte stream, anything
// else refuses it with reason.
func (s *Stream) Respond(status int, reason string) error {
	end := status != 200
	if end && !s.endSend(io.ErrClosedPipe) || !end && s.sendErr() != nil {
		return io.ErrClosedPipe // reset by the client (it gave up waiting): nothing to answer
	}
	err := s.c.writeHeaders(s.id, end, func(e *hpack.Encoder) {
		_ = e.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
		if reason != "" {
			_ = e.WriteField(hpack.HeaderField{Name: HeaderReason, Value: cleanReason(reason)})
		}
	})
	if end {
		s.maybeForget()
	}
	return err
}

// cleanReason keeps a reason a valid, bounded header value.
func cleanReason(r string) string {
	if len(r) > maxReason {
		r = r[:maxReason]
	}
	return strings.Map(func(c rune) rune {
		if c < ' ' || c == 0x7f {
			return ' '
		}
		return c
	}, strings.ToValidUTF8(r, "?"))
}

func (s *Stream) onData(data []byte, n uint32, end bool) error {
	c := s.c
	s.mu.Lock()
	if s.gotEnd {
		s.mu.Unlock()
		c.consumed(n)
		c.resetStream(s.id, http2.ErrCodeStreamClosed)
		s.fail(&StreamError{Code: http2.ErrCodeStreamClosed})
		return nil
	}
	if int64(n) > s.recvWin {
		s.mu.Unlock()
		c.consumed(n)
		c.resetStream(s.id, http2.ErrCodeFlowControl)
		s.fail(&StreamError{Code: http2.ErrCodeFlowControl})
		return nil
	}
	s.recvWin -= int64(n)
	credit := n - uint32(len(data)) // padding is not data: return its window at once
	if s.noRead {
		credit = n // nobody reads: the bytes are dropped, the peer may send more
	} else {
		s.appendLocked(data)
	}
	if end {
		s.gotEnd = true
		if s.rerr == nil {
			s.rerr = io.EOF
		}
	}
	inc := s.creditLocked(credit)
	if len(data) > 0 || end {
		s.cond.Broadcast()
	}
	s.mu.Unlock()
	s.sendCredit(inc)
	c.consumed(credit)
	if end {
		s.maybeForget()
	}
	return nil
}

// onEnd is the peer's END_STREAM on a HEADERS frame.
func (s *Stream) onEnd() {
	s.mu.Lock()
	s.gotEnd = true
	if s.rerr == nil {
		s.rerr = io.EOF
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	s.maybeForget()
}

func (s *Stream) onResponse(f *http2.MetaHeadersFrame) {
	s.mu.Lock()
	if s.status == 0 && s.respc != nil {
		st, err := strconv.Atoi(f.PseudoValue("status"))
		if err != nil || st < 100 || st > 999 {
			s.mu.Unlock()
			s.c.resetStream(s.id, http2.ErrCodeProtocol)
			s.fail(&StreamError{Code: http2.ErrCodeProtocol})
			return
		}
		if st < 200 {
			s.mu.Unlock()
			return // informational: the answer is still to come
		}
		s.status = st
		for _, hf := range f.RegularFields() {
			if hf.Name == HeaderReason {
				s.reason = hf.Value
			}
		}
		close(s.respc)
	}
	s.mu.Unlock()
	if f.StreamEnded() {
		s.onEnd()
	}
}

// onReset is the peer's RST_STREAM: the stream is over in both directions. After a complete
// answer, NO_ERROR only means the rest of the upload is not wanted: reads still end in EOF.
func (s *Stream) onReset(code http2.ErrCode) {
	s.fail(&StreamError{Code: code, Remote: true})
}

// fail ends the stream with err (reset, or the connection ended): reads return the bytes
// already received, then err, unless the peer had already finished cleanly.
func (s *Stream) fail(err error) {
	s.mu.Lock()
	s.gotEnd = true
	if s.rerr == nil {
		s.rerr = err
	}
	if s.respc != nil && s.status == 0 {
		select {
		case <-s.respc:
		default:
			close(s.respc)
		}
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	c := s.c
	c.mu.Lock()
	if s.werr == nil {
		s.werr = err
	}
	c.fcond.Broadcast()
	c.mu.Unlock()
	c.forget(s)
}

// maybeForget drops the stream from the connection once both sides have finished.
func (s *Stream) maybeForget() {
	s.mu.Lock()
	got := s.gotEnd
	s.mu.Unlock()
	s.c.mu.Lock()
	done := got && s.werr != nil
	s.c.mu.Unlock()
	if done {
		s.c.forget(s)
	}
}
