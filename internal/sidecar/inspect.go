package sidecar

import (
	"context"
	"errors"
	"io"
	"net/http"
)

// StreamObserver sees the plaintext of one proxied stream, chunk by chunk, before each chunk
// is forwarded: the hook for DPI, the L7 policy and the threat detectors.
type StreamObserver interface {
	// FromClient and FromServer get each chunk before it is forwarded and must not keep p.
	// A non-nil error cuts the stream, which is reported as denied with the error's text; if
	// the error has a `Reply() []byte` method (say an HTTP 403 naming the rule), those bytes
	// go to the client before the cut. FromClient may instead return a *Drop: Forward goes
	// to the server instead of the chunk, the reply to the client and the stream carries on
	// (a refused Redis command while the connection keeps working), or h2Refusal to refuse
	// one HTTP/2 request (grpcdeny.go).
	FromClient(p []byte) error
	FromServer(p []byte) error
	// Close is called once, after the stream ended.
	Close()
}

// Inspector picks the observer for a stream; a nil result leaves the stream uninspected.
type Inspector func(ctx context.Context, s StreamInfo) StreamObserver

// Replier is an observer's denial that answers the client in its own protocol.
type Replier interface{ Reply() []byte }

// Drop is an observer's refusal of the requests in one client chunk that leaves the stream
// open: Forward (often nothing) is sent to the server instead of the chunk and Reply to the
// client. A Drop with a reply needs a way back to the client (inbound streams); one without
// is a rewrite and works everywhere.
type Drop struct {
	Reply   []byte
	Forward []byte
	Reason  string
	gate    *h2Gate // set: the reply goes between two of the server's HTTP/2 frames
}

// sendReply writes the drop's reply to the client.
func (d *Drop) sendReply(back io.Writer) error {
	if d.gate != nil {
		return d.gate.inject(back, d.Reply)
	}
	if _, err := back.Write(d.Reply); err != nil {
		return err
	}
	if f, ok := back.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

func (d *Drop) Error() string { return "request refused: " + d.Reason }

// denyError marks an observer's verdict, so it is told apart from I/O errors.
type denyError struct{ err error }

func (e *denyError) Error() string { return "denied by inspection: " + e.err.Error() }
func (e *denyError) Unwrap() error { return e.err }

// denial returns the observer's verdict in err, if that is what err is.
func denial(err error) (*denyError, bool) {
	var d *denyError
	ok := errors.As(err, &d)
	return d, ok
}

// reply is what to send the client before cutting a denied stream, if anything.
func (e *denyError) reply() []byte {
	var r Replier
	if errors.As(e.err, &r) {
		return r.Reply()
	}
	return nil
}

// observers splits an optional observer into the two per-direction callbacks copyHalf takes;
// an observer that may refuse single HTTP/2 requests gets the HTTP/2 layer in between.
func observers(o StreamObserver) (fromClient, fromServer func([]byte) error) {
	if o == nil {
		return nil, nil
	}
	if _, ok := o.(h2Refuser); ok {
		s := newH2Stream(o)
		return s.fromClient, s.fromServer
	}
	return o.FromClient, o.FromServer
}

// Annotator is an observer that adds what it learnt (the DPI protocol and L7 summary) to the
// stream's report; it is called after Close, before the report is sent.
type Annotator interface{ Annotate(r *ConnReport) }

func annotate(o StreamObserver, r *ConnReport) {
	if a, ok := o.(Annotator); ok {
		a.Annotate(r)
	}
}
