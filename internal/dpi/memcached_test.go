package dpi

import (
	"encoding/binary"
	"testing"
)

func memcBin(magic, op byte, key, extras, value string, status uint16) string {
	h := make([]byte, 24)
	h[0], h[1] = magic, op
	binary.BigEndian.PutUint16(h[2:], uint16(len(key)))
	h[4] = byte(len(extras))
	binary.BigEndian.PutUint16(h[6:], status)
	binary.BigEndian.PutUint32(h[8:], uint32(len(key)+len(extras)+len(value)))
	return string(h) + extras + key + value
}

func TestMemcachedDetect(t *testing.T) {
	checkDetect(t, Memcached{}, []detectCase{
		{"set", "set k 0 0 5\r\nhello\r\n", "", Yes},
		{"get alone", "get k\r\n", "", Maybe},
		{"get answered", "get k\r\n", "END\r\n", Yes},
		{"redis answered", "get k\r\n", "$-1\r\n", No},
		{"binary", memcBin(0x80, 0, "k", "", "", 0), "", Yes},
		{"binary partial", "\x80\x00", "", NeedMore},
		{"http", "GET / HTTP/1.1\r\n", "", No},
	})
}

func TestMemcachedParse(t *testing.T) {
	checkConv(t, Memcached{}, []seg{
		c2s("set user:1 0 60 7\r\nget x\r\n\r\n"),
		s2c("STORED\r\n"),
		c2s("get user:1 user:2\r\n"),
		s2c("VALUE user:1 0 7\r\nSTORED\r\n\r\nEND\r\n"),
		c2s("delete user:1\r\nstats slabs\r\nversion\r\n"),
		s2c("DELETED\r\nSTAT active_slabs 0\r\nEND\r\nVERSION 1.6.18\r\n"),
	}, []string{
		"client command command=SET key=user:1 keys=1",
		"server reply status=STORED",
		"client command command=GET key=user:1 keys=2",
		"client command command=DELETE key=user:1 keys=1",
		"client command command=STATS arg=slabs",
		"client command command=VERSION",
		"server reply status=DELETED",
		"server reply software=memcached version=1.6.18",
	})
	checkConv(t, Memcached{}, []seg{
		c2s(memcBin(0x80, 0x21, "PLAIN", "", "\x00u\x00secret", 0)),
		s2c(memcBin(0x81, 0x21, "", "", "", 0x20)),
		c2s(memcBin(0x80, 0x01, "k1", "\x00\x00\x00\x00\x00\x00\x00\x00", "value", 0)),
		s2c(memcBin(0x81, 0x01, "", "", "", 0)),
	}, []string{
		"client command command=SASL_AUTH",
		"server reply command=SASL_AUTH status=AUTH_ERROR",
		"client command command=SET key=k1",
		"server reply command=SET status=NO_ERROR",
	})
}

func FuzzMemcached(f *testing.F) {
	fuzzA(f, Memcached{}, []byte("set user:1 0 60 7\r\nget x\r\n\r\nget a b\r\n"), []byte("VALUE user:1 0 7\r\nSTORED\r\n\r\nEND\r\n"), []byte(memcBin(0x80, 0x01, "k1", "\x00\x00\x00\x00\x00\x00\x00\x00", "value", 0)))
}
