package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sys/unix"

	"github.com/meshguard/meshguard/internal/intercept"
	"github.com/meshguard/meshguard/internal/intercept/nstest"
)

const (
	e2eOut, e2eIn, e2eTunnel = 15001, 15006, 15008
	e2eAppPort               = 8080
	nobody                   = 65534
)

// nsDial dials from inside the network namespace at ns.
func nsDial(ns string) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := intercept.Do(ns, func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

func nsListen(t *testing.T, ns string, port int) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := intercept.Do(ns, func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", port)); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// startSidecar runs what `meshguard sidecar` will run in a pod: redirect rules, the inbound
// proxy and the outbound proxy, all bound inside ns. The test process (uid 0) is the sidecar;
// the apps run as other uids or are reached over loopback.
func startSidecar(t *testing.T, ns string, ca *testCA, svid *x509svid.SVID, res Resolver) (in, out *reports) {
	t.Helper()
	rules, err := intercept.New(intercept.Config{
		NetNSPath: ns, OutboundPort: e2eOut, InboundPort: e2eIn, TunnelPort: e2eTunnel,
		ExcludeUIDs: []uint32{0}, ExcludeMark: 0x539,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rules.Install(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rules.Remove() })
	creds := Credentials{SVID: newRotating(svid), Bundle: ca.bundle()}
	clock := clockwork.NewRealClock()
	in, out = newReports(), newReports()
	inbound, err := NewInbound(InboundConfig{
		Creds: creds, Clock: clock, Log: quietLog(),
		TunnelListener: nsListen(t, ns, e2eTunnel), PlainListener: nsListen(t, ns, e2eIn),
		OriginalDst: intercept.OriginalDst, Dial: nsDial(ns), Report: in.add, DrainTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	client, err := NewTunnelClient(TunnelClientConfig{Creds: creds, Clock: clock, Log: quietLog(), Dial: nsDial(ns)})
	if err != nil {
		t.Fatal(err)
	}
	outbound, err := NewOutbound(OutboundConfig{
		Clock: clock, Log: quietLog(), Listener: nsListen(t, ns, e2eOut), OriginalDst: intercept.OriginalDst,
		Resolver: res, Tunnel: client, Report: out.add, Self: svid.ID, Dial: nsDial(ns), DrainTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{inbound.Run, outbound.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil {
				t.Errorf("sidecar in %s: %v", ns, err)
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = client.Close(context.Background())
	})
	return in, out
}

// capture records every frame on ifname inside ns until stop is called (at most 32 MiB).
func capture(t *testing.T, ns, ifname string) (stop func() []byte) {
	t.Helper()
	proto := int(htons(unix.ETH_P_ALL))
	var fd int
	err := intercept.Do(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("capture on %s: %v", ifname, err)
	}
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	var (
		stopped atomic.Bool
		got     bytes.Buffer
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for !stopped.Load() && got.Len() < 32<<20 {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // EAGAIN after the receive timeout: check stopped
			}
			got.Write(buf[:n])
		}
	}()
	return func() []byte {
		stopped.Store(true)
		<-done
		unix.Close(fd)
		return got.Bytes()
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestPodsTalkThroughSidecarsOnlyInTLS: curl in pod A fetches from python's http.server in pod
// B through the intercepting sidecars, and the veth carries only TLS.
func TestPodsTalkThroughSidecarsOnlyInTLS(t *testing.T) {
	p := nstest.NewPair(t)
	for _, bin := range []string{"nsenter", "curl", "python3"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s: %v", bin, err)
		}
	}
	ca := newCA(t, "cluster.local")
	clientSVID, serverSVID := ca.svid(t, "/ns/shop/sa/client"), ca.svid(t, "/ns/shop/sa/web")
	server := netip.AddrPortFrom(p.BIP, e2eAppPort)
	resolveA := resolverFunc(func(_ context.Context, _, dst netip.AddrPort) (Route, error) {
		if dst != server {
			return Route{}, fmt.Errorf("no route to %v", dst)
		}
		return Route{Kind: RouteTunnel, Peer: Peer{Addr: netip.AddrPortFrom(p.BIP, e2eTunnel).String(), ID: serverSVID.ID}}, nil
	})
	noRoutes := resolverFunc(func(_ context.Context, _, dst netip.AddrPort) (Route, error) {
		return Route{}, fmt.Errorf("no route to %v", dst)
	})
	_, outA := startSidecar(t, p.A, ca, clientSVID, resolveA)
	inB, _ := startSidecar(t, p.B, ca, serverSVID, noRoutes)

	// The app in B: python's http.server, serving a file with a recognisable body.
	dir := t.TempDir()
	body := "meshguard-e2e-secret-body-" + strings.Repeat("x", 2000)
	if err := os.WriteFile(filepath.Join(dir, "e2e.txt"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	py := exec.CommandContext(ctx, "nsenter", "--net="+p.B, "--", "python3", "-u", "-m", "http.server", "--bind", "0.0.0.0", fmt.Sprint(e2eAppPort))
	py.Dir = dir
	stdout, err := py.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := py.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = py.Process.Kill(); _ = py.Wait() })
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || !strings.Contains(line, "Serving HTTP") {
		t.Fatalf("http.server did not start: %q, %v", line, err)
	}

	stop := capture(t, p.A, p.VethA)
	curl := exec.CommandContext(ctx, "nsenter", "--net="+p.A, "--setuid", fmt.Sprint(nobody), "--setgid", fmt.Sprint(nobody), "--",
		"curl", "-sS", "--max-time", "10", fmt.Sprintf("http://%s/e2e.txt", server))
	curl.Env = []string{"PATH=" + os.Getenv("PATH")}
	got, err := curl.Output()
	wire := stop()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("curl: %v: %s", err, ee.Stderr)
		}
		t.Fatalf("curl: %v", err)
	}
	if string(got) != body {
		t.Fatalf("curl got %d bytes, want the %d-byte file", len(got), len(body))
	}

	for _, plain := range []string{"GET /e2e.txt", "meshguard-e2e-secret-body", "HTTP/1.0 200"} {
		if bytes.Contains(wire, []byte(plain)) {
			t.Errorf("plaintext %q seen on the veth", plain)
		}
	}
	// TLS 1.3 application data records: content type 23, legacy version 3.3.
	if !bytes.Contains(wire, []byte{23, 3, 3}) || len(wire) < len(body) {
		t.Errorf("captured %d bytes without TLS application data; did the traffic take the veth?", len(wire))
	}

	ob := outA.next(t)
	if ob.Reason != ReasonClosed || ob.DestAddr != server || ob.Destination != serverSVID.ID || ob.BytesReceived < int64(len(body)) {
		t.Errorf("outbound report in A: %+v", ob)
	}
	ib := inB.next(t)
	if ib.Reason != ReasonClosed || ib.Source != clientSVID.ID || !ib.Authenticated || ib.DestAddr.Port() != e2eAppPort {
		t.Errorf("inbound report in B: %+v", ib)
	}

	// A client without a sidecar (marked, so A's rules leave it alone) reaching B's app port
	// directly is refused: B is STRICT.
	var plainErr error
	_ = intercept.Do(p.A, func() error {
		d := net.Dialer{Control: intercept.MarkControl(0x539), Timeout: 5 * time.Second}
		pc, err := d.Dial("tcp", server.String())
		if err != nil {
			plainErr = err
			return nil
		}
		defer pc.Close()
		_ = pc.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = pc.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		n, err := pc.Read(make([]byte, 64))
		if n > 0 {
			plainErr = nil
			return nil
		}
		plainErr = err
		return nil
	})
	if plainErr == nil || isTimeout(plainErr) {
		t.Errorf("unmeshed plaintext to a STRICT pod: %v, want refused", plainErr)
	}
	if r := inB.next(t); r.Reason != ReasonStrictRefuse {
		t.Errorf("strict refusal report: %+v", r)
	}
}
