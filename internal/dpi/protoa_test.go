package dpi

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Shared helpers of the batch-A protocol tests (ssh, redis, postgres, mysql, mongodb, kafka,
// amqp, mqtt, smtp, imap, pop3, ftp, memcached).

// seg is one chunk of a conversation in arrival order.
type seg struct {
	dir  Direction
	data []byte
}

func c2s(s string) seg { return seg{ClientToServer, []byte(s)} }
func s2c(s string) seg { return seg{ServerToClient, []byte(s)} }

// runA feeds a conversation to a fresh parser, chunk bytes at a time (0: whole segments), and
// renders every message as "dir type k=v k=v".
func runA(t testing.TB, p Protocol, conv []seg, chunk int) []string {
	t.Helper()
	pr := p.NewParser()
	var out []string
	emit := func(m *Message) {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s", m.Dir, m.Type)
		for _, a := range m.Attrs() {
			fmt.Fprintf(&b, " %s=%s", a.Key, a.Value)
		}
		out = append(out, b.String())
	}
	for _, s := range conv {
		d := s.data
		if chunk <= 0 {
			if err := pr.Feed(s.dir, d, emit); err != nil {
				out = append(out, "error: "+err.Error())
				return out
			}
			continue
		}
		for len(d) > 0 {
			n := min(chunk, len(d))
			if err := pr.Feed(s.dir, d[:n], emit); err != nil {
				out = append(out, "error: "+err.Error())
				return out
			}
			d = d[n:]
		}
	}
	return out
}

// checkConv asserts the messages of conv, whole and byte by byte.
func checkConv(t *testing.T, p Protocol, conv []seg, want []string) {
	t.Helper()
	for _, chunk := range []int{0, 1, 7} {
		got := runA(t, p, conv, chunk)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s chunk=%d:\n got: %q\nwant: %q", p.Name(), chunk, got, want)
		}
	}
}

type detectCase struct {
	name           string
	client, server string
	want           Verdict
}

func checkDetect(t *testing.T, p Protocol, cases []detectCase) {
	t.Helper()
	for _, c := range cases {
		pr := &Probe{Transport: TCP, Client: []byte(c.client), Server: []byte(c.server)}
		if got := p.Detect(pr); got != c.want {
			t.Errorf("%s detect %s: got %d want %d (0 No, 1 NeedMore, 2 Maybe, 3 Yes)", p.Name(), c.name, got, c.want)
		}
	}
}

// fuzzA feeds arbitrary bytes split at arbitrary points into both directions and checks the
// parser neither panics nor emits out-of-contract messages.
func fuzzA(f *testing.F, p Protocol, seeds ...[]byte) {
	seeds = append(seeds, pcapSeeds(f, p.Name())...)
	for _, s := range seeds {
		f.Add(s, uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		pr := &Probe{Transport: TCP, Client: data, Server: data}
		p.Detect(pr)
		pr.Server = nil
		p.Detect(pr)
		pr.Client, pr.Server = nil, data
		p.Detect(pr)
		parser := p.NewParser()
		emit := func(m *Message) {
			if len(m.Attrs()) > 16 {
				t.Fatal("too many attrs")
			}
		}
		step := int(split%16) + 1
		for i := 0; i < len(data); i += step {
			d := Direction((i / step) % 2)
			if split&0x80 != 0 {
				d = ClientToServer
			}
			if err := parser.Feed(d, data[i:min(i+step, len(data))], emit); err != nil {
				return
			}
		}
		parser = p.NewParser()
		parser.Feed(ClientToServer, data, emit)
		parser.Feed(ServerToClient, data, emit)
	})
}

// pcapFlows returns the TCP flows of the real captures of proto
// (internal/inspect/testdata/<proto>/*.pcap, made by scripts/captures/batch-a.sh): each flow's
// payload segments in capture order. Servers listen on the lower port in these captures.
func pcapFlows(tb testing.TB, proto string) [][]seg {
	files, _ := filepath.Glob(filepath.Join("..", "inspect", "testdata", proto, "*.pcap"))
	var flows [][]seg
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			tb.Fatal(err)
		}
		r, err := pcapgo.NewReader(f)
		if err != nil {
			f.Close()
			tb.Fatal(err)
		}
		byPort := map[uint16]int{}
		for {
			data, _, err := r.ReadPacketData()
			if err != nil {
				break
			}
			pkt := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
			tcp, ok := pkt.TransportLayer().(*layers.TCP)
			if !ok || len(tcp.Payload) == 0 {
				continue
			}
			client, dir := uint16(tcp.SrcPort), ClientToServer
			if tcp.SrcPort < tcp.DstPort {
				client, dir = uint16(tcp.DstPort), ServerToClient
			}
			i, seen := byPort[client]
			if !seen {
				i = len(flows)
				byPort[client] = i
				flows = append(flows, nil)
			}
			flows[i] = append(flows[i], seg{dir, tcp.Payload})
		}
		f.Close()
	}
	return flows
}

// pcapSeeds returns each direction of each captured flow of proto as one fuzz seed, so
// fuzzing starts from what real clients and servers send.
func pcapSeeds(tb testing.TB, proto string) [][]byte {
	var seeds [][]byte
	for _, fl := range pcapFlows(tb, proto) {
		var dirs [2][]byte
		for _, s := range fl {
			dirs[s.dir] = append(dirs[s.dir], s.data...)
		}
		for _, d := range dirs {
			if len(d) > 0 {
				// The first MaxProbe bytes carry every message kind worth mutating; longer seeds
				// make the fuzzer spend its minute minimising (seen with SSH key exchanges).
				seeds = append(seeds, d[:min(len(d), MaxProbe)])
			}
		}
	}
	return seeds
}

func TestBatchACapturesSeedFuzzing(t *testing.T) {
	for _, p := range []Protocol{SSH{}, Redis{}, Postgres{}, MySQL{}, MongoDB{}, Kafka{}, AMQP{}, MQTT{}, SMTP{}, IMAP{}, POP3{}, FTP{}, Memcached{}} {
		if n := len(pcapSeeds(t, p.Name())); n < 4 {
			t.Errorf("%s: %d seed streams from captures, want at least 4 (two ports, two directions)", p.Name(), n)
		}
	}
}

// A client-first protocol must not keep the engine waiting once the server has answered.
func TestBatchANoWaitAfterServerAnswer(t *testing.T) {
	for _, c := range []struct {
		p      Protocol
		client string
	}{{Redis{}, "*"}, {Postgres{}, "\x00\x00"}, {MongoDB{}, "\x00\x00"}, {Kafka{}, "\x00\x00"}, {Memcached{}, "\x80\x00"}} {
		pr := &Probe{Transport: TCP, Client: []byte(c.client)}
		if v := c.p.Detect(pr); v != NeedMore {
			t.Errorf("%s: %d before the server answered, want NeedMore", c.p.Name(), v)
		}
		pr.Server = []byte("\x00\x01hello")
		if v := c.p.Detect(pr); v != No {
			t.Errorf("%s: %d after the server answered, want No", c.p.Name(), v)
		}
	}
}

// Flows seen from the middle: each protocol recognises its later messages.
func TestBatchAMidstreamDetect(t *testing.T) {
	caps := "\x0d\xa2\x3a\x00"
	login := myPkt(1, caps+"\x00\x00\x00\x01\x2d"+string(make([]byte, 23))+"bob\x00\x00")
	okReply := mongoTestMsg(mongoOpMsg, 7, "\x00\x00\x00\x00\x00"+bsonTestDoc("\x01ok\x00\x00\x00\x00\x00\x00\x00\xf0\x3f"))
	cases := []struct {
		p              Protocol
		client, server string
		want           Verdict
	}{
		{MySQL{}, login, "", Yes},
		{MongoDB{}, "", okReply, Maybe},
		{AMQP{}, amqpFrame(60, 40, "\x00\x00"+amqpShort("")+amqpShort("tasks")+"\x00") + "\x02\x00", "", Yes},
		{AMQP{}, "\x01\x00\x01\x00\x00\x00\x05hello", "", No},
		{MQTT{}, mqttPkt(0x30, mqttStr("sensors/temp")+"21.5") + "\xc0\x00", "", Maybe},
		{MQTT{}, "\x30\x05\x00\x03a\x00b", "", No},
		{IMAP{}, "", "* 3 EXISTS\r\n", Maybe},
		{IMAP{}, "", "* hello\r\n", No},
	}
	for i, c := range cases {
		pr := &Probe{Transport: TCP, Client: []byte(c.client), Server: []byte(c.server), Midstream: true}
		if got := c.p.Detect(pr); got != c.want {
			t.Errorf("case %d %s: got %d want %d", i, c.p.Name(), got, c.want)
		}
	}
	// Lowercase memcached-style inline commands wait for the reply before calling it Redis.
	if v := (Redis{}).Detect(&Probe{Transport: TCP, Client: []byte("get k\r\n")}); v != NeedMore {
		t.Errorf("redis on a bare \"get k\": %d, want NeedMore", v)
	}
}

// TestBatchAMidstreamCaptures replays the real captures with their first segments cut off,
// as when a capture or the sidecar starts in the middle of a connection: a flow is either
// recognised as its protocol or honestly unknown, never mistaken for another protocol.
func TestBatchAMidstreamCaptures(t *testing.T) {
	e, err := New(Config{Protocols: DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	// Protocols whose flows should still be recognised with the first segment missing.
	wantAfterOne := map[string]bool{"ssh": true, "redis": true, "postgres": true, "mysql": true,
		"mongodb": true, "amqp": true, "smtp": true, "imap": true, "pop3": true, "ftp": true, "memcached": true}
	for _, p := range []Protocol{SSH{}, Redis{}, Postgres{}, MySQL{}, MongoDB{}, Kafka{}, AMQP{}, MQTT{}, SMTP{}, IMAP{}, POP3{}, FTP{}, Memcached{}} {
		for skip := 1; skip <= 4; skip++ {
			found := 0
			for _, fl := range pcapFlows(t, p.Name()) {
				if skip >= len(fl) {
					continue
				}
				f := e.NewFlow(FlowInfo{Transport: TCP, ServerPort: 9, Midstream: true}, nil)
				for _, s := range fl[skip:] {
					f.Feed(s.dir, s.data)
				}
				f.Close()
				switch got := f.Protocol(); got {
				case p.Name():
					found++
				case Unknown:
				default:
					t.Errorf("%s flow without its first %d segments detected as %s", p.Name(), skip, got)
				}
			}
			if skip == 1 && wantAfterOne[p.Name()] && found == 0 {
				t.Errorf("%s: no flow recognised without its first segment", p.Name())
			}
		}
	}
}

// TestBatchANeverReportsSecrets feeds each protocol's ways of sending a password and checks
// that the secret never shows up in any attribute, whole or byte by byte.
func TestBatchANeverReportsSecrets(t *testing.T) {
	const pw = "S3CRETpw"
	convs := []struct {
		p    Protocol
		conv []seg
	}{
		{Redis{}, []seg{c2s("*2\r\n$4\r\nAUTH\r\n$8\r\n" + pw + "\r\n"), c2s("AUTH " + pw + "\r\n"), c2s("*3\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$8\r\n" + pw + "\r\n"), c2s("CONFIG SET requirepass " + pw + "\r\n")}},
		{Postgres{}, []seg{c2s(pgStartup("user\x00bob\x00")), c2s(pgMsg('p', pw+"\x00"))}},
		{MQTT{}, []seg{c2s(mqttPkt(0x10, mqttStr("MQTT")+"\x04\xc6\x00\x3c"+mqttStr("c1")+mqttStr("will/t")+mqttStr(pw)+mqttStr("alice")+mqttStr(pw)))}},
		{AMQP{}, []seg{c2s("AMQP\x00\x00\x09\x01"), c2s(amqpFrame(10, 11, amqpLong("")+amqpShort("PLAIN")+amqpLong("\x00guest\x00"+pw)+amqpShort("en_US")))}},
		{SMTP{}, []seg{s2c("220 mx ESMTP\r\n"), c2s("AUTH PLAIN AGJvYgBTM0NSRVRwdw==\r\nAUTH LOGIN\r\n"), s2c("235 ok\r\n334 VXNlcm5hbWU6\r\n"), c2s(pw + "\r\n")}},
		{FTP{}, []seg{s2c("220 FTP\r\n"), c2s("USER bob\r\nPASS " + pw + "\r\nACCT " + pw + "\r\n")}},
		{POP3{}, []seg{s2c("+OK ready\r\n"), c2s("USER bob\r\nPASS " + pw + "\r\nAPOP bob " + pw + "\r\nAUTH PLAIN\r\n" + pw + "\r\n")}},
		{IMAP{}, []seg{s2c("* OK ready\r\n"), c2s("a1 LOGIN bob " + pw + "\r\na2 LOGIN {3}\r\nbob {8}\r\n" + pw + "\r\na3 AUTHENTICATE PLAIN\r\n" + pw + "\r\na4 AUTHENTICATE PLAIN " + pw + "\r\n")}},
		{Memcached{}, []seg{c2s(memcBin(0x80, 0x21, "PLAIN", "", "\x00bob\x00"+pw, 0))}},
	}
	for _, c := range convs {
		for _, chunk := range []int{0, 1} {
			for _, line := range runA(t, c.p, c.conv, chunk) {
				if strings.Contains(line, pw) {
					t.Errorf("%s (chunk %d) reported a secret: %s", c.p.Name(), chunk, line)
				}
			}
		}
	}
}

// After a hole in reassembly the line-based parsers drop the cut line and carry on.
func TestBatchAGapResync(t *testing.T) {
	for _, c := range []struct {
		p        Protocol
		before   string
		after    string
		wantLast string
	}{
		{Redis{}, "*2\r\n$3\r\nGET\r\n$4\r\nke", "y2\r\n*1\r\n$4\r\nPING\r\n", "client command command=PING keys=0"},
		{SMTP{}, "MAIL FROM:<a@b", "c>\r\nRCPT TO:<x@y>\r\n", "client command command=RCPT to=<x@y>"},
		{FTP{}, "RETR /a/very/long", "/path\r\nQUIT\r\n", "client command command=QUIT"},
		{POP3{}, "RETR", " 1\r\nQUIT\r\n", "client command command=QUIT"},
		{IMAP{}, "a1 LOGIN {3}", "\r\na2 NOOP\r\n", "client command command=NOOP tag=a2"},
		{Memcached{}, "get user", ":1\r\ndelete k\r\n", "client command command=DELETE key=k keys=1"},
	} {
		ps := c.p.NewParser()
		var last string
		emit := func(m *Message) {
			var b strings.Builder
			fmt.Fprintf(&b, "%s %s", m.Dir, m.Type)
			for _, a := range m.Attrs() {
				fmt.Fprintf(&b, " %s=%s", a.Key, a.Value)
			}
			last = b.String()
		}
		ps.Feed(ClientToServer, []byte(c.before), emit)
		ps.(GapParser).Gap(ClientToServer)
		if err := ps.Feed(ClientToServer, []byte(c.after), emit); err != nil {
			t.Errorf("%s: %v", c.p.Name(), err)
		}
		if last != c.wantLast {
			t.Errorf("%s: last message %q, want %q", c.p.Name(), last, c.wantLast)
		}
	}
}
