package dpi

import "testing"

func TestPOP3Parse(t *testing.T) {
	checkConv(t, POP3{}, []seg{
		s2c("+OK Dovecot ready.\r\n"),
		c2s("CAPA\r\n"),
		s2c("+OK\r\nUSER\r\n+OK not a reply\r\n.\r\n"),
		c2s("USER bob\r\nPASS secret\r\n"),
		s2c("+OK\r\n+OK Logged in.\r\n"),
		c2s("RETR 1\r\n"),
		s2c("+OK 20 octets\r\nSubject: x\r\n-ERR inside\r\n..dot\r\n.\r\n"),
		c2s("DELE 1\r\n"),
		s2c("-ERR no such message\r\n"),
		c2s("AUTH PLAIN\r\nAGJvYgBzZWNyZXQ=\r\n"),
		s2c("+ \r\n+OK\r\n"),
		c2s("QUIT\r\n"),
	}, []string{
		"server banner status=+OK software=Dovecot ready.",
		"client command command=CAPA",
		"server reply status=+OK",
		"client command command=USER user=bob",
		"client command command=PASS",
		"server reply status=+OK",
		"server reply status=+OK",
		"client command command=RETR arg=1",
		"server reply status=+OK",
		"client command command=DELE arg=1",
		"server reply status=-ERR",
		"client command command=AUTH mechanism=PLAIN",
		"server reply status=+OK",
		"client command command=QUIT",
	})
}

func FuzzPOP3(f *testing.F) {
	fuzzA(f, POP3{}, []byte("+OK Dovecot ready.\r\nCAPA\r\n+OK\r\nUSER\r\n.\r\nRETR 1\r\n+OK\r\nx\r\n.\r\n"))
}
