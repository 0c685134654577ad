package sidecar

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func rawPair(t *testing.T) (*rawConn, net.Conn) {
	t.Helper()
	ln := listenLocal(t)
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-acc
	t.Cleanup(func() { c.Close(); peer.Close() })
	rc, ok := rawIO(c).(*rawConn)
	if !ok {
		t.Fatal("rawIO did not wrap a TCP connection")
	}
	return rc, peer
}

// rawConn must behave like the net.TCPConn it wraps: bytes both ways, EOF, errors
// that say closed or timeout, half-close.
func TestRawConn(t *testing.T) {
	rc, peer := rawPair(t)
	if _, err := rc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("peer read %q, %v", buf, err)
	}
	big := make([]byte, 4<<20) // more than the socket buffers: Write must wait for the poller
	go func() { _, _ = peer.Write(big); peer.(*net.TCPConn).CloseWrite() }()
	n, err := io.Copy(io.Discard, rc)
	if err != nil || n != int64(len(big)) {
		t.Fatalf("read %d bytes, %v; want %d then EOF", n, err, len(big))
	}
	if err := rc.CloseWrite(); err != nil { // promoted from the TCPConn
		t.Fatal(err)
	}
	if n, err := peer.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("peer after CloseWrite: %d, %v", n, err)
	}

	rc2, _ := rawPair(t)
	_ = rc2.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	var ne net.Error
	if _, err := rc2.Read(buf); !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	_ = rc2.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, err := rc2.Read(buf); done <- err }()
	rc2.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed connection: %v, want net.ErrClosed", err)
	}

	// A peer that reset: the read fails with a count of 0 (the raw call's -1 must not leak).
	rc4, peer4 := rawPair(t)
	_ = peer4.(*net.TCPConn).SetLinger(0)
	peer4.Close()
	if n, err := rc4.Read(buf); n != 0 || err == nil || err == io.EOF {
		t.Fatalf("read from a reset peer: %d, %v; want 0 and a reset error", n, err)
	}

	// A peer that reset: the write fails (EPIPE or ECONNRESET), no SIGPIPE kills the test.
	rc3, peer3 := rawPair(t)
	_ = peer3.(*net.TCPConn).SetLinger(0)
	peer3.Close()
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		_, werr = rc3.Write(make([]byte, 64<<10))
	}
	if werr == nil || errors.Is(werr, net.ErrClosed) {
		t.Fatalf("writes to a reset peer: %v, want a reset/broken pipe error", werr)
	}
}
