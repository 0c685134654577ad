package capture

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

// recordingWriter feeds one direction of a relayed stream to a recorder, the way the
// sidecar's pipe hands each chunk to its StreamObserver before forwarding it.
type recordingWriter struct {
	w   io.Writer
	obs func([]byte) error
}

func (r recordingWriter) Write(p []byte) (int, error) {
	if err := r.obs(p); err != nil {
		return 0, err
	}
	return r.w.Write(p)
}

// TestCaptureOfTLSRelayedRequest relays a real HTTPS client through a TLS-terminating proxy
// (a stand-in for the sidecar) to a plaintext app; the recorder sees the decrypted stream and
// the capture holds the attack request in plaintext with the real client/app addresses.
func TestCaptureOfTLSRelayedRequest(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer app.Close()
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler()) // for its certificate and a client trusting it
	defer tlsSrv.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: tlsSrv.TLS.Certificates})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m, clk := newManager(t, nil)
	conns := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		up, err := net.Dial("tcp", app.Listener.Addr().String())
		if err != nil {
			return
		}
		defer up.Close()
		r := m.Open(ConnInfo{ID: "relay-1", Workload: "shop/api-0",
			Client: netip.MustParseAddrPort(c.RemoteAddr().String()), Server: netip.MustParseAddrPort(up.RemoteAddr().String())})
		defer r.Close()
		conns <- "relay-1"
		done := make(chan struct{})
		go func() { _, _ = io.Copy(recordingWriter{c, r.FromServer}, up); close(done) }()
		_, _ = io.Copy(recordingWriter{up, r.FromClient}, c)
		<-done
	}()
	client := tlsSrv.Client()
	client.Transport.(*http.Transport).DisableKeepAlives = true
	resp, err := client.Get("https://" + ln.Addr().String() + "/search?q=%27%20OR%201%3D1--")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" {
		t.Fatalf("relayed response %q", body)
	}
	id, err := m.Trigger(Request{ConnID: <-conns, Reason: "sqli"})
	if err != nil {
		t.Fatal(err)
	}
	f := finishCapture(t, m, clk, id, m.cfg.After)
	got := tshark(t, f, "-Y", "http.request", "-T", "fields", "-e", "ip.dst", "-e", "tcp.dstport", "-e", "http.request.uri")
	_, port, _ := net.SplitHostPort(app.Listener.Addr().String())
	if want := "127.0.0.1\t" + port + "\t/search?q=%27%20OR%201%3D1--\n"; got != want {
		t.Fatalf("capture = %q, want %q", got, want)
	}
}
