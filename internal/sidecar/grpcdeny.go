package sidecar

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// HTTP/2 refusal of single requests. An observer that refuses an HTTP/2 request (a gRPC call)
// returns h2Refusal; the layer here, between the observer and the copy, then answers that
// stream alone and keeps the connection for the other streams:
//
//   - the client's header block still reaches the server (its HPACK state must follow the
//     client's encoder), with END_HEADERS moved to one extra CONTINUATION frame carrying an
//     undefined pseudo-header, never indexed: the server decodes the block, finds the
//     request malformed and resets that stream without running a handler (RFC 9113 8.1.1);
//   - the client's later frames on that stream are dropped (DATA is credited back to the
//     client's connection window, so flow control stays balanced);
//   - the client gets, between two of the server's frames, a trailers-only response (gRPC:
//     grpc-status 7 PERMISSION_DENIED and a grpc-message naming the rule) or a 403 with a
//     short body, encoded with never-indexed literals so the client's HPACK table is left
//     alone; a 403 body's bytes are taken back from the client's next connection window
//     updates, so the server never sends into window it was not given.
//
// Only connections that start with the HTTP/2 client preface are handled (an h2c upgrade
// keeps the old behaviour: the refusal cuts the connection), and whatever cannot be done
// exactly (a header frame too large to hold, too many refused streams open at once) fails
// closed by cutting the connection.

// h2Refused is an observer's refusal of the HTTP/2 request whose header block its chunk ends.
type h2Refused struct {
	why  string
	grpc bool
}

func (r *h2Refused) Error() string { return "request refused: " + r.why }

// h2Refusal is what a StreamObserver's FromClient returns to refuse an HTTP/2 request (a gRPC
// call when grpc is set), why being the decision that names the rule. On a stream the HTTP/2
// layer handles (the observer implements h2Refuser, the connection started with the client
// preface) only that request's stream is refused; elsewhere the connection is cut, as for
// any other error.
func h2Refusal(why string, grpc bool) error { return &h2Refused{why: why, grpc: grpc} }

// h2Refuser marks an observer whose FromClient may return h2Refusal: observers() puts the
// HTTP/2 layer between it and the copy.
type h2Refuser interface{ refusesHTTP2() }

const (
	h2HoldMax    = 64 << 10 // largest final header frame held back until complete
	h2MaxDenied  = 256      // refused streams the client may still send on, at once
	h2MaxPending = 64 << 10 // replies waiting for the server to finish a frame
	h2MaxReason  = 512      // bytes of the reason in a reply
	h2FrameHdr   = 9
	h2EndStream  = 0x1
	h2EndHeaders = 0x4
)

const (
	h2Probing int32 = iota // the client preface is not complete yet
	h2On                   // HTTP/2 by prior knowledge: frames are followed both ways
	h2Off                  // not HTTP/2 by prior knowledge: chunks pass untouched
)

// What happens to the client frame being read.
type h2Act uint8

const (
	actForward h2Act = iota // verbatim
	actInline               // a final header frame whole in this chunk: verbatim unless refused
	actHold                 // kept back until complete (final header frame, window update)
	actDrop                 // a refused stream's frame
)

type deniedStream struct {
	id   uint32
	done bool // the client ended its side: nothing more will come
}

// h2Stream is the HTTP/2 layer of one proxied stream. The client side is only used by the
// upload copy, the gate by both.
type h2Stream struct {
	obs   StreamObserver
	phase atomic.Int32
	gate  h2Gate

	preface   int
	hdr       [h2FrameHdr]byte
	nhdr      int
	remain    int
	act       h2Act
	fs        int // where the current frame starts in the chunk, -1 if in an earlier one
	held      []byte
	unheld    bool   // the current block's final frame was too large to hold
	endStream bool   // the current header block's HEADERS frame ends the client's side
	owe       uint32 // connection window the client gave for bytes we sent it
	denied    []deniedStream

	// per chunk
	fed      int
	out      []byte
	diverged bool
	vStart   int
	reply    []byte
	credit   uint32
	reason   string
	drop     Drop

	enc    *hpack.Encoder
	encBuf bytes.Buffer
	fr     *http2.Framer
	frBuf  bytes.Buffer
}

func newH2Stream(o StreamObserver) *h2Stream { return &h2Stream{obs: o} }

func (s *h2Stream) fromServer(p []byte) error {
	if err := s.obs.FromServer(p); err != nil {
		return err
	}
	if s.phase.Load() == h2Off {
		return nil
	}
	return &s.gate // copyHalf writes the chunk through the gate
}

func (s *h2Stream) fromClient(p []byte) error {
	switch s.phase.Load() {
	case h2Off:
		return s.obs.FromClient(p)
	case h2Probing:
		n := 0
		for s.preface < len(http2.ClientPreface) && n < len(p) {
			if p[n] != http2.ClientPreface[s.preface] {
				s.phase.Store(h2Off)
				return s.obs.FromClient(p)
			}
			s.preface++
			n++
		}
		if s.preface < len(http2.ClientPreface) {
			return s.obs.FromClient(p)
		}
		// The preface alone first: DPI names the protocol on it, so each request is
		// decided in the call that ends its header block.
		if err := s.obs.FromClient(p[:n]); err != nil {
			return err
		}
		s.phase.Store(h2On)
		s.fs = -1
		return s.chunk(p, n)
	}
	return s.chunk(p, 0)
}

// chunk follows the client's frames in p from i, feeding the observer up to the end of each
// header block, and returns nil (forward p) or a *Drop with what to send each way.
func (s *h2Stream) chunk(p []byte, i int) error {
	s.fed, s.out, s.diverged, s.vStart = i, s.out[:0], false, 0
	s.reply, s.credit, s.reason = s.reply[:0], 0, ""
	if s.nhdr == 0 {
		s.fs = i
	} else {
		s.fs = -1
	}
	for i < len(p) {
		if s.nhdr < h2FrameHdr {
			hs := i
			if s.nhdr == 0 {
				s.fs = i
			}
			n := copy(s.hdr[s.nhdr:], p[i:])
			s.nhdr += n
			i += n
			if s.nhdr < h2FrameHdr {
				s.omit(p, hs, len(p)) // the header's bytes wait for the rest of it
				break
			}
			s.begin(p, hs, i)
			if s.remain == 0 {
				if err := s.finish(p, i); err != nil {
					return err
				}
				continue
			}
		}
		n := min(s.remain, len(p)-i)
		switch s.act {
		case actHold:
			s.held = append(s.held, p[i:i+n]...)
			s.omit(p, i, i+n)
		case actDrop:
			s.omit(p, i, i+n)
		}
		i += n
		s.remain -= n
		if s.remain == 0 {
			if err := s.finish(p, i); err != nil {
				return err
			}
		}
	}
	if s.fed < len(p) {
		if err := s.obs.FromClient(p[s.fed:]); err != nil {
			return err // a refusal that ends no header block here cannot be placed: cut
		}
	}
	if s.credit > 0 {
		s.frame(func(f *http2.Framer) error { return f.WriteWindowUpdate(0, s.credit) })
		s.reply = append(s.reply, s.frBuf.Bytes()...)
	}
	if !s.diverged && len(s.reply) == 0 {
		return nil
	}
	d := &s.drop
	d.Forward, d.Reply, d.Reason, d.gate = p, s.reply, s.reason, &s.gate
	if s.diverged {
		s.out = append(s.out, p[s.vStart:]...)
		d.Forward = s.out
	}
	if d.Reason == "" {
		d.Reason = "http/2 frames rewritten"
	}
	return d
}

// begin decides what to do with the frame whose header just completed at p[i]; hs is where
// the header's bytes in this chunk start.
func (s *h2Stream) begin(p []byte, hs, i int) {
	h := s.hdr[:]
	length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	typ, flags := h[3], h[4]
	id := binary.BigEndian.Uint32(h[5:]) & 0x7fffffff
	s.remain = length
	act := actForward
	switch {
	case typ == 0x1 || typ == 0x9: // HEADERS, CONTINUATION: the server must see them
		if typ == 0x1 {
			s.endStream = flags&h2EndStream != 0
		}
		if flags&h2EndHeaders != 0 {
			switch {
			case s.fs >= 0 && length <= len(p)-i:
				act = actInline
			case length <= h2HoldMax:
				act = actHold
			default:
				s.unheld = true
			}
		}
	case id != 0 && s.isDenied(id) >= 0:
		act = actDrop
		if typ == 0x0 {
			s.credit += uint32(length)
		}
		if typ == 0x3 || typ == 0x0 && flags&h2EndStream != 0 {
			s.denied[s.isDenied(id)].done = true
		}
	case typ == 0x8 && id == 0 && s.owe > 0 && length == 4:
		act = actHold
	}
	s.act = act
	switch {
	case act == actHold:
		s.held = append(s.held[:0], h...)
		s.omit(p, hs, i)
	case act == actDrop:
		s.omit(p, hs, i)
	case s.fs < 0: // forwarded, but its header's first bytes were held back with the last chunk
		s.insert(p, hs, i, h)
	}
}

// finish ends the frame that completed at p[i].
func (s *h2Stream) finish(p []byte, i int) error {
	s.nhdr = 0
	typ, flags := s.hdr[3], s.hdr[4]
	defer func() { s.act, s.fs = actForward, i }()
	if (typ == 0x1 || typ == 0x9) && flags&h2EndHeaders != 0 {
		return s.blockEnd(p, i)
	}
	if s.act == actHold { // connection window update: take back what the client owes
		inc := binary.BigEndian.Uint32(s.held[h2FrameHdr:]) & 0x7fffffff
		if inc <= s.owe {
			s.owe -= inc
			return nil
		}
		binary.BigEndian.PutUint32(s.held[h2FrameHdr:], inc-s.owe)
		s.owe = 0
		s.insert(p, i, i, s.held)
	}
	return nil
}

// blockEnd: a header block ended at p[i]. The observer decides on the bytes up to here;
// a refused (or earlier refused) stream's block goes on marked malformed.
func (s *h2Stream) blockEnd(p []byte, i int) error {
	id := binary.BigEndian.Uint32(s.hdr[5:]) & 0x7fffffff
	unheld := s.unheld
	s.unheld = false
	err := s.obs.FromClient(p[s.fed:i])
	s.fed = i
	var ref *h2Refused
	if err != nil {
		r, ok := err.(*h2Refused)
		if !ok {
			return err
		}
		ref = r
	}
	k := s.isDenied(id)
	if ref != nil && k < 0 {
		if unheld || id == 0 || !s.addDenied(id) {
			return ref
		}
		if err := s.answer(id, ref); err != nil {
			return err
		}
		s.gate.refuse(id)
		k = len(s.denied) - 1
	}
	if k < 0 {
		if s.act == actHold {
			s.insert(p, i, i, s.held)
		}
		return nil
	}
	if unheld {
		return errors.New("http/2: a refused stream sent a header frame too large to hold")
	}
	if s.endStream {
		s.denied[k].done = true
	}
	var f []byte
	from := i
	if s.act == actInline {
		from = s.fs
		f = append(s.held[:0], p[s.fs:i]...)
		s.held = f
	} else {
		f = s.held
	}
	f[4] &^= h2EndHeaders
	s.insert(p, from, i, f)
	s.encBuf.Reset()
	_ = s.encoder().WriteField(hpack.HeaderField{Name: ":meshguard-refused", Value: "policy", Sensitive: true})
	s.frame(func(fr *http2.Framer) error { return fr.WriteContinuation(id, true, s.encBuf.Bytes()) })
	s.out = append(s.out, s.frBuf.Bytes()...)
	return nil
}

// answer queues the client's response to refused stream id.
func (s *h2Stream) answer(id uint32, ref *h2Refused) error {
	msg := refusalText(ref.why)
	if len(msg) > h2MaxReason {
		msg = msg[:h2MaxReason]
	}
	s.reason = ref.why
	enc := s.encoder()
	s.encBuf.Reset()
	field := func(k, v string) {
		// Never indexed: the client's decoder table follows the server's encoder, not us.
		_ = enc.WriteField(hpack.HeaderField{Name: k, Value: v, Sensitive: true})
	}
	if ref.grpc {
		field(":status", "200")
		field("content-type", "application/grpc")
		field("grpc-status", "7") // PERMISSION_DENIED
		field("grpc-message", grpcPercentEncode(msg))
		s.frame(func(f *http2.Framer) error {
			return f.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: s.encBuf.Bytes(), EndStream: true, EndHeaders: true})
		})
		s.reply = append(s.reply, s.frBuf.Bytes()...)
		return nil
	}
	body := msg + "\n"
	field(":status", "403")
	field("content-type", "text/plain; charset=utf-8")
	field("content-length", strconv.Itoa(len(body)))
	s.frame(func(f *http2.Framer) error {
		return f.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: s.encBuf.Bytes(), EndHeaders: true})
	})
	s.reply = append(s.reply, s.frBuf.Bytes()...)
	s.frame(func(f *http2.Framer) error { return f.WriteData(id, true, []byte(body)) })
	s.reply = append(s.reply, s.frBuf.Bytes()...)
	s.owe += uint32(len(body))
	return nil
}

func (s *h2Stream) encoder() *hpack.Encoder {
	if s.enc == nil {
		s.enc = hpack.NewEncoder(&s.encBuf)
		s.fr = http2.NewFramer(&s.frBuf, nil)
	}
	return s.enc
}

// frame writes one frame into frBuf (a bytes.Buffer: the framer cannot fail on it).
func (s *h2Stream) frame(write func(*http2.Framer) error) {
	s.encoder()
	s.frBuf.Reset()
	_ = write(s.fr)
}

func (s *h2Stream) isDenied(id uint32) int {
	for k := range s.denied {
		if s.denied[k].id == id {
			return k
		}
	}
	return -1
}

// addDenied remembers a refused stream, forgetting the oldest one the client has ended if
// the list is full; false when every one is still open.
func (s *h2Stream) addDenied(id uint32) bool {
	if len(s.denied) >= h2MaxDenied {
		k := -1
		for j := range s.denied {
			if s.denied[j].done {
				k = j
				break
			}
		}
		if k < 0 {
			return false
		}
		s.denied = append(s.denied[:k], s.denied[k+1:]...)
	}
	s.denied = append(s.denied, deniedStream{id: id})
	return true
}

// omit leaves p[from:to] out of what is forwarded.
func (s *h2Stream) omit(p []byte, from, to int) { s.insert(p, from, to, nil) }

// insert forwards b in place of p[from:to].
func (s *h2Stream) insert(p []byte, from, to int, b []byte) {
	if !s.diverged {
		s.out = append(s.out[:0], p[:from]...)
		s.diverged = true
	} else if from > s.vStart {
		s.out = append(s.out, p[s.vStart:from]...)
	}
	s.out = append(s.out, b...)
	s.vStart = to
}

// grpcPercentEncode encodes a grpc-message as the gRPC HTTP/2 spec says: bytes outside
// printable ASCII, and '%', as %XX.
func grpcPercentEncode(m string) string {
	const hex = "0123456789ABCDEF"
	var b []byte
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			if b != nil {
				b = append(b, c)
			}
			continue
		}
		if b == nil {
			b = append(make([]byte, 0, len(m)+16), m[:i]...)
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	if b == nil {
		return m
	}
	return string(b)
}

// h2Gate follows the server's frames as they are written to the client, so replies to
// refused streams go between two frames and never inside a header block, and drops the
// server's RST_STREAM for a refused stream (the malformed request's): the client has its
// answer, and a PROTOCOL_ERROR reset of a stream it still tracks would make it stop reusing
// the connection.
type h2Gate struct {
	mu      sync.Mutex
	hdr     [h2FrameHdr]byte
	nhdr    int
	remain  int
	drop    bool // the current server frame is not forwarded
	held    bool // the first bytes of a split frame header were held back
	inBlock bool // a HEADERS/PUSH_PROMISE without END_HEADERS: CONTINUATION must follow
	started bool // the server's first frame (its SETTINGS) went out: nothing may precede it
	refused []uint32
	pending []byte
}

// Error lets the gate travel as an observer's return value (see splicer in copy.go).
func (g *h2Gate) Error() string { return "http/2 frame gate" }

func (g *h2Gate) atBoundary() bool {
	return g.started && g.nhdr == 0 && g.remain == 0 && !g.inBlock
}

// refuse makes the gate drop the server's reset of stream id.
func (g *h2Gate) refuse(id uint32) {
	g.mu.Lock()
	if len(g.refused) >= h2MaxDenied {
		g.refused = append(g.refused[:0], g.refused[1:]...)
	}
	g.refused = append(g.refused, id)
	g.mu.Unlock()
}

// writeChunk writes the server's p to dst, less dropped frames, with pending replies at the
// first frame boundary. A frame header split across chunks is held until it is whole.
func (g *h2Gate) writeChunk(dst io.Writer, p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	start := 0
	var err error
	flush := func(to int, extra []byte) {
		if err == nil && to > start {
			_, err = dst.Write(p[start:to])
		}
		if err == nil && len(extra) > 0 {
			_, err = dst.Write(extra)
		}
	}
	for i := 0; i < len(p) && err == nil; {
		if g.nhdr < h2FrameHdr {
			hs, held := i, g.held
			n := copy(g.hdr[g.nhdr:], p[i:])
			g.nhdr += n
			i += n
			if g.nhdr < h2FrameHdr {
				// Held only while a reset may have to be dropped: a server that speaks
				// first (not HTTP/2) must not wait for bytes it will never send.
				if g.held = held || g.nhdr == n && len(g.refused) > 0; g.held {
					flush(hs, nil)
					start = len(p)
				}
				break
			}
			g.held = false
			g.begin(held || hs+h2FrameHdr == i)
			switch {
			case g.drop:
				flush(hs, nil)
				start = i
			case held:
				flush(hs, g.hdr[:])
				start = i
			}
		}
		n := min(g.remain, len(p)-i)
		if g.drop {
			flush(i, nil)
			start = i + n
		}
		g.remain -= n
		i += n
		if g.remain == 0 {
			g.nhdr, g.started, g.drop = 0, true, false
			if len(g.pending) > 0 && !g.inBlock {
				flush(i, g.pending)
				g.pending, start = g.pending[:0], i
			}
		}
	}
	flush(len(p), nil)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// begin reads the header of the server's next frame; whole says no byte of it was written
// yet (it may be dropped).
func (g *h2Gate) begin(whole bool) {
	g.remain = int(g.hdr[0])<<16 | int(g.hdr[1])<<8 | int(g.hdr[2])
	typ, flags := g.hdr[3], g.hdr[4]
	switch typ {
	case 0x1, 0x5:
		g.inBlock = flags&h2EndHeaders == 0
	case 0x9:
		g.inBlock = g.inBlock && flags&h2EndHeaders == 0
	case 0x3:
		if !whole {
			break // written in part before the stream was refused: not its reset
		}
		id := binary.BigEndian.Uint32(g.hdr[5:]) & 0x7fffffff
		for k, r := range g.refused {
			if r == id {
				g.refused = append(g.refused[:k], g.refused[k+1:]...)
				g.drop = true
				break
			}
		}
	}
}

// inject sends b to the client now if the server is between frames, else at its next
// boundary.
func (g *h2Gate) inject(back io.Writer, b []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.atBoundary() && len(g.pending) == 0 {
		_, err := back.Write(b)
		if f, ok := back.(http.Flusher); ok {
			f.Flush()
		}
		return err
	}
	if len(g.pending)+len(b) > h2MaxPending {
		return errors.New("http/2: too many refusals wait for the server to finish a frame")
	}
	g.pending = append(g.pending, b...)
	return nil
}
