package dpi

import (
	"fmt"
	"strings"
	"testing"
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
