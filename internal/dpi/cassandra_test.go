package dpi

import (
	"encoding/binary"
	"testing"
)

func cqlTestFrame(version, op byte, body []byte) []byte {
	b := []byte{version, 0, 0, 1, op, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[5:], uint32(len(body)))
	return append(b, body...)
}

func cqlTestLong(s string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(s)))
	return append(b, s...)
}

func TestCassandraCapture(t *testing.T) {
	for _, rel := range []string{"cassandra/cassandra-9042.pcap", "cassandra/cassandra-19042.pcap"} {
		got := bbCheckCapture(t, Cassandra{}, rel, Yes)
		bbWant(t, got,
			"client request command=OPTIONS",
			"client request command=STARTUP version=4 cql_version=3.0.0 software=mg-cql-driver",
			"server response command=READY",
			"client request command=QUERY verb=USE query=USE shop database=shop",
			"server response command=RESULT kind=set_keyspace database=shop",
			"client request command=QUERY verb=SELECT query=SELECT id, total FROM orders WHERE id = 42",
			"client request command=QUERY verb=INSERT query=INSERT INTO orders (id, total) VALUES (43, 9.5)")
	}
}

func TestCassandraDetect(t *testing.T) {
	for _, c := range []struct {
		name   string
		client []byte
		want   Verdict
	}{
		{"options v4", cqlTestFrame(4, cqlOptions, nil), Yes},
		{"options v5", cqlTestFrame(5, cqlOptions, nil), Yes},
		{"short", []byte{4, 0, 0}, NeedMore},
		{"v2 unsupported", cqlTestFrame(2, cqlOptions, nil), No},
		{"response bit from client", cqlTestFrame(0x84, cqlOptions, nil), No},
		{"server opcode from client", cqlTestFrame(4, cqlReady, nil), No},
		{"huge length", append([]byte{4, 0, 0, 1, cqlQuery, 0x7f, 0xff, 0xff, 0xff}, cqlTestLong("SELECT 1")...), No},
		{"mid-stream query", cqlTestFrame(4, cqlQuery, append(cqlTestLong("SELECT 1"), 0, 1, 0)), Maybe},
		{"http", []byte("GET / HTTP/1.1\r\n\r\n"), No},
	} {
		if v := (Cassandra{}).Detect(&Probe{Transport: TCP, Client: c.client}); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}
}

func TestCassandraParser(t *testing.T) {
	t.Run("query text is capped and USE keyspace quoted", func(t *testing.T) {
		long := "select * from t where x = '" + string(make([]byte, 4000)) + "'"
		f := bbFlow{TCP, []bbSeg{
			{ClientToServer, cqlTestFrame(4, cqlQuery, cqlTestLong(`  use "Shop";`))},
			{ClientToServer, cqlTestFrame(4, cqlQuery, cqlTestLong(long))},
		}}
		got := bbFeed(t, Cassandra{}, f, 3)
		bbWant(t, got, "client request command=QUERY verb=USE query=  use \"Shop\"; database=Shop")
		if len(got) != 2 || len(got[1]) > 1200 {
			t.Errorf("long query not capped: %d messages, %d bytes", len(got), len(got[len(got)-1]))
		}
	})
	t.Run("auth response credentials are not read", func(t *testing.T) {
		f := bbFlow{TCP, []bbSeg{{ClientToServer, cqlTestFrame(4, cqlAuthResp,
			append([]byte{0, 0, 0, 14}, "\x00cassandra\x00pw"...))}}}
		got := bbFeed(t, Cassandra{}, f, 0)
		bbWant(t, got, "client request command=AUTH_RESPONSE")
		bbNoSecret(t, got, "pw")
	})
	t.Run("garbage stops the parser", func(t *testing.T) {
		if err := (Cassandra{}).NewParser().Feed(ClientToServer, []byte("GET / HTTP/1.1\r\n\r\n"), func(*Message) {}); err == nil {
			t.Error("no error on garbage")
		}
	})
	t.Run("v5 segments after startup", func(t *testing.T) {
		startup := cqlTestFrame(5, cqlStartup, []byte{0, 1, 0, 11, 'C', 'Q', 'L', '_', 'V', 'E', 'R', 'S', 'I', 'O', 'N', 0, 5, '3', '.', '0', '.', '0'})
		q := cqlTestFrame(5, cqlQuery, append(cqlTestLong("SELECT now() FROM system.local"), 0, 1, 0))
		seg := []byte{byte(len(q)), byte(len(q) >> 8), byte(len(q)>>16)&1 | 2, 0, 0, 0}
		seg = append(append(seg, q...), 0, 0, 0, 0)
		f := bbFlow{TCP, []bbSeg{{ClientToServer, startup}, {ServerToClient, cqlTestFrame(0x85, cqlReady, nil)}, {ClientToServer, seg}}}
		got := bbFeed(t, Cassandra{}, f, 0)
		bbWant(t, got, "client request command=QUERY verb=SELECT query=SELECT now() FROM system.local")
	})
}

func FuzzCassandra(f *testing.F) {
	bbSeeds(f, "cassandra/cassandra-9042.pcap")
	f.Add(cqlTestFrame(5, cqlStartup, []byte{0, 0}))
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, Cassandra{}, data) })
}

func BenchmarkCassandra(b *testing.B) { bbBench(b, Cassandra{}, "cassandra/cassandra-9042.pcap") }
