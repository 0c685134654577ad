package events

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// freePort returns a loopback port free a moment ago (the receiver binds it right after).
func freePort(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return fmt.Sprint(c.LocalAddr().(*net.UDPAddr).Port)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// TestSyslogIntoRealRsyslog sends events over UDP and TCP (octet counting) to a real rsyslogd
// that parses the structured data (mmpstrucdata) and writes what it understood as JSON.
func TestSyslogIntoRealRsyslog(t *testing.T) {
	bin, err := exec.LookPath("rsyslogd")
	if err != nil {
		t.Skip("rsyslogd not installed (apt-get install rsyslog)")
	}
	dir := t.TempDir()
	udpPort, tcpPort := freePort(t, "udp"), freePort(t, "tcp")
	out := filepath.Join(dir, "out.json")
	conf := fmt.Sprintf(`global(workDirectory=%q)
module(load="imudp")
module(load="imtcp")
module(load="mmpstrucdata")
template(name="j" type="list") {
  constant(value="{\"pri\":\"") property(name="pri") constant(value="\",\"msgid\":\"") property(name="msgid" format="json")
  constant(value="\",\"app\":\"") property(name="app-name" format="json")
  constant(value="\",\"msg\":\"") property(name="msg" format="json")
  constant(value="\",\"sd\":") property(name="$!rfc5424-sd") constant(value="}\n")
}
ruleset(name="r") {
  action(type="mmpstrucdata")
  action(type="omfile" file=%q template="j")
}
input(type="imudp" address="127.0.0.1" port=%q ruleset="r")
input(type="imtcp" address="127.0.0.1" port=%q ruleset="r")
`, dir, out, udpPort, tcpPort)
	cf := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-n", "-f", cf, "-i", filepath.Join(dir, "pid"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	ctx := testCtx(t)
	send := func(network, port, name string) {
		s, err := NewSyslog(SyslogConfig{Network: network, Addr: "127.0.0.1:" + port, Hostname: "node-1"})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		e := threat(name)
		// rsyslogd may still be binding: resend until the line shows up (bounded by ctx).
		for {
			if err := s.Export(ctx, e); err != nil && network == "tcp" {
				s.Close()
			}
			if line := waitLine(ctx, out, name, 200*time.Millisecond); line != nil {
				checkRsyslog(t, line, name)
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("rsyslogd never logged %s over %s; stderr:\n%s", name, network, stderr.String())
			}
		}
	}
	send("udp", udpPort, "sqli-udp")
	send("tcp", tcpPort, "sqli-tcp")
}

// waitLine returns the first JSON line of file whose sd names name, polling for up to d.
func waitLine(ctx context.Context, file, name string, d time.Duration) map[string]any {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if f, err := os.Open(file); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				var m map[string]any
				if json.Unmarshal(sc.Bytes(), &m) == nil && strings.Contains(sc.Text(), `"`+name+`"`) {
					f.Close()
					return m
				}
			}
			f.Close()
		}
		time.Sleep(20 * time.Millisecond) // polling another process's output file
	}
	return nil
}

func checkRsyslog(t *testing.T, m map[string]any, name string) {
	t.Helper()
	sd, _ := m["sd"].(map[string]any)
	el, _ := sd[SDID].(map[string]any)
	if el == nil {
		t.Fatalf("rsyslog did not parse the %s element: %v", SDID, m)
	}
	want := map[string]string{"name": name, "kind": "threat", "severity": "high", "src": "shop/web-1",
		"reason": `payload "x" in ]query[`, "captureref": "20261125T030000Z-0123456789ab"}
	for k, v := range want {
		if el[k] != v {
			t.Fatalf("rsyslog parsed %s = %v, want %q (all: %v)", k, el[k], v, el)
		}
	}
	if m["pri"] != "131" || m["msgid"] != "threat" || m["app"] != "meshguard" {
		t.Fatalf("header fields %v", m)
	}
}
