package dpi

import (
	"encoding/binary"
	"testing"
)

// pgMsg builds a typed message (typ 0: untyped startup-phase message).
func pgMsg(typ byte, body string) string {
	var b []byte
	if typ != 0 {
		b = append(b, typ)
	}
	n := len(body) + 4
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	return string(append(b, body...))
}

func pgStartup(params string) string {
	return pgMsg(0, "\x00\x03\x00\x00"+params+"\x00")
}

func TestPostgresDetect(t *testing.T) {
	checkDetect(t, Postgres{}, []detectCase{
		{"ssl request", pgMsg(0, "\x04\xd2\x16\x2f"), "", Yes},
		{"startup", pgStartup("user\x00bob\x00database\x00db\x00"), "", Yes},
		{"partial", "\x00\x00", "", NeedMore},
		{"midstream query", pgMsg('Q', "select 1\x00"), "", Maybe},
		{"http", "GET / HTTP/1.1\r\n", "", No},
		{"tls", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "", No},
	})
}

func TestPostgresParse(t *testing.T) {
	checkConv(t, Postgres{}, []seg{
		c2s(pgMsg(0, "\x04\xd2\x16\x2f")),
		s2c("N"),
		c2s(pgStartup("user\x00alice\x00database\x00shop\x00application_name\x00psql\x00")),
		s2c(pgMsg('R', "\x00\x00\x00\x05salt") + pgMsg('R', "\x00\x00\x00\x00") + pgMsg('S', "server_version\x0015.14\x00") + pgMsg('Z', "I")),
		c2s(pgMsg('p', "md5secret\x00")),
		c2s(pgMsg('Q', "  /* hi */ select * from t where a='x'\x00")),
		s2c(pgMsg('C', "SELECT 1\x00") + pgMsg('E', "SERROR\x00VERROR\x00C42P01\x00Mrelation \"t\" does not exist\x00\x00")),
		c2s(pgMsg('P', "s1\x00INSERT INTO t VALUES ($1)\x00\x00\x00") + pgMsg('B', "\x00\x00") + pgMsg('X', "")),
	}, []string{
		"client ssl_request",
		"server ssl_response status=rejected",
		"client startup version=3.0 user=alice database=shop application=psql",
		"server auth method=md5",
		"server auth method=ok",
		"server parameter software=PostgreSQL version=15.14",
		"client query verb=SELECT query=  /* hi */ select * from t where a='x'",
		"server complete verb=SELECT",
		"server error severity=ERROR status=42P01 message=relation \"t\" does not exist",
		"client parse verb=INSERT query=INSERT INTO t VALUES ($1) statement=s1",
		"client terminate",
	})
}

func TestPostgresSSLAcceptedStops(t *testing.T) {
	got := runA(t, Postgres{}, []seg{c2s(pgMsg(0, "\x04\xd2\x16\x2f")), s2c("S"), c2s("\x16\x03\x01\x00\x05hello")}, 0)
	if len(got) != 2 || got[1] != "server ssl_response status=accepted" {
		t.Fatalf("got %q", got)
	}
}

func FuzzPostgres(f *testing.F) {
	fuzzA(f, Postgres{}, []byte(pgStartup("user\x00alice\x00database\x00shop\x00")), []byte(pgMsg('Q', "select 1\x00")+pgMsg('E', "SERROR\x00C42P01\x00\x00")))
}

func TestPostgresProtocol2Startup(t *testing.T) {
	fixed := make([]byte, 288)
	copy(fixed, "shop")
	copy(fixed[64:], "alice")
	start := pgMsg(0, "\x00\x02\x00\x00"+string(fixed))
	if v := (Postgres{}).Detect(&Probe{Transport: TCP, Client: []byte(start)}); v != Yes {
		t.Fatalf("v2 startup: %d", v)
	}
	checkConv(t, Postgres{}, []seg{c2s(start)}, []string{"client startup version=2.0 user=alice database=shop"})
}
