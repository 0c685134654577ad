package dpi

import (
	"strings"
	"testing"
)

func TestTextMailDetect(t *testing.T) {
	cases := []struct {
		name, client, server string
		want                 [4]Verdict // smtp, ftp, pop3, imap
	}{
		{"postfix banner", "", "220 mx.example.com ESMTP Postfix (Debian/GNU)\r\n", [4]Verdict{Yes, No, No, No}},
		{"vsftpd banner", "", "220 (vsFTPd 3.0.3)\r\n", [4]Verdict{No, Yes, No, No}},
		{"bare 220 waits", "", "220 host ready\r\n", [4]Verdict{Maybe, NeedMore, No, No}},
		{"bare 220 + EHLO", "EHLO me\r\n", "220 host ready\r\n", [4]Verdict{Yes, No, No, No}},
		{"bare 220 + USER", "USER bob\r\n", "220 host ready\r\n", [4]Verdict{No, Yes, No, No}},
		{"multi-line ftp", "", "220-Welcome\r\n220-to pyftpdlib\r\n220 ok\r\n", [4]Verdict{No, Yes, No, No}},
		{"pop3 greeting", "", "+OK Dovecot ready.\r\n", [4]Verdict{No, No, Yes, No}},
		{"redis ok", "*1\r\n$4\r\nPING\r\n", "+OK\r\n", [4]Verdict{}},
		{"imap greeting", "", "* OK [CAPABILITY IMAP4rev1] ready\r\n", [4]Verdict{No, No, No, Yes}},
		{"partial server", "", "+O", [4]Verdict{NeedMore, NeedMore, NeedMore, NeedMore}},
		{"client ehlo only", "EHLO x\r\n", "", [4]Verdict{Yes, No, No, No}},
		{"client imap only waits for the reply", "a001 LOGIN bob x\r\n", "", [4]Verdict{No, No, No, NeedMore}},
		{"mid-stream imap command and its tagged status", "a001 LOGIN bob x\r\n", "a001 OK LOGIN completed\r\n", [4]Verdict{No, No, No, Yes}},
		{"mid-stream imap-looking line, another tag answers", "a001 LIST x\r\n", "b7 OK fine\r\n", [4]Verdict{}},
		{"client USER only waits for the reply", "USER bob\r\n", "", [4]Verdict{No, NeedMore, NeedMore, No}},
		{"USER then -ERR", "USER bob\r\n", "-ERR no such user\r\n", [4]Verdict{No, No, Maybe, No}},
		{"client CAPA only", "CAPA\r\n", "", [4]Verdict{No, No, Yes, No}},
		{"http", "GET / HTTP/1.1\r\n", "", [4]Verdict{}},
		{"http response", "GET / HTTP/1.1\r\n", "HTTP/1.1 200 OK\r\n", [4]Verdict{}},
		{"ssh", "", "SSH-2.0-x\r\n", [4]Verdict{}},
	}
	for _, c := range cases {
		// A client line alone is judged as a flow picked up mid-stream: seen from its start,
		// a client talking first is none of these greet-first protocols.
		mid := c.client != "" && c.server == ""
		got := textMailDetect(&Probe{Transport: TCP, Client: []byte(c.client), Server: []byte(c.server),
			Midstream: mid || strings.HasPrefix(c.name, "mid-stream")})
		if got != c.want {
			t.Errorf("%s: got %v want %v", c.name, got, c.want)
		}
		if mid {
			if got := textMailDetect(&Probe{Transport: TCP, Client: []byte(c.client)}); got != [4]Verdict{} {
				t.Errorf("%s from the flow's start: got %v, want all No", c.name, got)
			}
		}
	}
}

func TestSMTPParse(t *testing.T) {
	checkConv(t, SMTP{}, []seg{
		s2c("220-mx.example.com ESMTP\r\n220 mx.example.com ESMTP Postfix\r\n"),
		c2s("EHLO client.example\r\n"),
		s2c("250-mx.example.com\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n"),
		c2s("AUTH LOGIN\r\n"),
		s2c("334 VXNlcm5hbWU6\r\n"),
		c2s("Ym9i\r\n"),
		s2c("334 UGFzc3dvcmQ6\r\n"),
		c2s("c2VjcmV0\r\n"),
		s2c("235 2.7.0 Authentication successful\r\n"),
		c2s("MAIL FROM:<bob@example.com> SIZE=100\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"),
		s2c("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"),
		c2s("Subject: hi\r\n\r\nQUIT\r\n.\r\n"),
		s2c("250 2.0.0 Ok: queued\r\n"),
		c2s("STARTTLS\r\n"),
		s2c("220 2.0.0 Ready to start TLS\r\n"),
		c2s("\x16\x03\x01\x00\x10EHLO x\r\n"),
	}, []string{
		"server banner status=220 software=mx.example.com ESMTP Postfix",
		"client command command=EHLO host=client.example",
		"server reply status=250",
		"client command command=AUTH mechanism=LOGIN",
		"server reply status=334",
		"server reply status=334",
		"server reply status=235",
		"client command command=MAIL from=<bob@example.com>",
		"client command command=RCPT to=<alice@example.org>",
		"client command command=DATA",
		"server reply status=250",
		"server reply status=250",
		"server reply status=354",
		"client data bytes=21",
		"server reply status=250",
		"client command command=STARTTLS",
		"server reply status=220",
	})
}

func TestSMTPDataRefused(t *testing.T) {
	got := runA(t, SMTP{}, []seg{
		s2c("220 mx ESMTP\r\n"), c2s("MAIL FROM:<a@b>\r\nDATA\r\n"), s2c("250 ok\r\n554 no valid recipients\r\n"), c2s("QUIT\r\n"),
	}, 0)
	if got[len(got)-1] != "client command command=QUIT" {
		t.Fatalf("got %q", got)
	}
}

func FuzzSMTP(f *testing.F) {
	fuzzA(f, SMTP{}, []byte("220 mx ESMTP\r\nEHLO x\r\nAUTH PLAIN AGJvYgBzZWNyZXQ=\r\nDATA\r\n354 go\r\n.\r\nBDAT 5 LAST\r\nhello"))
}

func TestTextMidstream(t *testing.T) {
	p := SMTP{}.NewParser()
	p.(interface{ Midstream() }).Midstream()
	var got []string
	p.Feed(ServerToClient, []byte("250 2.1.0 Ok\r\n"), func(m *Message) { got = append(got, m.Type) })
	if len(got) != 1 || got[0] != "reply" {
		t.Fatalf("got %q", got)
	}
	for _, pr := range []Protocol{FTP{}, POP3{}, IMAP{}, MySQL{}} {
		if _, ok := pr.NewParser().(interface{ Midstream() }); !ok {
			t.Errorf("%s parser does not handle mid-stream starts", pr.Name())
		}
	}
}

func TestBare220DecidedByClient(t *testing.T) {
	e, err := New(Config{Protocols: DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ client, want string }{
		{"USER bob\r\n", "ftp"},
		{"EHLO me\r\n", "smtp"},
		{"", "smtp"}, // no command before the flow ends: the common case wins
	} {
		f := e.NewFlow(FlowInfo{Transport: TCP, ServerPort: 2000}, nil)
		f.Feed(ServerToClient, []byte("220 host ready\r\n"))
		if f.Detected() {
			t.Fatalf("decided %q before the client spoke", f.Protocol())
		}
		if c.client != "" {
			f.Feed(ClientToServer, []byte(c.client))
		}
		f.Close()
		if got := f.Protocol(); got != c.want {
			t.Errorf("client %q: got %s want %s", c.client, got, c.want)
		}
	}
}

func TestSMTPBDATSkipsChunks(t *testing.T) {
	// The chunk after BDAT is skipped by length: a line in it that looks like a command is not one.
	checkConv(t, SMTP{}, []seg{
		s2c("220 mx ESMTP\r\n"),
		c2s("BDAT 12 LAST\r\nQUIT\r\nxxxxxxRSET\r\n"),
		s2c("250 ok\r\n250 reset\r\n"),
	}, []string{
		"server banner status=220 software=mx ESMTP",
		"client command command=BDAT",
		"client command command=RSET",
		"server reply status=250",
		"server reply status=250",
	})
}
