package sidecar

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestStreamPipe(t *testing.T) {
	bp := newBufPool()
	t.Run("bytes in order then EOF", func(t *testing.T) {
		p := newStreamPipe(bp)
		want := bytes.Repeat([]byte("0123456789"), copyBufSize/5) // two buffers' worth
		go func() {
			for i := 0; i < len(want); i += 1000 {
				if _, err := p.Write(want[i:min(i+1000, len(want))]); err != nil {
					t.Error(err)
					return
				}
			}
			if _, err := p.Write(want[:0]); err != nil {
				t.Error(err)
			}
			p.closeWrite(io.EOF)
		}()
		got, err := io.ReadAll(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %d bytes (%v), want %d", len(got), err, len(want))
		}
		if _, err := p.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("write after closeWrite: %v", err)
		}
	})
	t.Run("a large write waits for the reader", func(t *testing.T) {
		p := newStreamPipe(bp)
		big := make([]byte, 3*copyBufSize)
		done := make(chan int)
		go func() {
			n, _ := p.Write(big)
			done <- n
		}()
		buf := make([]byte, copyBufSize)
		for got := 0; got < len(big); {
			n, err := p.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
		select {
		case n := <-done:
			if n != len(big) {
				t.Fatalf("wrote %d", n)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("writer still blocked after everything was read")
		}
	})
	t.Run("reader close fails a blocked writer", func(t *testing.T) {
		p := newStreamPipe(bp)
		if _, err := p.Write([]byte("unread")); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error)
		go func() {
			_, err := p.Write([]byte("blocked"))
			errc <- err
		}()
		_ = p.Close()
		select {
		case err := <-errc:
			if !isClosedErr(err) {
				t.Fatalf("blocked write: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("blocked writer not released by the reader's Close")
		}
	})
	t.Run("abort drops unread bytes", func(t *testing.T) {
		p := newStreamPipe(bp)
		if _, err := p.Write([]byte("unread")); err != nil {
			t.Fatal(err)
		}
		p.abort(net.ErrClosed)
		if n, err := p.Read(make([]byte, 10)); n != 0 || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after abort: %d, %v", n, err)
		}
	})
}
