package h2tunnel

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// scriptConn is a connection whose peer sends script and ignores what it is sent.
type scriptConn struct {
	net.Conn // nil: only the methods below are used
	r        io.Reader
}

func (c *scriptConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *scriptConn) Close() error                { return nil }
func (c *scriptConn) RemoteAddr() net.Addr        { return &net.TCPAddr{} }

// seedFrames is a valid client conversation: settings, a CONNECT, data, a window update.
func seedFrames() []byte {
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&b, nil)
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	_ = enc.WriteField(hpack.HeaderField{Name: ":authority", Value: ":8080"})
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	_ = fr.WriteData(1, false, []byte("GET / HTTP/1.1\r\n\r\n"))
	_ = fr.WriteWindowUpdate(1, 100)
	_ = fr.WritePing(false, [8]byte{1})
	_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
	_ = fr.WriteData(1, true, []byte("late"))
	_ = fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	return b.Bytes()
}

// The server side reads whatever a peer sends: it must not panic, hang or keep goroutines.
func FuzzServer(f *testing.F) {
	f.Add(seedFrames())
	f.Add([]byte(http2.ClientPreface))
	f.Add(append([]byte(http2.ClientPreface), 0, 0, 4, 8, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff))
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := Server(&scriptConn{r: bytes.NewReader(data)}, Config{})
		if err != nil {
			return
		}
		done := make(chan error, 1)
		go func() {
			done <- sc.Serve(func(s *Stream) {
				_ = s.Respond(200, "")
				_, _ = io.Copy(io.Discard, s)
				s.Close()
			})
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return at the end of the input")
		}
	})
}
