package h2tunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// echo answers 200 and sends back what it reads, then ends its side.
func echo(s *Stream) {
	if err := s.Respond(200, ""); err != nil {
		return
	}
	_, err := io.Copy(s, s)
	if err == nil {
		_ = s.CloseWrite()
	}
	s.Close()
}

type pair struct {
	client, server *Conn
	served         chan error
}

func newPair(t testing.TB, ccfg, scfg Config, handler func(*Stream)) *pair {
	t.Helper()
	cn, sn := tcpPair(t)
	p := &pair{served: make(chan error, 1)}
	ready := make(chan error, 1)
	go func() {
		sc, err := Server(sn, scfg)
		ready <- err
		if err != nil {
			return
		}
		p.server = sc
		p.served <- sc.Serve(handler)
	}()
	c, err := Client(cn, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	p.client = c
	t.Cleanup(func() { c.Close() })
	return p
}

func TestEchoAndHalfClose(t *testing.T) {
	p := newPair(t, Config{}, Config{}, echo)
	s, err := p.client.Open(ctxT(t), ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "hello" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Fatal("write after CloseWrite succeeded")
	}
}

func TestRefusalCarriesStatusAndReason(t *testing.T) {
	p := newPair(t, Config{}, Config{}, func(s *Stream) {
		if s.Method() != "CONNECT" || s.Authority() != "127.0.0.1:5432" {
			_ = s.Respond(400, "bad request "+s.Method()+" "+s.Authority())
			return
		}
		_ = s.Respond(403, "denied by policy\nsecond line")
	})
	_, err := p.client.Open(ctxT(t), "127.0.0.1:5432")
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 403 || se.Reason != "denied by policy second line" {
		t.Fatalf("Open = %v, want 403 with the reason", err)
	}
	// The refused stream is gone: the connection still serves.
	if !p.client.Available() {
		t.Fatal("connection unavailable after a refusal")
	}
}

// Bulk both ways at once through windows far smaller than the data: flow control must pace
// the writers without losing or reordering a byte.
func TestBulkBothWaysWithSmallWindows(t *testing.T) {
	small := Config{StreamWindow: 1 << 16, ConnWindow: 1 << 17}
	p := newPair(t, small, small, echo)
	const size = 8 << 20
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	want := sha256.Sum256(payload)
	var wg sync.WaitGroup
	for range 4 {
		s, err := p.client.Open(ctxT(t), ":1")
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Close()
			go func() {
				_, _ = s.Write(payload)
				_ = s.CloseWrite()
			}()
			h := sha256.New()
			n, err := io.Copy(h, s)
			if err != nil || n != size || !bytes.Equal(h.Sum(nil), want[:]) {
				t.Errorf("echoed %d bytes, err %v, digest match %v", n, err, bytes.Equal(h.Sum(nil), want[:]))
			}
		}()
	}
	wg.Wait()
}

func TestConcurrencyLimitAndGoAway(t *testing.T) {
	p := newPair(t, Config{}, Config{MaxConcurrentStreams: 2}, echo)
	var open []*Stream
	for range 2 {
		s, err := p.client.Open(ctxT(t), ":1")
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, s)
	}
	if p.client.Available() {
		t.Fatal("Available with the server's limit reached")
	}
	if _, err := p.client.Open(ctxT(t), ":1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("third Open = %v, want ErrUnavailable", err)
	}
	open[1].Close()
	// The server's GOAWAY: open streams keep working, new ones go elsewhere.
	p.server.GoAway()
	for p.client.Available() {
		select {
		case <-ctxT(t).Done():
			t.Fatal("client never saw the GOAWAY")
		case <-time.After(time.Millisecond):
		}
	}
	if _, err := open[0].Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(open[0], buf); err != nil || string(buf) != "ping" {
		t.Fatalf("stream after GOAWAY: %q %v", buf, err)
	}
	_ = open[0].CloseWrite()
	if _, err := io.ReadAll(open[0]); err != nil {
		t.Fatal(err)
	}
	open[0].Close()
	// Its last stream done, the server closes the connection: Serve returns nil.
	select {
	case err := <-p.served:
		if err != nil {
			t.Fatalf("Serve = %v after a graceful GOAWAY", err)
		}
	case <-ctxT(t).Done():
		t.Fatal("server kept the connection after its last stream")
	}
}

func TestResetReachesThePeer(t *testing.T) {
	got := make(chan error, 1)
	p := newPair(t, Config{}, Config{}, func(s *Stream) {
		_ = s.Respond(200, "")
		_, err := io.Copy(io.Discard, s)
		got <- err
	})
	s, err := p.client.Open(ctxT(t), ":1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	select {
	case err := <-got:
		var se *StreamError
		if !errors.As(err, &se) || se.Code != http2.ErrCodeCancel || !se.Remote {
			t.Fatalf("server read %v, want a remote CANCEL", err)
		}
	case <-ctxT(t).Done():
		t.Fatal("server never saw the reset")
	}
}

// A connection that dies mid-stream must not look like a clean end of the stream.
func TestLostConnectionIsNotEOF(t *testing.T) {
	p := newPair(t, Config{}, Config{}, func(s *Stream) {
		_ = s.Respond(200, "")
		_, _ = s.Write([]byte("partial"))
		s.c.nc.Close()
	})
	s, err := p.client.Open(ctxT(t), ":1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(s)
	if err == nil || string(b) != "partial" {
		t.Fatalf("read %q, %v: want the bytes, then an error", b, err)
	}
	select {
	case <-p.client.Done():
	case <-ctxT(t).Done():
		t.Fatal("client connection not closed")
	}
	if _, err := p.client.Open(ctxT(t), ":1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open on a dead connection = %v", err)
	}
}

// A peer that stops answering is found by the ping and closed.
func TestUnansweredPingClosesConnection(t *testing.T) {
	cn, sn := tcpPair(t)
	go func() { // a server that says hello and then never reads again
		pre := make([]byte, len(http2.ClientPreface))
		_, _ = io.ReadFull(sn, pre)
		_ = http2.NewFramer(sn, nil).WriteSettings()
	}()
	c, err := Client(cn, Config{ReadIdleTimeout: 20 * time.Millisecond, PingTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-ctxT(t).Done():
		t.Fatal("a silent peer kept the connection open")
	}
}

// The wire is plain HTTP/2: our client against net/http's server, and net/http's client
// against ours.
func TestInteropWithNetHTTP2(t *testing.T) {
	t.Run("client", func(t *testing.T) {
		cn, sn := tcpPair(t)
		go (&http2.Server{}).ServeConn(sn, &http2.ServeConnOpts{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodConnect || r.Host != ":9000" {
				w.Header().Set(HeaderReason, "want CONNECT :9000")
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			b, _ := io.ReadAll(r.Body)
			_, _ = w.Write(bytes.ToUpper(b))
		})})
		c, err := Client(cn, Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := c.Open(ctxT(t), ":9000")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = s.Write([]byte("through net/http"))
		_ = s.CloseWrite()
		if got, err := io.ReadAll(s); err != nil || string(got) != "THROUGH NET/HTTP" {
			t.Fatalf("got %q, %v", got, err)
		}
		if _, err := c.Open(ctxT(t), ":1"); err == nil || !errors.As(err, new(*StatusError)) {
			t.Fatalf("refused Open = %v", err)
		}
	})
	t.Run("server", func(t *testing.T) {
		cn, sn := tcpPair(t)
		go func() {
			sc, err := Server(sn, Config{})
			if err == nil {
				_ = sc.Serve(echo)
			}
		}()
		cc, err := (&http2.Transport{}).NewClientConn(cn)
		if err != nil {
			t.Fatal(err)
		}
		pr, pw := io.Pipe()
		req := (&http.Request{Method: http.MethodConnect, URL: &url.URL{Host: ":7000"}, Host: ":7000", Header: http.Header{}, Body: pr}).WithContext(ctxT(t))
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		for i := range 3 {
			msg := fmt.Sprintf("message %d", i)
			_, _ = pw.Write([]byte(msg))
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != msg {
				t.Fatalf("echo %d: %q, %v", i, buf, err)
			}
		}
		pw.Close()
		if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
			t.Fatalf("after the upload ended: %q, %v", rest, err)
		}
	})
}

// Streams opened from many goroutines at once must reach the server in ID order (a server
// that sees a lower ID after a higher one must end the connection).
func TestConcurrentOpens(t *testing.T) {
	p := newPair(t, Config{}, Config{}, echo)
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := p.client.Open(ctxT(t), ":1")
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			msg := fmt.Sprintf("stream %d", i)
			_, _ = s.Write([]byte(msg))
			_ = s.CloseWrite()
			if got, err := io.ReadAll(s); err != nil || string(got) != msg {
				t.Errorf("got %q, %v", got, err)
			}
		}()
	}
	wg.Wait()
}

// A stream the server refused unprocessed (REFUSED_STREAM) is ErrUnavailable: the caller
// retries on another connection.
func TestRefusedStreamIsUnavailable(t *testing.T) {
	cn, sn := tcpPair(t)
	go func() {
		pre := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(sn, pre); err != nil {
			return
		}
		fr := http2.NewFramer(sn, sn)
		_ = fr.WriteSettings()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if h, ok := f.(*http2.HeadersFrame); ok {
				_ = fr.WriteRSTStream(h.StreamID, http2.ErrCodeRefusedStream)
			}
		}
	}()
	c, err := Client(cn, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Open(ctxT(t), ":1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open = %v, want ErrUnavailable", err)
	}
}

// A server that pads its DATA frames: the padding's stream window must come back too, or the
// stream stalls once padding has used up the window.
func TestPaddedDataKeepsStreamWindowOpen(t *testing.T) {
	cn, sn := tcpPair(t)
	const frames = 400 // 400 × 256 bytes, well past a 64 KiB stream window
	done := make(chan error, 1)
	go func() {
		pre := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(sn, pre); err != nil {
			done <- err
			return
		}
		fr := http2.NewFramer(sn, sn)
		_ = fr.WriteSettings()
		win, sid := int64(defaultWindow), uint32(0)
		for sid == 0 {
			f, err := fr.ReadFrame()
			if err != nil {
				done <- err
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if v, ok := f.Value(http2.SettingInitialWindowSize); ok && !f.IsAck() {
					win = int64(v)
				}
			case *http2.HeadersFrame:
				sid = f.StreamID
			}
		}
		credit := make(chan int64, 1000)
		go func() {
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					return
				}
				if w, ok := f.(*http2.WindowUpdateFrame); ok && w.StreamID == sid {
					credit <- int64(w.Increment)
				}
			}
		}()
		var hb bytes.Buffer
		_ = hpack.NewEncoder(&hb).WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: hb.Bytes(), EndHeaders: true})
		pad := make([]byte, 254)
		for i := range frames {
			for win < 256 {
				select {
				case inc := <-credit:
					win += inc
				case <-time.After(5 * time.Second):
					done <- fmt.Errorf("stream window never reopened after frame %d", i)
					return
				}
			}
			win -= 256 // pad length byte + 1 data byte + 254 padding
			if err := fr.WriteDataPadded(sid, i == frames-1, []byte{'x'}, pad); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	c, err := Client(cn, Config{StreamWindow: 65535})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.Open(ctxT(t), ":1")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, s) }()
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
}

// Streams the client resets at once leave c.streams, but their handlers may still be busy:
// the concurrency limit counts handlers, so resets cannot pile up work (rapid reset).
func TestRapidResetBoundedByHandlers(t *testing.T) {
	release := make(chan struct{})
	var running, peak int32
	var mu sync.Mutex
	p := newPair(t, Config{}, Config{MaxConcurrentStreams: 2}, func(s *Stream) {
		mu.Lock()
		running++
		peak = max(peak, running)
		mu.Unlock()
		<-release
		mu.Lock()
		running--
		mu.Unlock()
		echo(s)
	})
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		if _, err := p.client.Open(ctx, ":1"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("open %d = %v, want the client giving up (the handler holds the answer)", i, err)
		}
		cancel()
	}
	if _, err := p.client.Open(ctxT(t), ":1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("third open while two handlers run = %v, want ErrUnavailable (REFUSED_STREAM)", err)
	}
	close(release)
	for {
		s, err := p.client.Open(ctxT(t), ":1")
		if err == nil {
			s.Close()
			break
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Fatal(err)
		}
		select {
		case <-ctxT(t).Done():
			t.Fatal("handlers never freed their slots")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if peak > 2 {
		t.Fatalf("%d handlers ran at once, limit 2", peak)
	}
}
