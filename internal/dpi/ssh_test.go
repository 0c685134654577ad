package dpi

import "testing"

func TestSSHDetect(t *testing.T) {
	checkDetect(t, SSH{}, []detectCase{
		{"client banner", "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", "", Yes},
		{"server banner", "", "SSH-2.0-OpenSSH_9.2p1\r\n", Yes},
		{"partial", "SS", "", NeedMore},
		{"http", "GET / HTTP/1.1\r\n", "", No},
		{"pre-banner lines", "", "hello there\r\nSSH-2.0-x\r\n", Maybe},
		{"not a version", "SSH-x.0-foo\r\n", "", No},
	})
}

func TestSSHParse(t *testing.T) {
	checkConv(t, SSH{}, []seg{
		s2c("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n\x00\x00\x04\x5c\x06\x14"),
		c2s("SSH-2.0-Go\r\n\x00\x00\x01\x00junk\n\n\n"),
		c2s("SSH-2.0-again\r\n"),
	}, []string{
		"server banner version=2.0 software=OpenSSH_9.2p1 comment=Debian-2+deb12u3",
		"client banner version=2.0 software=Go",
	})
}

func FuzzSSH(f *testing.F) {
	fuzzA(f, SSH{}, []byte("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n\x00\x00\x04\x5c\x06\x14"), []byte("x\r\nSSH-1.99-a b c\n"))
}
