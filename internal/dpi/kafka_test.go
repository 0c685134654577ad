package dpi

import (
	"encoding/binary"
	"testing"
)

func kafkaReq(key, ver int16, clientID string, body string) string {
	b := binary.BigEndian.AppendUint16(nil, uint16(key))
	b = binary.BigEndian.AppendUint16(b, uint16(ver))
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(len(clientID)))
	b = append(b, clientID...)
	b = append(b, body...)
	return string(binary.BigEndian.AppendUint32(nil, uint32(len(b)))) + string(b)
}

func TestKafkaParse(t *testing.T) {
	apiv := kafkaReq(18, 3, "rdkafka", "\x00\x0blibrdkafka\x062.0.2\x00")
	meta := kafkaReq(3, 4, "rdkafka", "\x00\x00\x00\x02\x00\x06orders\x00\x05users\x01")
	// Produce v3: null transactional id, acks, timeout, 1 topic with 1 partition of 3 record bytes.
	produce := kafkaReq(0, 3, "producer-1", "\xff\xff\x00\x01\x00\x00\x75\x30\x00\x00\x00\x01\x00\x06orders\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x03abc")
	// Metadata v12 (flexible): tags, compact array of 1 topic (uuid + compact name + tags).
	metaFlex := kafkaReq(3, 12, "adminclient-1", "\x00\x02"+string(make([]byte, 16))+"\x07events\x00\x00\x00\x00")
	checkDetect(t, Kafka{}, []detectCase{
		{"apiversions", apiv, "", Yes},
		{"produce waits for the response", produce, "", NeedMore},
		{"produce and its response", produce, "\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00", Maybe},
		{"produce, reply of another correlation id", produce, "\x00\x00\x00\x08\x00\x00\x00\x07\x00\x00\x00\x00", No},
		{"partial", apiv[:6], "", NeedMore},
		{"http", "GET / HTTP/1.1\r\n\r\n", "", No},
		{"postgres startup", pgStartup("user\x00bob\x00"), "", No},
	})
	checkConv(t, Kafka{}, []seg{c2s(apiv), s2c("\x00\x00\x00\x06\x00\x00\x00\x01\x00\x00"), c2s(meta + produce + metaFlex)}, []string{
		"client request command=ApiVersions version=3 client_id=rdkafka software=librdkafka software_version=2.0.2",
		"client request command=Metadata version=4 client_id=rdkafka topic=orders topic=users",
		"client request command=Produce version=3 client_id=producer-1 topic=orders",
		"client request command=Metadata version=12 client_id=adminclient-1 topic=events",
	})
}

func FuzzKafka(f *testing.F) {
	fuzzA(f, Kafka{}, []byte(kafkaReq(3, 4, "rdkafka", "\x00\x00\x00\x02\x00\x06orders\x00\x05users\x01")), []byte(kafkaReq(3, 12, "a", "\x00\x02"+string(make([]byte, 16))+"\x07events\x00\x00\x00\x00")))
}

func TestKafkaFetchTopics(t *testing.T) {
	part := "\x00\x00\x00\x00" + "\x00\x00\x00\x00\x00\x00\x00\x2a" + "\x00\x10\x00\x00"
	body := "\xff\xff\xff\xff\x00\x00\x01\xf4\x00\x00\x00\x01\x03\x20\x00\x00\x00" + // replica, wait, min, max, isolation
		"\x00\x00\x00\x02" + "\x00\x06orders\x00\x00\x00\x01" + part + "\x00\x05users\x00\x00\x00\x01" + part
	checkConv(t, Kafka{}, []seg{c2s(kafkaReq(1, 4, "consumer-1", body))}, []string{
		"client request command=Fetch version=4 client_id=consumer-1 topic=orders topic=users",
	})
}
