package cli

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/capture"
)

const testCaptureID = "20261125T044107Z-0123456789ab"

// fakePCAP is a pcap header (magic, v2.4, snaplen, LINKTYPE_RAW) plus a marker; the CLI must
// copy it byte for byte.
var fakePCAP = append([]byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 101, 0, 0, 0}, "GET /?q=1' OR 1=1"...)

func captureRoutes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"POST /api/v1/workloads/shop/web-0/captures": replyJSON(201, capture.Info{ID: testCaptureID, Created: time.Now(),
			Workload: "shop/web-0", Connections: 2, Bytes: int64(len(fakePCAP))}),
		"POST /api/v1/workloads/shop/idle/captures": replyJSON(409, map[string]string{"error": "workload has no connected sidecar"}),
		"GET /api/v1/captures/" + testCaptureID + "/pcap": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/vnd.tcpdump.pcap")
			_, _ = w.Write(fakePCAP)
		},
		"GET /api/v1/captures/20261125T044107Z-ffffffffffff/pcap": replyJSON(404, map[string]string{"error": "capture 20261125T044107Z-ffffffffffff not found"}),
	}
}

func TestCaptureOnDemandWritesPCAP(t *testing.T) {
	f := newFakeAPI(t, captureRoutes())
	out := filepath.Join(t.TempDir(), "web.pcap")

	code, stdout, stderr := f.run("capture", "shop/web-0", "--duration", "2s", "-o", out)
	if code != 0 {
		t.Fatalf("code %d stderr %q", code, stderr)
	}
	if !strings.Contains(stderr, "capturing shop/web-0 for 2s...") {
		t.Errorf("progress line missing on stderr: %q", stderr)
	}
	if want := "wrote " + out + " (" + strconv.Itoa(len(fakePCAP)) + " bytes, capture " + testCaptureID + ")\n"; stdout != want {
		t.Errorf("stdout = %q, want %q", stdout, want)
	}
	calls := f.Calls()
	if len(calls) != 2 || calls[0].Method != "POST" || calls[0].Path != "/api/v1/workloads/shop/web-0/captures" ||
		calls[1].Method != "GET" || calls[1].Path != "/api/v1/captures/"+testCaptureID+"/pcap" {
		t.Fatalf("calls = %+v", calls)
	}
	jsonEqual(t, calls[0].Body, `{"duration":"2s"}`)
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, fakePCAP) {
		t.Fatalf("file content differs from the download (err %v)", err)
	}
	assertMode0600(t, out)

	// A second capture must not clobber the file, and must say so before capturing.
	f.reset()
	code, _, stderr = f.run("capture", "shop/web-0", "--duration", "2s", "-o", out)
	if code == 0 || !strings.Contains(stderr, "file exists; pass --force") {
		t.Errorf("existing file: code %d stderr %q", code, stderr)
	}
	if n := len(f.Calls()); n != 0 {
		t.Errorf("refusal must come before the capture; %d API calls made", n)
	}

	if err := os.WriteFile(out, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = f.run("capture", "shop/web-0", "--duration", "2s", "-o", out, "--force")
	if code != 0 {
		t.Fatalf("--force: code %d stderr %q", code, stderr)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, fakePCAP) {
		t.Errorf("--force did not replace the file")
	}
	assertMode0600(t, out) // replaced, not rewritten in place with the old mode
}

func TestCaptureToStdout(t *testing.T) {
	f := newFakeAPI(t, captureRoutes())
	code, stdout, stderr := f.run("capture", "shop/web-0", "--duration", "1s", "-o", "-")
	if code != 0 || stdout != string(fakePCAP) {
		t.Fatalf("code %d: stdout must be exactly the pcap (%d bytes), got %d bytes; stderr %q", code, len(fakePCAP), len(stdout), stderr)
	}
	if !strings.Contains(stderr, "capturing shop/web-0 for 1s...") {
		t.Errorf("stderr = %q", stderr)
	}
}

func TestCaptureErrors(t *testing.T) {
	f := newFakeAPI(t, captureRoutes())
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"capture", "web-0", "-o", filepath.Join(dir, "a")}, `NS/POD "web-0": want namespace/name, e.g. shop/web-0`},
		{[]string{"capture", "shop/web-0", "--duration", "10m", "-o", filepath.Join(dir, "b")}, "--duration 10m0s: want between 1s and 5m0s"},
		{[]string{"capture", "shop/web-0", "--duration", "500ms", "-o", filepath.Join(dir, "c")}, "--duration 500ms"},
		{[]string{"capture", "get", "../../etc/passwd", "-o", filepath.Join(dir, "d")}, `capture ID "../../etc/passwd": want the form`},
		{[]string{"capture", "list", "-o", "csv"}, `-o "csv"`},
	} {
		code, _, stderr := f.run(tc.args...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: code %d stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
	if n := len(f.Calls()); n != 0 {
		t.Errorf("bad arguments must not reach the API; %d calls", n)
	}

	// The API's refusals reach the user, and no file is left behind.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"capture", "shop/idle", "--duration", "1s", "-o", filepath.Join(dir, "idle.pcap")}, "workload has no connected sidecar"},
		{[]string{"capture", "get", "20261125T044107Z-ffffffffffff", "-o", filepath.Join(dir, "gone.pcap")}, "capture 20261125T044107Z-ffffffffffff not found"},
	} {
		code, _, stderr := f.run(tc.args...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: code %d stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
		if _, err := os.Stat(tc.args[len(tc.args)-1]); err == nil {
			t.Errorf("%v: a failed capture left a file", tc.args)
		}
	}
}

func TestCaptureGetAndList(t *testing.T) {
	routes := captureRoutes()
	routes["GET /api/v1/captures"] = replyJSON(200, []capture.Info{{ID: testCaptureID, Created: time.Now(), Workload: "shop/web-0",
		Reason: "threat sqli", Connections: 1, Bytes: 42}})
	f := newFakeAPI(t, routes)
	out := filepath.Join(t.TempDir(), "attack.pcap")
	code, stdout, stderr := f.run("capture", "get", testCaptureID, "-o", out)
	if code != 0 || !strings.HasPrefix(stdout, "wrote "+out) {
		t.Fatalf("code %d stdout %q stderr %q", code, stdout, stderr)
	}
	if c := f.only(t); c.Path != "/api/v1/captures/"+testCaptureID+"/pcap" {
		t.Errorf("path = %s", c.Path)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, fakePCAP) {
		t.Error("downloaded file differs")
	}
	assertMode0600(t, out)
	if code, _, stderr = f.run("capture", "get", testCaptureID, "-o", out); code == 0 || !strings.Contains(stderr, "--force") {
		t.Errorf("get must not overwrite without --force: code %d stderr %q", code, stderr)
	}

	code, stdout, _ = f.run("capture", "list")
	if code != 0 || !strings.Contains(stdout, testCaptureID) || !strings.Contains(stdout, "threat sqli") || !strings.HasPrefix(stdout, "ID") {
		t.Errorf("list: code %d out %q", code, stdout)
	}
}

func assertMode0600(t *testing.T, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o600 {
		t.Errorf("%s mode = %o, want 600 (a capture holds plaintext application data)", path, m)
	}
}

func TestCaptureRefusesPCAPToTerminal(t *testing.T) {
	tty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal to stand in for a terminal: %v", err)
	}
	defer tty.Close()
	f := newFakeAPI(t, captureRoutes())
	var errb bytes.Buffer
	code := Execute(context.Background(), []string{"--config", f.conf, "capture", "get", testCaptureID, "-o", "-"}, tty, &errb)
	if code == 0 || !strings.Contains(errb.String(), "stdout is a terminal") {
		t.Errorf("code %d stderr %q", code, errb.String())
	}
	if n := len(f.Calls()); n != 0 {
		t.Errorf("refused before downloading; %d calls", n)
	}
}
