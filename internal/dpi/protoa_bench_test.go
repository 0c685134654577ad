package dpi

import "testing"

// BenchmarkBatchA measures detection plus parsing per protocol over the flows of its real
// captures: for every flow, Detect on the first bytes of each direction, a new parser, and
// every segment fed in capture order. MB/s counts payload bytes.
func BenchmarkBatchA(b *testing.B) {
	for _, p := range []Protocol{SSH{}, Redis{}, Postgres{}, MySQL{}, MongoDB{}, Kafka{}, AMQP{}, MQTT{}, SMTP{}, IMAP{}, POP3{}, FTP{}, Memcached{}} {
		flows := pcapFlows(b, p.Name())
		type prepared struct {
			segs  []seg
			probe Probe
		}
		var ready []prepared
		total := 0
		for _, fl := range flows {
			var dirs [2][]byte
			for _, s := range fl {
				dirs[s.dir] = append(dirs[s.dir], s.data...)
				total += len(s.data)
			}
			ready = append(ready, prepared{fl, Probe{Transport: TCP,
				Client: dirs[0][:min(len(dirs[0]), MaxProbe)], Server: dirs[1][:min(len(dirs[1]), MaxProbe)]}})
		}
		b.Run(p.Name(), func(b *testing.B) {
			if len(ready) == 0 {
				b.Skip("no captures")
			}
			emit := func(*Message) {}
			b.SetBytes(int64(total))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				for j := range ready {
					f := &ready[j]
					if p.Detect(&f.probe) == No {
						b.Fatalf("%s: capture flow not detected", p.Name())
					}
					ps := p.NewParser()
					for _, s := range f.segs {
						if err := ps.Feed(s.dir, s.data, emit); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
		})
	}
}

// BenchmarkBatchAParse measures steady-state parsing: one long flow of repeated requests and
// responses per protocol, fed in 1460-byte segments, so per-flow setup does not count.
func BenchmarkBatchAParse(b *testing.B) {
	cases := []struct {
		p         Protocol
		hello     []seg
		req, resp string
	}{
		{Redis{}, nil, "*3\r\n$3\r\nSET\r\n$6\r\nuser:1\r\n$5\r\nalice\r\n", "+OK\r\n"},
		{Postgres{}, []seg{c2s(pgStartup("user\x00bob\x00database\x00shop\x00"))}, pgMsg('Q', "SELECT * FROM users WHERE id = 42\x00"), pgMsg('C', "SELECT 1\x00") + pgMsg('Z', "I")},
		{MySQL{}, []seg{s2c(myPkt(0, myGreeting))}, myPkt(0, "\x03SELECT * FROM users WHERE id = 42"), myPkt(1, "\x00\x00\x00\x02\x00\x00\x00")},
		{Memcached{}, nil, "get user:1\r\n", "VALUE user:1 0 5\r\nalice\r\nEND\r\n"},
		{MQTT{}, []seg{c2s(mqttPkt(0x10, mqttStr("MQTT")+"\x04\x02\x00\x3c"+mqttStr("c1")))}, mqttPkt(0x30, mqttStr("sensors/temp")+"21.5"), ""},
		{SMTP{}, []seg{s2c("220 mx ESMTP Postfix\r\n")}, "RCPT TO:<alice@example.org>\r\n", "250 2.1.5 Ok\r\n"},
	}
	for _, c := range cases {
		var req, resp []byte
		for len(req) < 64<<10 {
			req = append(req, c.req...)
			resp = append(resp, c.resp...)
		}
		b.Run(c.p.Name(), func(b *testing.B) {
			emit := func(*Message) {}
			b.SetBytes(int64(len(req) + len(resp)))
			b.ReportAllocs()
			ps := c.p.NewParser()
			for _, s := range c.hello {
				ps.Feed(s.dir, s.data, emit)
			}
			for i := 0; i < b.N; i++ {
				for off := 0; off < len(req); off += 1460 {
					if err := ps.Feed(ClientToServer, req[off:min(off+1460, len(req))], emit); err != nil {
						b.Fatal(err)
					}
				}
				for off := 0; off < len(resp); off += 1460 {
					if err := ps.Feed(ServerToClient, resp[off:min(off+1460, len(resp))], emit); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
