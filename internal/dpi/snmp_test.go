package dpi

import "testing"

func TestSNMPCapture(t *testing.T) {
	got := bbCheckCapture(t, SNMP{}, "snmp/snmp-161.pcap", Yes)
	bbWant(t, got,
		"client pdu version=2c command=get request_id=1043523636 oid=1.3.6.1.2.1.1.1.0 oid=1.3.6.1.2.1.1.5.0",
		"server pdu version=2c command=response request_id=1043523636 oid=1.3.6.1.2.1.1.1.0 oid=1.3.6.1.2.1.1.5.0",
		"client pdu version=1 command=get request_id=215978860 oid=1.3.6.1.2.1.1.3.0")
	bbNoSecret(t, got, "mg-community")
	got = bbCheckCapture(t, SNMP{}, "snmp/snmp-11161.pcap", Yes)
	bbWant(t, got,
		"client pdu version=2c command=getnext request_id=438368064 oid=1.3.6.1.2.1.1",
		"client pdu version=3 security=noAuthNoPriv command=get request_id=1978280378",
		"server pdu version=3 security=noAuthNoPriv command=report request_id=1978280378 oid=1.3.6.1.6.3.15.1.1.4.0",
		"client pdu version=3 user=mguser security=authPriv command=encrypted")
	bbNoSecret(t, got, "mg-community")
}

func TestSNMPDetectAndParse(t *testing.T) {
	vb := func(oid []byte) []byte { return berTest(0x30, berTest(0x06, oid), []byte{0x05, 0}) }
	many := []byte{}
	for i := 0; i < 20; i++ {
		many = append(many, vb([]byte{0x2b, 6, 1, byte(i)})...)
	}
	set := berTest(0x30, berTest(0x02, []byte{1}), berTest(0x04, []byte("private-rw")),
		berTest(0xa3, berTest(0x02, []byte{0x7f}), berTest(0x02, []byte{0}), berTest(0x02, []byte{0}), berTest(0x30, many)))
	if v := (SNMP{}).Detect(&Probe{Transport: UDP, Client: set}); v != Yes {
		t.Errorf("set: %v", v)
	}
	got := bbFeed(t, SNMP{}, bbFlow{UDP, []bbSeg{{ClientToServer, set}}}, 0)
	if len(got) != 1 || len(got[0]) > 300 {
		t.Fatalf("got %q", got)
	}
	bbWant(t, got, "client pdu version=2c command=set request_id=127 oid=1.3.6.1.0 oid=1.3.6.1.1 oid=1.3.6.1.2 oid=1.3.6.1.3 oid=1.3.6.1.4 oid=1.3.6.1.5 oid=1.3.6.1.6 oid=1.3.6.1.7")
	bbNoSecret(t, got, "private-rw")
	for _, b := range [][]byte{
		berTest(0x30, berTest(0x02, []byte{2}), berTest(0x04, []byte("x")), berTest(0xa0, nil)), // version 2 does not exist
		berTest(0x30, berTest(0x02, []byte{1}), berTest(0x04, []byte("x")), berTest(0x30, nil)), // not a PDU
		[]byte("\x30\x84\xff\xff\xff\xff"),
	} {
		if v := (SNMP{}).Detect(&Probe{Transport: UDP, Client: b}); v != No {
			t.Errorf("%x: %v, want No", b, v)
		}
	}
}

func FuzzSNMP(f *testing.F) {
	bbSeeds(f, "snmp/snmp-161.pcap", "snmp/snmp-11161.pcap")
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, SNMP{}, data) })
}

func BenchmarkSNMP(b *testing.B) { bbBench(b, SNMP{}, "snmp/snmp-161.pcap", "snmp/snmp-11161.pcap") }
