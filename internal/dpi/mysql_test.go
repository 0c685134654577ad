package dpi

import "testing"

func myPkt(seq byte, body string) string {
	n := len(body)
	return string([]byte{byte(n), byte(n >> 8), byte(n >> 16), seq}) + body
}

const myGreeting = "\x0a5.5.5-10.11.19-MariaDB-0+deb12u1\x00\x08\x00\x00\x00abcdefgh\x00\xfe\xf7\x2d\x02\x00\xff\x81\x15\x00\x00\x00\x00\x00\x00\x1d\x00\x00\x00ijklmnopqrst\x00mysql_native_password\x00"

func TestMySQLDetect(t *testing.T) {
	checkDetect(t, MySQL{}, []detectCase{
		{"greeting", "", myPkt(0, myGreeting), Yes},
		{"partial", "", "\x5a\x00", NeedMore},
		{"ssh", "", "SSH-2.0-OpenSSH\r\n", No},
		{"client only", "\x05\x00\x00\x00\x03select", "", No},
	})
	p := &Probe{Transport: TCP, Client: []byte(myPkt(0, "\x03select 1")), Midstream: true}
	if v := (MySQL{}).Detect(p); v != Maybe {
		t.Errorf("midstream query: %d", v)
	}
}

func TestMySQLParse(t *testing.T) {
	caps := "\x0d\xa2\x3a\x00" // protocol41, secure conn, connect with db, plugin auth
	login := caps + "\x00\x00\x00\x01\x2d" + string(make([]byte, 23)) + "bob\x00\x14" + "01234567890123456789" + "shop\x00mysql_native_password\x00"
	checkConv(t, MySQL{}, []seg{
		s2c(myPkt(0, myGreeting)),
		c2s(myPkt(1, login)),
		s2c(myPkt(2, "\x00\x00\x00\x02\x00\x00\x00")),
		c2s(myPkt(0, "\x03SELECT @@version_comment LIMIT 1")),
		c2s(myPkt(0, "\x02other")),
		s2c(myPkt(1, "\xff\x19\x04#42000Unknown database 'other'")),
		c2s(myPkt(0, "\x0e") + myPkt(0, "\x01")),
	}, []string{
		"server greeting software=MariaDB version=10.11.19-MariaDB-0+deb12u1",
		"client login user=bob database=shop",
		"server auth status=ok",
		"client query verb=SELECT query=SELECT @@version_comment LIMIT 1",
		"client init_db database=other",
		"server error status=1049 sqlstate=42000 message=Unknown database 'other'",
		"client command command=PING",
		"client command command=QUIT",
	})
}

func FuzzMySQL(f *testing.F) {
	fuzzA(f, MySQL{}, []byte(myPkt(0, myGreeting)), []byte(myPkt(0, "\x03select 1")+myPkt(1, "\xff\x19\x04#42000x")))
}
