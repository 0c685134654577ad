package dpi

import "testing"

// TestUnlistedProtocolsStayUnknown: real captures carry protocols meshguard has no detector for.
// Their opening exchanges must come out unknown, not as a look-alike (NNTP's "200" greeting is
// not SMTP, SSDP's "M-SEARCH * HTTP/1.1" over UDP is not SIP, IRC's NICK/USER is not FTP/POP3).
func TestUnlistedProtocolsStayUnknown(t *testing.T) {
	e, err := New(Config{Protocols: DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name         string
		tr           Transport
		port         uint16
		serverFirst  bool
		client, serv string
	}{
		{"irc", TCP, 6667, false, "NICK bob\r\nUSER bob 0 * :Bob\r\n", ":irc.example.net NOTICE * :*** Looking up your hostname...\r\n"},
		{"nntp", TCP, 119, true, "CAPABILITIES\r\n", "200 news.example.com InterNetNews NNRP server INN 2.7 ready (posting ok)\r\n"},
		{"xmpp", TCP, 5222, false, "<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>", "<?xml version='1.0'?><stream:stream from='example.com' id='abc' version='1.0'>"},
		{"telnet", TCP, 23, true, "\xff\xfb\x18\xff\xfb\x20", "\xff\xfd\x18\xff\xfd\x20\xff\xfd\x23\xff\xfd\x27"},
		{"vnc", TCP, 5900, true, "RFB 003.008\n", "RFB 003.008\n"},
		{"rdp", TCP, 3389, false, "\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00", "\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x02\x00\x00\x00"},
		{"smb2", TCP, 445, false, "\x00\x00\x00\x45\xfeSMB\x40\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", ""},
		{"bittorrent", TCP, 6881, false, "\x13BitTorrent protocol\x00\x00\x00\x00\x00\x10\x00\x05" + "aaaaaaaaaaaaaaaaaaaa" + "-qB4450-bbbbbbbbbbbb", ""},
		{"ssdp", UDP, 1900, false, "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n", "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nST: upnp:rootdevice\r\nUSN: uuid:x::upnp:rootdevice\r\n\r\n"},
		{"tftp", UDP, 69, false, "\x00\x01pxelinux.0\x00octet\x00", "\x00\x03\x00\x01" + string(make([]byte, 512))},
		{"netbios-ns", UDP, 137, false, "\x81\x0a\x01\x10\x00\x01\x00\x00\x00\x00\x00\x00\x20CKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\x00\x00\x21\x00\x01", ""},
	}
	for _, c := range cases {
		for _, mid := range []bool{false, true} {
			f := e.NewFlow(FlowInfo{Transport: c.tr, ServerPort: c.port, Midstream: mid}, nil)
			if c.serverFirst {
				f.Feed(ServerToClient, []byte(c.serv))
				f.Feed(ClientToServer, []byte(c.client))
			} else {
				f.Feed(ClientToServer, []byte(c.client))
				if c.serv != "" {
					f.Feed(ServerToClient, []byte(c.serv))
				}
			}
			f.Close()
			if p := f.Protocol(); p != Unknown {
				t.Errorf("%s (mid-stream %v): named %s, want unknown", c.name, mid, p)
			}
		}
	}
}
