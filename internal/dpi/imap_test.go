package dpi

import "testing"

func TestIMAPParse(t *testing.T) {
	checkConv(t, IMAP{}, []seg{
		s2c("* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n"),
		c2s("a1 CAPABILITY\r\n"),
		s2c("* CAPABILITY IMAP4rev1\r\na1 OK done\r\n"),
		c2s("a2 LOGIN \"bob\" \"s3cret\"\r\n"),
		s2c("a2 OK Logged in\r\n"),
		c2s("a3 LOGIN {3}\r\nbob {6}\r\ns3cret\r\n"),
		s2c("a3 NO [AUTHENTICATIONFAILED] failed\r\n"),
		c2s("a4 select INBOX\r\na5 uid fetch 1:* (BODY[])\r\n"),
		s2c("* 1 EXISTS\r\na4 OK [READ-WRITE] done\r\n* 1 FETCH (UID 7 BODY[] {25}\r\na9 BAD not a reply\r\n x\r\n)\r\na5 OK Fetch completed\r\n"),
		c2s("a6 AUTHENTICATE PLAIN\r\nAGJvYgBzM2NyZXQ=\r\n"),
		s2c("+ \r\na6 OK\r\n"),
		c2s("a7 STARTTLS\r\n"),
		s2c("a7 OK Begin TLS\r\n"),
		c2s("\x16\x03\x01 a8 LOGOUT\r\n"),
	}, []string{
		"server banner status=OK software=[CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.",
		"client command command=CAPABILITY tag=a1",
		"server reply status=OK tag=a1",
		"client command command=LOGIN tag=a2 user=bob",
		"server reply status=OK tag=a2",
		"client command command=LOGIN tag=a3",
		"server reply status=NO tag=a3",
		"client command command=SELECT tag=a4 name=INBOX",
		"client command command=UID FETCH tag=a5",
		"server reply status=OK tag=a4",
		"server reply status=OK tag=a5",
		"client command command=AUTHENTICATE tag=a6 mechanism=PLAIN",
		"server reply status=OK tag=a6",
		"client command command=STARTTLS tag=a7",
		"server reply status=OK tag=a7",
	})
}

func FuzzIMAP(f *testing.F) {
	fuzzA(f, IMAP{}, []byte("* OK ready\r\na1 LOGIN {3}\r\nbob {6}\r\ns3cret\r\na2 uid fetch 1 BODY[]\r\n* 1 FETCH (BODY[] {5}\r\nhello)\r\n"))
}
