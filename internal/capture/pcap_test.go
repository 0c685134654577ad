package capture

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// tshark runs the real tshark on a pcap with checksum validation on and returns its output.
func tshark(t *testing.T, file string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed (apt-get install tshark)")
	}
	full := append([]string{"-n", "-r", file, "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
		"-o", "udp.check_checksum:TRUE"}, args...)
	var stderr bytes.Buffer
	cmd := exec.Command("tshark", full...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %v: %v\n%s%s", full, err, out, stderr.Bytes())
	}
	return string(out)
}

func writeFile(t *testing.T, convs []Conversation) string {
	t.Helper()
	var b bytes.Buffer
	if err := WritePCAP(&b, convs); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "c.pcap")
	if err := os.WriteFile(f, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func httpConversation(t0 time.Time, bodyLen int) Conversation {
	req := "GET /search?q=%27%20OR%201%3D1-- HTTP/1.1\r\nHost: api\r\nUser-Agent: t\r\n\r\n"
	body := strings.Repeat("x", bodyLen)
	resp := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\nContent-Type: text/plain\r\n\r\n" + body
	return Conversation{
		Proto:  TCP,
		Client: netip.MustParseAddrPort("10.0.0.5:43210"),
		Server: netip.MustParseAddrPort("10.0.0.9:8080"),
		Segments: []Segment{
			{Time: t0, FromClient: true, Data: []byte(req)},
			{Time: t0.Add(time.Millisecond), FromClient: false, Data: []byte(resp)},
		},
		Closed: true,
	}
}

func TestPCAPOpensInTshark(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	f := writeFile(t, []Conversation{httpConversation(t0, 5000)})

	if got := strings.TrimSpace(tshark(t, f, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri")); got != "/search?q=%27%20OR%201%3D1--" {
		t.Fatalf("http.request.uri = %q", got)
	}
	// The 5000-byte body spans several MSS-sized segments that must reassemble.
	if got := strings.TrimSpace(tshark(t, f, "-Y", "http.response", "-T", "fields", "-e", "http.content_length")); got != "5000" {
		t.Fatalf("http response content length = %q", got)
	}
	follow := tshark(t, f, "-qz", "follow,tcp,ascii,0")
	for _, want := range []string{"Node 0: 10.0.0.5:43210", "Node 1: 10.0.0.9:8080", "GET /search?q=%27%20OR%201%3D1-- HTTP/1.1", "Content-Type: text/plain"} {
		if !strings.Contains(follow, want) {
			t.Fatalf("follow output lacks %q:\n%s", want, follow)
		}
	}
	if bad := tshark(t, f, "-Y", "_ws.expert.severity >= warning || _ws.malformed || tcp.analysis.flags"); strings.TrimSpace(bad) != "" {
		t.Fatalf("tshark reports problems:\n%s", bad)
	}
	if n := strings.Count(tshark(t, f, "-Y", "tcp.flags.syn==1"), "\n"); n != 2 {
		t.Fatalf("want SYN and SYN-ACK, got %d packets with SYN", n)
	}
	if n := strings.Count(tshark(t, f, "-Y", "tcp.flags.fin==1"), "\n"); n != 2 {
		t.Fatalf("want two FINs, got %d", n)
	}
	if n := strings.Count(tshark(t, f, "-Y", "tcp.len > 1460"), "\n"); n != 0 {
		t.Fatalf("%d segments exceed the MSS", n)
	}
}

func TestPCAPUDPDNSAndIPv6(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("aGVsbG8gd29ybGQ.t.example.com.", dns.TypeTXT)
	wire, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	r := new(dns.Msg)
	r.SetReply(q)
	r.Answer = append(r.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 0}, Txt: []string{"payload"}})
	rwire, err := r.Pack()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	v6 := httpConversation(t0, 10)
	v6.Client = netip.MustParseAddrPort("[fd00::5]:40000")
	v6.Server = netip.MustParseAddrPort("[fd00::9]:80")
	f := writeFile(t, []Conversation{{
		Proto: UDP, Client: netip.MustParseAddrPort("10.0.0.5:5353"), Server: netip.MustParseAddrPort("10.0.0.53:53"),
		Segments: []Segment{{Time: t0, FromClient: true, Data: wire}, {Time: t0.Add(time.Millisecond), Data: rwire}},
	}, v6})
	got := tshark(t, f, "-Y", "dns", "-T", "fields", "-e", "dns.qry.name", "-e", "dns.txt")
	if !strings.Contains(got, "aGVsbG8gd29ybGQ.t.example.com") || !strings.Contains(got, "payload") {
		t.Fatalf("dns fields:\n%s", got)
	}
	if got := strings.TrimSpace(tshark(t, f, "-Y", "http.request && ipv6", "-T", "fields", "-e", "ipv6.src")); got != "fd00::5" {
		t.Fatalf("ipv6 http request src = %q", got)
	}
	if bad := tshark(t, f, "-Y", "_ws.expert.severity >= warning || _ws.malformed"); strings.TrimSpace(bad) != "" {
		t.Fatalf("tshark reports problems:\n%s", bad)
	}
}
