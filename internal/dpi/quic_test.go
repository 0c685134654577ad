package dpi

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"
)

// RFC 9001 appendix A.1: keys for the client Initial of DCID 0x8394c8f03e515708.
func TestQUICInitialKeysRFC9001(t *testing.T) {
	dcid, _ := hex.DecodeString("8394c8f03e515708")
	aead, hp, iv, ok := quicClientKeys(quicV1, dcid)
	if !ok {
		t.Fatal("no keys")
	}
	if got := hex.EncodeToString(iv); got != "fa044b2f42a3fd3b46fb255c" {
		t.Errorf("iv %s", got)
	}
	// A.2: the header-protection mask for sample d1b1c98dd7689fb8ec11d242b123dc9b.
	sample, _ := hex.DecodeString("d1b1c98dd7689fb8ec11d242b123dc9b")
	var mask [16]byte
	hp.Encrypt(mask[:], sample)
	if got := hex.EncodeToString(mask[:5]); got != "437b9aec36" {
		t.Errorf("mask %s, want 437b9aec36", got)
	}
	if aead.NonceSize() != 12 || aead.Overhead() != 16 {
		t.Errorf("aead %d/%d", aead.NonceSize(), aead.Overhead())
	}
	key, _ := quicExpandLabel(mustHKDFClient(t, dcid), "quic key", 16)
	if got := hex.EncodeToString(key); got != "1f369613dd76d5467730efcbe3b1a22d" {
		t.Errorf("key %s", got)
	}
}

func mustHKDFClient(t *testing.T, dcid []byte) []byte {
	t.Helper()
	initial, err := hkdfExtractForTest(dcid)
	if err != nil {
		t.Fatal(err)
	}
	s, err := quicExpandLabel(initial, "client in", 32)
	if err != nil {
		t.Fatal(err)
	}
	// RFC 9001 A.1 client_initial_secret (the key, iv and hp values derive from it).
	if got := hex.EncodeToString(s); got[:16] != "c00cf151ca5be075" {
		t.Errorf("client_initial_secret %s", got)
	}
	return s
}

// quicTestHello builds a TLS ClientHello handshake message with SNI and ALPN.
func quicTestHello(sni string, alpn ...string) []byte {
	ext := func(typ uint16, body []byte) []byte {
		b := binary.BigEndian.AppendUint16(nil, typ)
		b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
		return append(b, body...)
	}
	name := append([]byte{0}, binary.BigEndian.AppendUint16(nil, uint16(len(sni)))...)
	name = append(name, sni...)
	sn := append(binary.BigEndian.AppendUint16(nil, uint16(len(name))), name...)
	var al []byte
	for _, a := range alpn {
		al = append(append(al, byte(len(a))), a...)
	}
	al = append(binary.BigEndian.AppendUint16(nil, uint16(len(al))), al...)
	exts := append(ext(0, sn), ext(16, al)...)
	exts = append(exts, ext(0xfe0d, make([]byte, 1200))...) // a large (ECH-sized) extension
	body := append([]byte{3, 3}, make([]byte, 32)...)
	body = append(body, 0, 0, 2, 0x13, 0x01, 1, 0)
	body = append(body, binary.BigEndian.AppendUint16(nil, uint16(len(exts)))...)
	body = append(body, exts...)
	return append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
}

func quicTestCrypto(off int, data []byte) []byte {
	b := []byte{0x06, 0x80 | byte(off>>24), byte(off >> 16), byte(off >> 8), byte(off)}
	return append(append(b, 0x40|byte(len(data)>>8), byte(len(data))), data...)
}

// quicTestSeal builds a protected client Initial packet padded to 1200 bytes.
func quicTestSeal(t *testing.T, version uint32, dcid []byte, pn byte, frames []byte) []byte {
	t.Helper()
	aead, hp, iv, ok := quicClientKeys(version, dcid)
	if !ok {
		t.Fatal("keys")
	}
	first := byte(0xc0)
	if version == quicV2 {
		first = 0xd0
	}
	hdr := append([]byte{first}, binary.BigEndian.AppendUint32(nil, version)...)
	hdr = append(append(append(hdr, byte(len(dcid))), dcid...), 0, 0) // no SCID, no token
	plainLen := 1200 - (len(hdr) + 2 + 1) - 16
	plain := append(frames, make([]byte, max(0, plainLen-len(frames)))...)
	n := 1 + len(plain) + 16
	hdr = append(hdr, 0x40|byte(n>>8), byte(n))
	pnOff := len(hdr)
	hdr = append(hdr, pn)
	nonce := append([]byte{}, iv...)
	nonce[11] ^= pn
	pkt := aead.Seal(append([]byte{}, hdr...), nonce, plain, hdr)
	var mask [16]byte
	hp.Encrypt(mask[:], pkt[pnOff+4:pnOff+20])
	pkt[0] ^= mask[0] & 0x0f
	pkt[pnOff] ^= mask[1]
	return pkt
}

func TestQUICCapture(t *testing.T) {
	for _, rel := range []string{"quic/quic-443.pcap", "quic/quic-14433.pcap"} {
		got := bbCheckCapture(t, QUIC{}, rel, Yes)
		bbWant(t, got, "client client_hello version=1 dcid_len=8 sni=quic.example.test alpn=h3")
	}
}

func TestQUICClientHelloAcrossPackets(t *testing.T) {
	dcid := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	hello := quicTestHello("api.example.com", "h3", "h3-29")
	cut := 700
	for _, version := range []uint32{quicV1, quicV2, 0xff00001d} {
		// Chrome-style: the second half first, then the first half, in separate datagrams.
		p2 := quicTestSeal(t, version, dcid, 0, append([]byte{0x01}, quicTestCrypto(cut, hello[cut:])...))
		p1 := quicTestSeal(t, version, dcid, 1, quicTestCrypto(0, hello[:cut]))
		if v := (QUIC{}).Detect(&Probe{Transport: UDP, Client: p2}); v != Yes {
			t.Errorf("%x: detect %v", version, v)
		}
		got := bbFeed(t, QUIC{}, bbFlow{UDP, []bbSeg{{ClientToServer, p2}, {ClientToServer, p1}}}, 0)
		if len(got) != 2 || !bytes.Contains([]byte(got[1]), []byte("client_hello")) ||
			!bytes.Contains([]byte(got[1]), []byte("sni=api.example.com alpn=h3 alpn=h3-29")) {
			t.Errorf("%x: %q", version, got)
		}
	}
	// A corrupted packet is reported without a hello, never trusted.
	bad := quicTestSeal(t, quicV1, dcid, 0, quicTestCrypto(0, hello[:cut]))
	bad[len(bad)-1] ^= 1
	got := bbFeed(t, QUIC{}, bbFlow{UDP, []bbSeg{{ClientToServer, bad}}}, 0)
	if len(got) != 1 || got[0] != "client initial version=1 dcid_len=10" {
		t.Errorf("corrupt: %q", got)
	}
}

func TestQUICDetect(t *testing.T) {
	dcid := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	full := quicTestSeal(t, quicV1, dcid, 0, nil)
	for _, c := range []struct {
		name string
		b    []byte
		want Verdict
	}{
		{"initial", full, Yes},
		{"unpadded", full[:600], No}, // the Length field then runs past the datagram
		{"unknown version", append(append([]byte{0xc0}, 0x0a, 0x1a, 0x2a, 0x3a), full[5:]...), No},
		{"short header", append([]byte{0x40}, full[1:]...), No},
		{"dns", []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, No},
	} {
		if v := (QUIC{}).Detect(&Probe{Transport: UDP, Client: c.b}); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}
}

func FuzzQUIC(f *testing.F) {
	bbSeeds(f, "quic/quic-443.pcap")
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, QUIC{}, data) })
}

func BenchmarkQUIC(b *testing.B) { bbBench(b, QUIC{}, "quic/quic-443.pcap") }

func hkdfExtractForTest(dcid []byte) ([]byte, error) {
	return hkdf.Extract(sha256.New, dcid, quicSaltV1[:])
}
