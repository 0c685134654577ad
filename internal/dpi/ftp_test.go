package dpi

import "testing"

func TestFTPParse(t *testing.T) {
	checkConv(t, FTP{}, []seg{
		s2c("220-pyftpdlib 1.5.7 ready.\r\n220-second line\r\n220 end\r\n"),
		c2s("USER anonymous\r\n"),
		s2c("331 Username ok, send password.\r\n"),
		c2s("PASS hunter2\r\n"),
		s2c("230 Login successful.\r\n"),
		c2s("TYPE I\r\nEPSV\r\n"),
		s2c("200 Type set to: Binary.\r\n229 Entering extended passive mode (|||40000|).\r\n"),
		c2s("RETR /pub/file.txt\r\n"),
		s2c("150 File status okay.\r\n226 Transfer complete.\r\n211-Features supported:\r\n EPRT\r\n 200 not a reply\r\n211 End FEAT.\r\n"),
		c2s("AUTH TLS\r\n"),
		s2c("234 AUTH TLS successful.\r\n"),
		c2s("\x16\x03\x01\x00\x10QUIT\r\n"),
	}, []string{
		"server banner status=220 software=pyftpdlib 1.5.7 ready.",
		"client command command=USER user=anonymous",
		"server reply status=331",
		"client command command=PASS",
		"server reply status=230",
		"client command command=TYPE arg=I",
		"client command command=EPSV",
		"server reply status=200",
		"server reply status=229",
		"client command command=RETR path=/pub/file.txt",
		"server reply status=150",
		"server reply status=226",
		"server reply status=211",
		"client command command=AUTH mechanism=TLS",
		"server reply status=234",
	})
}

func FuzzFTP(f *testing.F) {
	fuzzA(f, FTP{}, []byte("220-pyftpdlib 1.5.7 ready.\r\n220 end\r\nUSER anonymous\r\nPASS x\r\n211-Features\r\n EPRT\r\n211 End\r\n"))
}
