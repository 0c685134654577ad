package dpi

import "testing"

func TestRedisDetect(t *testing.T) {
	checkDetect(t, Redis{}, []detectCase{
		{"resp array", "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "", Yes},
		{"resp partial", "*1", "", NeedMore},
		{"inline alone", "PING\r\n", "", NeedMore},
		{"inline answered", "PING\r\n", "+PONG\r\n", Yes},
		{"inline partial", "PIN", "", NeedMore},
		{"memcached get answered", "get foo\r\n", "END\r\n", No},
		{"http", "GET / HTTP/1.1\r\n", "", No},
		{"imap untagged", "", "* OK IMAP4rev1\r\n", No},
		{"binary", "\x16\x03\x01", "", No},
	})
}

func TestRedisParse(t *testing.T) {
	checkConv(t, Redis{}, []seg{
		c2s("*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n"),
		s2c("+OK\r\n"),
		c2s("*3\r\n$3\r\nset\r\n$5\r\nuser1\r\n$5\r\na\r\nb!\r\n*3\r\n$3\r\nDEL\r\n$1\r\na\r\n$1\r\nb\r\n"),
		s2c("+OK\r\n:2\r\n"),
		c2s("get user1\r\n"),
		s2c("$5\r\na\r\nb!\r\n-WRONGTYPE Operation against a key\r\n"),
		c2s("*1\r\n$7\r\nCOMMAND\r\n"),
		s2c("*2\r\n*2\r\n$3\r\nget\r\n:2\r\n%1\r\n+a\r\n*0\r\n"),
		c2s("*5\r\n$4\r\nMSET\r\n$1\r\nx\r\n$1\r\n1\r\n$1\r\ny\r\n$-1\r\n"),
	}, []string{
		"client command command=AUTH keys=0",
		"server reply status=ok",
		"client command command=SET keys=1 key=user1",
		"client command command=DEL keys=2 key=a",
		"server reply status=ok",
		"client command command=GET keys=1 key=user1",
		"server reply status=error error=WRONGTYPE",
		"client command command=COMMAND keys=0",
		"client command command=MSET keys=2 key=x",
	})
}

func TestRedisGarbage(t *testing.T) {
	got := runA(t, Redis{}, []seg{c2s("*2\r\n$3\r\nGET\r\nxx\r\n")}, 0)
	if len(got) != 1 || got[0] != "error: redis: malformed RESP" {
		t.Fatalf("got %q", got)
	}
	// A huge bulk is skipped, not buffered, and parsing continues after it.
	big := make([]byte, 3*MaxBuffer)
	conv := []seg{c2s("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$196608\r\n"), {ClientToServer, big}, c2s("\r\n*1\r\n$4\r\nPING\r\n")}
	got = runA(t, Redis{}, conv, 0)
	if len(got) != 2 || got[1] != "client command command=PING keys=0" {
		t.Fatalf("got %q", got)
	}
}

func FuzzRedis(f *testing.F) {
	fuzzA(f, Redis{}, []byte("*3\r\n$3\r\nset\r\n$5\r\nuser1\r\n$5\r\na\r\nb!\r\n"), []byte("+OK\r\n*2\r\n*2\r\n$3\r\nget\r\n:2\r\n%1\r\n+a\r\n*0\r\n"), []byte("get k\r\n"))
}

// A nested aggregate counts as one element of its parent: after a nested reply the parser must
// be back at the top level, so the next simple reply is seen as a reply of its own.
func TestRedisNestedReplyKeepsFraming(t *testing.T) {
	deep := ""
	for range 12 { // deeper than a COMMAND DOCS reply
		deep += "*1\r\n"
	}
	checkConv(t, Redis{}, []seg{
		c2s("*1\r\n$7\r\nCOMMAND\r\n"),
		s2c("*2\r\n*2\r\n$3\r\nget\r\n:2\r\n%1\r\n+a\r\n*0\r\n"),
		c2s("*1\r\n$4\r\nPING\r\n"),
		s2c("+PONG\r\n"),
		c2s("*1\r\n$4\r\nPING\r\n"),
		s2c(deep + ":1\r\n" + "+OK\r\n"),
	}, []string{
		"client command command=COMMAND keys=0",
		"client command command=PING keys=0",
		"server reply status=ok",
		"client command command=PING keys=0",
		"server reply status=ok",
	})
}
