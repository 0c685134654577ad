package dpi

import (
	"encoding/binary"
	"testing"
)

func amqpFrame(class, id uint16, args string) string {
	p := binary.BigEndian.AppendUint16(nil, class)
	p = binary.BigEndian.AppendUint16(p, id)
	p = append(p, args...)
	f := []byte{1, 0, 0}
	f = binary.BigEndian.AppendUint32(f, uint32(len(p)))
	return string(append(append(f, p...), 0xce))
}

func amqpShort(s string) string { return string(rune(len(s))) + s }

func amqpLong(s string) string { return string(binary.BigEndian.AppendUint32(nil, uint32(len(s)))) + s }

func TestAMQPParse(t *testing.T) {
	start := amqpFrame(10, 10, "\x00\x09"+amqpLong(amqpShort("product")+"S"+amqpLong("RabbitMQ")+amqpShort("capabilities")+"F"+amqpLong(amqpShort("x")+"t\x01")+amqpShort("version")+"S"+amqpLong("3.12.1"))+amqpLong("PLAIN AMQPLAIN")+amqpLong("en_US"))
	startOk := amqpFrame(10, 11, amqpLong(amqpShort("product")+"S"+amqpLong("pika"))+amqpShort("PLAIN")+amqpLong("\x00guest\x00s3cret")+amqpShort("en_US"))
	open := amqpFrame(10, 40, amqpShort("/prod")+"\x00\x00")
	declare := amqpFrame(50, 10, "\x00\x00"+amqpShort("tasks")+"\x02"+amqpLong(""))
	publish := amqpFrame(60, 40, "\x00\x00"+amqpShort("")+amqpShort("tasks")+"\x00")
	body := "\x03\x00\x01\x00\x00\x00\x05hello\xce"
	checkDetect(t, AMQP{}, []detectCase{
		{"header", "AMQP\x00\x00\x09\x01", "", Yes},
		{"partial", "AMQ", "", NeedMore},
		{"server start", "", start, Yes},
		{"http", "GET / HTTP/1.1\r\n", "", No},
	})
	checkConv(t, AMQP{}, []seg{c2s("AMQP\x00\x00\x09\x01"), s2c(start), c2s(startOk + open + declare + publish + body)}, []string{
		"client header version=0-9-1",
		"server method command=Connection.Start software=RabbitMQ version=3.12.1",
		"client method command=Connection.StartOk client=pika mechanism=PLAIN user=guest",
		"client method command=Connection.Open database=/prod",
		"client method command=Queue.Declare topic=tasks",
		"client method command=Basic.Publish topic=tasks exchange= routing_key=tasks",
	})
}

func FuzzAMQP(f *testing.F) {
	fuzzA(f, AMQP{}, []byte("AMQP\x00\x00\x09\x01"+amqpFrame(60, 40, "\x00\x00"+amqpShort("ex")+amqpShort("k")+"\x00")), []byte(amqpFrame(10, 10, "\x00\x09"+amqpLong(amqpShort("product")+"S"+amqpLong("RabbitMQ")))))
}
