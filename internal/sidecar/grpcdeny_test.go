package sidecar

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshguard/meshguard/internal/dpi"
)

// h2DenyObserver is the enforcer's HTTP/2 part in small: real DPI, and a refusal (h2Refusal)
// of requests whose gRPC method or HTTP path is in deny.
type h2DenyObserver struct {
	mu      sync.Mutex
	fl      *dpi.Flow
	deny    map[string]bool
	refused int
	grpc    bool
}

func (*h2DenyObserver) refusesHTTP2() {}

func newH2DenyObserver(t testing.TB, deny ...string) *h2DenyObserver {
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	o := &h2DenyObserver{deny: map[string]bool{}}
	for _, d := range deny {
		o.deny[d] = true
	}
	o.fl = eng.NewFlow(dpi.FlowInfo{Transport: dpi.TCP}, func(m *dpi.Message) {
		if m.Dir != dpi.ClientToServer || m.Type != dpi.TypeRequest {
			return
		}
		if o.deny[string(m.Get(dpi.AttrRPC))] || o.deny[string(m.Get(dpi.AttrPath))] {
			o.refused++
			o.grpc = m.Get(dpi.AttrService) != nil
		}
	})
	return o
}

func (o *h2DenyObserver) FromClient(p []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.refused = 0
	o.fl.Feed(dpi.ClientToServer, p)
	if o.refused > 0 {
		return h2Refusal("denied by rule shop/no-list", o.grpc)
	}
	return nil
}

func (o *h2DenyObserver) FromServer([]byte) error { return nil }
func (o *h2DenyObserver) Close()                  {}

// tunnelConn is a TunnelStream as the net.Conn gRPC and net/http dial.
type tunnelConn struct{ *TunnelStream }

func (tunnelConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (tunnelConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (tunnelConn) SetDeadline(time.Time) error      { return nil }
func (tunnelConn) SetReadDeadline(time.Time) error  { return nil }
func (tunnelConn) SetWriteDeadline(time.Time) error { return nil }
func (c tunnelConn) Close() error                   { return c.TunnelStream.Close() }

type healthSrv struct {
	healthpb.UnimplementedHealthServer
	lists atomic.Int32
}

func (*healthSrv) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (h *healthSrv) List(context.Context, *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	h.lists.Add(1)
	return &healthpb.HealthListResponse{}, nil
}

func (h *healthSrv) Watch(_ *healthpb.HealthCheckRequest, s grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	h.lists.Add(1)
	return s.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
}

// grpcThroughMesh starts a gRPC health server behind an inbound proxy whose observer refuses
// deny, and a client whose connections go through the tunnel, counting dials.
func grpcThroughMesh(t *testing.T, deny ...string) (healthpb.HealthClient, *healthSrv, *atomic.Int32, *mesh) {
	t.Helper()
	port, hs := healthServer(t)
	m := newMesh(t, func(c *InboundConfig) {
		c.Inspect = func(context.Context, StreamInfo) StreamObserver { return newH2DenyObserver(t, deny...) }
	})
	cc, dials := healthClient(t, m, port)
	return healthpb.NewHealthClient(cc), hs, dials, m
}

// healthServer serves gRPC health on loopback for the test's life.
func healthServer(t *testing.T) (port int, hs *healthSrv) {
	t.Helper()
	ln := listenLocal(t)
	gs := grpc.NewServer()
	hs = &healthSrv{}
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return ln.Addr().(*net.TCPAddr).Port, hs
}

// healthClient is a gRPC client whose connections are tunnel streams of m to port, with the
// count of its dials.
func healthClient(t *testing.T, m *mesh, port int) (*grpc.ClientConn, *atomic.Int32) {
	t.Helper()
	var dials atomic.Int32
	cc, err := grpc.NewClient("passthrough:///health",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			dials.Add(1)
			s, err := m.client.Open(ctx, m.peer, fmt.Sprintf(":%d", port))
			if err != nil {
				return nil, err
			}
			return tunnelConn{s}, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, &dials
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestH2RefusesOneGRPCCallAndKeepsTheConnection(t *testing.T) {
	hc, hs, dials, _ := grpcThroughMesh(t, "List", "Watch")
	ctx := callCtx(t)
	check := func() {
		t.Helper()
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check: %v, %v", r, err)
		}
	}
	denied := func(err error) {
		t.Helper()
		st, _ := status.FromError(err)
		if st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "denied by meshguard: denied by rule shop/no-list") {
			t.Fatalf("got %v, want PermissionDenied naming the rule", err)
		}
	}
	check()
	_, err := hc.List(ctx, &healthpb.HealthListRequest{})
	denied(err)
	check()
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	denied(err)
	check()
	if _, err := hc.List(ctx, &healthpb.HealthListRequest{}); err == nil {
		t.Fatal("second List passed")
	}
	check()
	if n := hs.lists.Load(); n != 0 {
		t.Fatalf("the server ran %d refused calls", n)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections dialled, want 1: the refusal cut the connection", n)
	}
}

func TestH2ManyConcurrentCallsMixed(t *testing.T) {
	hc, hs, dials, _ := grpcThroughMesh(t, "List")
	ctx := callCtx(t)
	// Warm up the connection so every call shares it.
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	const n = 200
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: strings.Repeat("s", i)})
				if err != nil {
					errs <- fmt.Errorf("Check %d: %w", i, err)
				}
				return
			}
			_, err := hc.List(ctx, &healthpb.HealthListRequest{})
			if status.Code(err) != codes.PermissionDenied {
				errs <- fmt.Errorf("List %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if hs.lists.Load() != 0 || dials.Load() != 1 {
		t.Fatalf("lists run %d, dials %d", hs.lists.Load(), dials.Load())
	}
}

// Refused calls with large messages: their DATA is dropped and credited back, so the
// connection's flow-control window never runs dry for the calls that follow.
func TestH2RefusedUploadsKeepFlowControl(t *testing.T) {
	hc, hs, dials, _ := grpcThroughMesh(t, "Check")
	ctx := callCtx(t)
	big := strings.Repeat("s", 200<<10)
	for i := range 20 { // 4 MB: far more than gRPC's initial connection window
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: big})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("Check %d: %v", i, err)
		}
	}
	if _, err := hc.List(ctx, &healthpb.HealthListRequest{}); err != nil {
		t.Fatalf("List after the refusals: %v", err)
	}
	if hs.lists.Load() != 1 || dials.Load() != 1 {
		t.Fatalf("lists %d, dials %d", hs.lists.Load(), dials.Load())
	}
}

// The enforcer itself (policy, DPI, reports) refusing a gRPC method with the HTTP/2 layer;
// it runs once enforce.go opts in (refusesHTTP2 and h2Refusal in FromClient).
func TestH2EnforcerRefusesGRPCMethod(t *testing.T) {
	if _, ok := any(&enforcer{}).(h2Refuser); !ok {
		t.Skip("enforce.go does not use the HTTP/2 layer yet (see grpcdeny.go)")
	}
	port, hs := healthServer(t)
	view, index := enforceViewOf(t, fmt.Sprintf(`apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: redis, namespace: shop}
spec: {mode: protect}
---
apiVersion: meshguard.io/v1alpha1
kind: Group
metadata: {name: web, namespace: shop}
spec: {mode: discover}
---
apiVersion: meshguard.io/v1alpha1
kind: NetworkRule
metadata: {name: health-check, namespace: shop}
spec: {from: {group: web}, to: {group: redis}, ports: [tcp/%d], applications: [grpc], action: allow,
  l7: {grpc: {methods: [grpc.health.v1.Health/Check]}}}
`, port))
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	m := newMesh(t, func(c *InboundConfig) {
		c.Admit = policyAdmitter(view, index)
		c.Inspect = EnforcingInspector(eng, view, index)
	})
	cc, dials := healthClient(t, m, port)
	hc := healthpb.NewHealthClient(cc)
	ctx := callCtx(t)
	for i := range 3 {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("Check %d: %v", i, err)
		}
		_, err := hc.List(ctx, &healthpb.HealthListRequest{})
		if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied ||
			!strings.Contains(st.Message(), "denied by meshguard: ") || !strings.Contains(st.Message(), "shop/health-check") {
			t.Fatalf("List %d: %v", i, err)
		}
	}
	cc.Close()
	rep := m.reports.next(t)
	if dials.Load() != 1 || hs.lists.Load() != 0 || rep.DeniedRequests != 3 || rep.Verdict != "deny" || rep.AppProtocol != "http2" {
		t.Fatalf("dials %d, lists run %d, report %+v", dials.Load(), hs.lists.Load(), rep)
	}
}

// TestH2PlainHTTP2Gets403: h2c by prior knowledge over the plaintext path (PERMISSIVE); a
// refused request gets 403 with the reason, its body never reaches the app, and the
// connection carries on (also past many refused uploads: flow control stays balanced).
func TestH2PlainHTTP2Gets403(t *testing.T) {
	var admin atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "ok %d", n)
	})
	mux.HandleFunc("/admin", func(w http.ResponseWriter, r *http.Request) { admin.Add(1) })
	srv := &http.Server{Handler: mux, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln := listenLocal(t)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	appPort := uint16(ln.Addr().(*net.TCPAddr).Port)
	m := newMesh(t, func(c *InboundConfig) {
		c.Mode = Permissive
		c.OriginalDst = func(*net.TCPConn) (netip.AddrPort, error) {
			return netip.AddrPortFrom(netip.MustParseAddr("10.0.0.9"), appPort), nil
		}
		c.Inspect = func(context.Context, StreamInfo) StreamObserver { return newH2DenyObserver(t, "/admin") }
	})
	var dials atomic.Int32
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, m.plain.Addr().String())
	}
	t.Cleanup(tr.CloseIdleConnections)
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	do := func(method, path string, body []byte) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://app"+path, bytes.NewReader(body))
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("%s %s: %s, want HTTP/2", method, path, resp.Proto)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if c, b := do("GET", "/ok", nil); c != 200 || b != "ok 0" {
		t.Fatalf("GET /ok: %d %q", c, b)
	}
	c, b := do("DELETE", "/admin", nil)
	if c != http.StatusForbidden || !strings.Contains(b, "denied by meshguard: denied by rule shop/no-list") {
		t.Fatalf("DELETE /admin: %d %q", c, b)
	}
	big := bytes.Repeat([]byte("x"), 100<<10)
	for range 30 { // 3 MB of refused uploads: more than any connection window
		if c, _ := do("POST", "/admin", big); c != http.StatusForbidden {
			t.Fatalf("POST /admin: %d", c)
		}
	}
	if c, b := do("POST", "/ok", big); c != 200 || b != fmt.Sprintf("ok %d", len(big)) {
		t.Fatalf("POST /ok after refusals: %d %q", c, b)
	}
	if admin.Load() != 0 || dials.Load() != 1 {
		t.Fatalf("admin handler ran %d times, %d dials", admin.Load(), dials.Load())
	}
}

// The preface alone names the protocol: each request is then decided in the call that
// ends its header block (h2Stream relies on it).
func TestDPIDetectsHTTP2OnThePreface(t *testing.T) {
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	fl := eng.NewFlow(dpi.FlowInfo{Transport: dpi.TCP, ServerPort: 50051}, nil)
	fl.Feed(dpi.ClientToServer, []byte(http2.ClientPreface))
	if !fl.Detected() || fl.Protocol() != "http2" {
		t.Fatalf("detected %v as %q", fl.Detected(), fl.Protocol())
	}
}

func TestH2GateInjectsBetweenFrames(t *testing.T) {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	_ = fr.WriteSettings()
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x88}, EndHeaders: false})
	_ = fr.WriteContinuation(1, true, []byte{0x88})
	_ = fr.WriteRSTStream(3, http2.ErrCodeProtocol) // the refused stream's: dropped
	_ = fr.WriteData(1, false, []byte("hello"))
	_ = fr.WriteRSTStream(5, http2.ErrCodeCancel) // another stream's: kept
	server := append([]byte(nil), buf.Bytes()...)
	const settings, headers, cont, rst = 9, 10, 10, 13
	var g h2Gate
	g.refuse(3)
	var out bytes.Buffer
	// Nothing goes before the server's SETTINGS.
	if err := g.inject(&out, []byte("EARLY")); err != nil || out.Len() != 0 {
		t.Fatalf("injected before the server's first frame: %q %v", out.Bytes(), err)
	}
	// Mid HEADERS: the reply waits until the header block (with its CONTINUATION) is over.
	if _, err := g.writeChunk(&out, server[:settings+5]); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), append(server[:settings:settings], "EARLY"...)) {
		t.Fatalf("after SETTINGS: %q", out.Bytes())
	}
	if err := g.inject(&out, []byte("REPLY")); err != nil {
		t.Fatal(err)
	}
	for i := settings + 5; i < len(server); i += 7 { // split everywhere, headers too
		if _, err := g.writeChunk(&out, server[i:min(i+7, len(server))]); err != nil {
			t.Fatal(err)
		}
	}
	end := settings + headers + cont
	want := append(append(append(append([]byte(nil), server[:settings]...), "EARLY"...), server[settings:end]...), "REPLY"...)
	want = append(want, server[end+rst:]...)
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("got  %q\nwant %q", out.Bytes(), want)
	}
	// Between frames: at once.
	if err := g.inject(&out, []byte("NOW")); err != nil || !bytes.HasSuffix(out.Bytes(), []byte("NOW")) {
		t.Fatalf("inject at a boundary: %v", err)
	}
}

// TestH2RewriteSplitFrames drives the client side directly with every chunking of a
// connection: the refused stream's block reaches the server marked (decodable, same HPACK
// state), its DATA is dropped and credited, and the other streams pass byte for byte.
func TestH2RewriteSplitFrames(t *testing.T) {
	var in bytes.Buffer
	in.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&in, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	block := func(path string) []byte {
		hb.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", "a"}, {"content-type", "application/grpc"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		return append([]byte(nil), hb.Bytes()...)
	}
	_ = fr.WriteSettings()
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("/p.S/Ok"), EndHeaders: true})
	_ = fr.WriteData(1, true, []byte("one"))
	b3 := block("/p.S/List")
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: b3[:3]})
	_ = fr.WriteContinuation(3, true, b3[3:])
	_ = fr.WriteData(3, true, []byte("secret"))
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block("/p.S/Ok"), EndHeaders: true})
	_ = fr.WriteData(5, true, []byte("five"))
	wire := in.Bytes()
	for cut := 1; cut < len(wire); cut++ {
		s := newH2Stream(newH2DenyObserver(t, "List"))
		var fwd, back bytes.Buffer
		for _, chunk := range [][]byte{wire[:cut], wire[cut:]} {
			err := s.fromClient(chunk)
			switch e := err.(type) {
			case nil:
				fwd.Write(chunk)
			case *Drop:
				fwd.Write(e.Forward)
				back.Write(e.Reply)
			default:
				t.Fatalf("cut %d: %v", cut, err)
			}
		}
		// The server's view: every frame decodes, stream 3's block is malformed, no DATA 3.
		sf := http2.NewFramer(nil, bytes.NewReader(fwd.Bytes()[len(http2.ClientPreface):]))
		sf.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		var paths []string
		var data []string
		for {
			f, err := sf.ReadFrame()
			if err == io.EOF {
				break
			}
			if se, ok := err.(http2.StreamError); ok && se.StreamID == 3 {
				paths = append(paths, "malformed")
				continue
			}
			if err != nil {
				t.Fatalf("cut %d: server framer: %v", cut, err)
			}
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				paths = append(paths, f.PseudoValue("path"))
			case *http2.DataFrame:
				data = append(data, string(f.Data()))
			}
		}
		if got := strings.Join(paths, ",") + " " + strings.Join(data, ","); got != "/p.S/Ok,malformed,/p.S/Ok one,five" {
			t.Fatalf("cut %d: server saw %s", cut, got)
		}
		// The client's view: a trailers-only PERMISSION_DENIED on 3, then the credit.
		cf := http2.NewFramer(nil, bytes.NewReader(back.Bytes()))
		cf.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		f, err := cf.ReadFrame()
		if err != nil {
			t.Fatalf("cut %d: reply: %v", cut, err)
		}
		mh, ok := f.(*http2.MetaHeadersFrame)
		if !ok || mh.StreamID != 3 || !mh.StreamEnded() || mh.PseudoValue("status") != "200" {
			t.Fatalf("cut %d: reply %v", cut, f)
		}
		var gs string
		for _, hf := range mh.RegularFields() {
			if hf.Name == "grpc-status" {
				gs = hf.Value
			}
		}
		if gs != "7" {
			t.Fatalf("cut %d: grpc-status %q", cut, gs)
		}
		var credit uint32
		for {
			f, err := cf.ReadFrame()
			if err != nil {
				break
			}
			if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == 0 {
				credit += wu.Increment
			}
		}
		if credit != uint32(len("secret")) {
			t.Fatalf("cut %d: credited %d", cut, credit)
		}
	}
}

// FuzzH2ClientChunks: any bytes, any chunking, refusals or not: no panic, bounded buffers,
// and without refusals the bytes pass unchanged (only a trailing partial frame is held).
func FuzzH2ClientChunks(f *testing.F) {
	f.Add([]byte(http2.ClientPreface+"\x00\x00\x03\x01\x05\x00\x00\x00\x01\x82\x84\x86"), uint8(7), true)
	f.Add([]byte(http2.ClientPreface+"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x10"), uint8(3), false)
	f.Fuzz(func(t *testing.T, data []byte, step uint8, refuse bool) {
		in := append([]byte(http2.ClientPreface), data...)
		o := &fuzzRefuser{refuse: refuse}
		s := newH2Stream(o)
		st := int(step) + 1
		var fwd bytes.Buffer
		for i := 0; i < len(in); i += st {
			chunk := in[i:min(i+st, len(in))]
			err := s.fromClient(chunk)
			switch e := err.(type) {
			case nil:
				fwd.Write(chunk)
			case *Drop:
				fwd.Write(e.Forward)
				if len(e.Reply) > 8<<10 {
					t.Fatalf("reply of %d bytes", len(e.Reply))
				}
			default:
				if !refuse {
					t.Fatalf("error without refusals: %v", err)
				}
				return
			}
			if len(s.held) > h2HoldMax+h2FrameHdr || len(s.denied) > h2MaxDenied || cap(s.out) > 4*h2HoldMax {
				t.Fatalf("buffers grew: held %d denied %d out %d", len(s.held), len(s.denied), cap(s.out))
			}
		}
		if !refuse && !bytes.HasPrefix(in, fwd.Bytes()) {
			t.Fatal("bytes changed without a refusal")
		}
	})
}

// fuzzRefuser refuses every chunk that ends a header block when refuse is set.
type fuzzRefuser struct{ refuse bool }

func (*fuzzRefuser) refusesHTTP2() {}
func (o *fuzzRefuser) FromClient(p []byte) error {
	if o.refuse && len(p) > 0 && p[len(p)-1]&1 == 0 {
		return h2Refusal("fuzz", p[0]&1 == 0)
	}
	return nil
}
func (*fuzzRefuser) FromServer([]byte) error { return nil }
func (*fuzzRefuser) Close()                  {}

// FuzzH2GateServerChunks: any server bytes, any chunking: no panic; with no refused stream
// the bytes pass unchanged (a server that is not HTTP/2 is never held up), and with one
// nothing is added.
func FuzzH2GateServerChunks(f *testing.F) {
	f.Add([]byte("\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x04\x03\x00\x00\x00\x00\x03\x00\x00\x00\x01"), uint8(4), uint32(3))
	f.Add([]byte("J\x00\x00\x00\x0a8.0.36\x00"), uint8(1), uint32(0))
	f.Fuzz(func(t *testing.T, data []byte, step uint8, refused uint32) {
		var g h2Gate
		if refused != 0 {
			g.refuse(refused)
		}
		var out bytes.Buffer
		st := int(step) + 1
		for i := 0; i < len(data); i += st {
			chunk := data[i:min(i+st, len(data))]
			if _, err := g.writeChunk(&out, chunk); err != nil {
				t.Fatal(err)
			}
			if refused == 0 && !bytes.Equal(out.Bytes(), data[:i+len(chunk)]) {
				t.Fatalf("bytes held or changed with nothing refused")
			}
		}
		if out.Len() > len(data) {
			t.Fatalf("%d bytes out of %d", out.Len(), len(data))
		}
	})
}

// The HTTP/2 layer costs no allocation per chunk when nothing is refused.
func TestH2NoAllocsWithoutRefusals(t *testing.T) {
	var in bytes.Buffer
	fr := http2.NewFramer(&in, nil)
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x83, 0x86, 0x84}, EndHeaders: true})
	_ = fr.WriteData(1, true, []byte("payload"))
	chunk := in.Bytes()
	s := newH2Stream(&fuzzRefuser{})
	if err := s.fromClient([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if err := s.fromClient(chunk); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("client chunk: %v allocations", n)
	}
	var g h2Gate
	if n := testing.AllocsPerRun(100, func() { _, _ = g.writeChunk(io.Discard, chunk) }); n != 0 {
		t.Fatalf("server chunk: %v allocations", n)
	}
}
