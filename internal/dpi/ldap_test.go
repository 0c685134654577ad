package dpi

import "testing"

// berTest encodes one BER element (definite length, long form when needed).
func berTest(tag byte, parts ...[]byte) []byte {
	var c []byte
	for _, p := range parts {
		c = append(c, p...)
	}
	n := len(c)
	switch {
	case n < 0x80:
		return append([]byte{tag, byte(n)}, c...)
	case n < 0x100:
		return append([]byte{tag, 0x81, byte(n)}, c...)
	default:
		return append([]byte{tag, 0x82, byte(n >> 8), byte(n)}, c...)
	}
}

func ldapTestMsg(id byte, op []byte) []byte { return berTest(0x30, berTest(0x02, []byte{id}), op) }

func TestLDAPCapture(t *testing.T) {
	for _, rel := range []string{"ldap/ldapsearch-389.pcap", "ldap/ldapsearch-10389.pcap"} {
		got := bbCheckCapture(t, LDAP{}, rel, Yes)
		bbWant(t, got,
			"client request command=bindRequest version=3 name=cn=admin,dc=example,dc=org auth=simple",
			"server response command=bindResponse status=success",
			"client request command=searchRequest name=ou=people,dc=example,dc=org scope=sub",
			"server response command=searchResEntry name=ou=people,dc=example,dc=org",
			"server response command=searchResDone status=success",
			"client request command=unbindRequest")
		bbNoSecret(t, got, "mg-not-a-real-secret")
	}
}

func TestLDAPDetectAndParse(t *testing.T) {
	bind := ldapTestMsg(1, berTest(0x60, berTest(0x02, []byte{3}), berTest(0x04, []byte("uid=bob,ou=people")),
		berTest(0x80, []byte("s3cret"))))
	sasl := ldapTestMsg(2, berTest(0x60, berTest(0x02, []byte{3}), berTest(0x04, nil),
		berTest(0xa3, berTest(0x04, []byte("SCRAM-SHA-256")), berTest(0x04, []byte("n,,n=bob,r=nonce")))))
	del := ldapTestMsg(3, berTest(0x4a, []byte("cn=old,dc=x")))
	starttls := ldapTestMsg(4, berTest(0x77, berTest(0x80, []byte("1.3.6.1.4.1.1466.20037"))))
	cldap := ldapTestMsg(5, berTest(0x63, berTest(0x04, nil), berTest(0x0a, []byte{0}), berTest(0x0a, []byte{0}),
		berTest(0x02, []byte{0}), berTest(0x02, []byte{0}), berTest(0x01, []byte{0}), berTest(0x87, []byte("objectClass"))))
	for _, c := range []struct {
		name string
		b    []byte
		want Verdict
	}{
		{"bind", bind, Yes},
		{"partial", bind[:1], NeedMore},
		{"snmp", berTest(0x30, berTest(0x02, []byte{1}), berTest(0x04, []byte("public")), berTest(0xa0, nil)), No},
		{"not ber", []byte("hello world"), No},
	} {
		if v := (LDAP{}).Detect(&Probe{Transport: TCP, Client: c.b}); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}
	stream := append(append(append(append([]byte{}, bind...), sasl...), del...), starttls...)
	got := bbFeed(t, LDAP{}, bbFlow{TCP, []bbSeg{{ClientToServer, stream}}}, 1)
	bbWant(t, got,
		"client request command=bindRequest version=3 name=uid=bob,ou=people auth=simple",
		"client request command=bindRequest version=3 name= auth=sasl mechanism=SCRAM-SHA-256",
		"client request command=delRequest name=cn=old,dc=x",
		"client request command=extendedRequest oid=1.3.6.1.4.1.1466.20037 extended=StartTLS")
	bbNoSecret(t, got, "s3cret")
	bbNoSecret(t, got, "nonce")
	// CLDAP: one message per datagram.
	if v := (LDAP{}).Detect(&Probe{Transport: UDP, Client: cldap}); v != Yes {
		t.Errorf("cldap detect: %v", v)
	}
	got = bbFeed(t, LDAP{}, bbFlow{UDP, []bbSeg{{ClientToServer, cldap}}}, 0)
	bbWant(t, got, "client request command=searchRequest name= scope=base")
	// A message larger than MaxBuffer is reported from its head and skipped, not buffered.
	big := ldapTestMsg(6, berTest(0x64, berTest(0x04, []byte("cn=big")), berTest(0x30, make([]byte, MaxBuffer+100))))
	p := (LDAP{}).NewParser()
	var n int
	for i := 0; i < len(big); i += 1000 {
		_ = p.Feed(ServerToClient, big[i:min(i+1000, len(big))], func(m *Message) { n++ })
	}
	_ = p.Feed(ServerToClient, ldapTestMsg(6, berTest(0x65, berTest(0x0a, []byte{32}), berTest(0x04, nil), berTest(0x04, nil))),
		func(m *Message) { n++ })
	if n != 2 || len(p.(*ldapParser).r[1].buf) > MaxBuffer {
		t.Errorf("big message: %d messages, %d buffered", n, len(p.(*ldapParser).r[1].buf))
	}
}

func FuzzLDAP(f *testing.F) {
	bbSeeds(f, "ldap/ldapsearch-389.pcap")
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, LDAP{}, data) })
}

func BenchmarkLDAP(b *testing.B) { bbBench(b, LDAP{}, "ldap/ldapsearch-389.pcap") }
