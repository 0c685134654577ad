package dpi

import (
	"encoding/binary"
	"testing"
)

func zkTestRec(parts ...[]byte) []byte {
	var body []byte
	for _, p := range parts {
		body = append(body, p...)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func zkTestI32(v int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }

func zkTestStr(s string) []byte { return append(zkTestI32(int32(len(s))), s...) }

func zkTestConnect() []byte {
	return zkTestRec(zkTestI32(0), make([]byte, 8), zkTestI32(30000), make([]byte, 8), zkTestStr("0123456789abcdef"), []byte{0})
}

func TestZooKeeperCapture(t *testing.T) {
	for _, rel := range []string{"zookeeper/zookeeper-2181.pcap", "zookeeper/zookeeper-12181.pcap"} {
		got := bbCheckCapture(t, ZooKeeper{}, rel, Yes)
		bbWant(t, got,
			"client connect command=connect timeout_ms=30000",
			"server connect command=connect timeout_ms=30000 session=000000001000abcd",
			"client request command=getData name=/app/config",
			"client request command=create name=/app/lock",
			"client request command=exists name=/app/missing",
			"server response status=NONODE",
			"client request command=closeSession")
	}
}

func TestZooKeeperDetect(t *testing.T) {
	kafkaLike := zkTestRec(zkTestI32(0), make([]byte, 8), zkTestI32(30000), make([]byte, 8), zkTestStr("0123456789abcde"), []byte{0})
	for _, c := range []struct {
		name   string
		client []byte
		want   Verdict
	}{
		{"connect", zkTestConnect(), Yes},
		{"connect, partial", zkTestConnect()[:20], NeedMore},
		{"password of 15 bytes", kafkaLike, No},
		{"mid-stream getData", zkTestRec(zkTestI32(7), zkTestI32(4), zkTestStr("/a/b"), []byte{0}), Maybe},
		{"four-letter word", []byte("ruok"), Maybe},
		{"text", []byte("rook"), No},
	} {
		if v := (ZooKeeper{}).Detect(&Probe{Transport: TCP, Client: c.client}); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}
}

func TestZooKeeperParser(t *testing.T) {
	f := bbFlow{TCP, []bbSeg{
		{ClientToServer, zkTestConnect()},
		{ClientToServer, zkTestRec(zkTestI32(1), zkTestI32(100), zkTestI32(0), zkTestStr("digest"), zkTestStr("user:secretpw"))},
		{ServerToClient, zkTestRec(zkTestI32(-1), make([]byte, 8), zkTestI32(0), zkTestI32(3), zkTestI32(3), zkTestStr("/watched"))},
		{ClientToServer, zkTestRec(zkTestI32(2), zkTestI32(999))}, // unknown op: skipped
		{ClientToServer, zkTestRec(zkTestI32(3), zkTestI32(8), zkTestStr("/kids"), []byte{0})},
	}}
	got := bbFeed(t, ZooKeeper{}, f, 1)
	bbWant(t, got,
		"client request command=auth scheme=digest",
		"server watch command=notification name=/watched status=OK",
		"client request command=getChildren name=/kids")
	bbNoSecret(t, got, "secretpw")
	if err := (ZooKeeper{}).NewParser().Feed(ClientToServer, []byte{0x7f, 0xff, 0xff, 0xff}, func(*Message) {}); err == nil {
		t.Error("absurd record length accepted")
	}
}

func TestZooKeeperFourLetterWord(t *testing.T) {
	f := bbFlow{TCP, []bbSeg{{ClientToServer, []byte("srvr")}, {ServerToClient, []byte("Zookeeper version: 3.8.4\nMode: standalone\n")}}}
	got := bbFeed(t, ZooKeeper{}, f, 0)
	if len(got) != 1 || got[0] != "client admin command=srvr" {
		t.Errorf("got %q", got)
	}
}

func FuzzZooKeeper(f *testing.F) {
	bbSeeds(f, "zookeeper/zookeeper-2181.pcap")
	f.Fuzz(func(t *testing.T, data []byte) { bbFuzz(t, ZooKeeper{}, data) })
}

func BenchmarkZooKeeper(b *testing.B) { bbBench(b, ZooKeeper{}, "zookeeper/zookeeper-2181.pcap") }
