package dpi

import "testing"

func mqttPkt(hdr byte, body string) string {
	n := len(body)
	var l []byte
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		l = append(l, c)
		if n == 0 {
			break
		}
	}
	return string(append([]byte{hdr}, l...)) + body
}

func mqttStr(s string) string { return string([]byte{byte(len(s) >> 8), byte(len(s))}) + s }

func TestMQTTParse(t *testing.T) {
	connect4 := mqttPkt(0x10, mqttStr("MQTT")+"\x04\xc2\x00\x3c"+mqttStr("sensor-1")+mqttStr("alice")+mqttStr("pw"))
	connect5 := mqttPkt(0x10, mqttStr("MQTT")+"\x05\x02\x00\x3c\x05\x11\x00\x00\x00\x0a"+mqttStr("c5"))
	pub := mqttPkt(0x33, mqttStr("home/temp")+"\x00\x01"+"21.5")
	sub5 := mqttPkt(0x82, "\x00\x01\x00"+mqttStr("a/#")+"\x01"+mqttStr("b/+")+"\x00")
	checkDetect(t, MQTT{}, []detectCase{
		{"connect", connect4, "", Yes},
		{"partial", connect4[:5], "", NeedMore},
		{"http", "GET / HTTP/1.1\r\n", "", No},
		{"other 0x10", "\x10\x05abcde", "", No},
	})
	checkConv(t, MQTT{}, []seg{c2s(connect4), s2c(mqttPkt(0x20, "\x00\x00")), c2s(pub + "\xe0\x00")}, []string{
		"client connect version=4 client_id=sensor-1 user=alice",
		"server connack status=0",
		"client publish topic=home/temp qos=1 retain=true",
		"client disconnect",
	})
	checkConv(t, MQTT{}, []seg{c2s(connect5), c2s(sub5)}, []string{
		"client connect version=5 client_id=c5",
		"client subscribe topic=a/# topic=b/+",
	})
}

func FuzzMQTT(f *testing.F) {
	fuzzA(f, MQTT{}, []byte(mqttPkt(0x10, mqttStr("MQTT")+"\x04\xc2\x00\x3c"+mqttStr("sensor-1")+mqttStr("alice")+mqttStr("pw"))), []byte(mqttPkt(0x82, "\x00\x01\x00"+mqttStr("a/#")+"\x01")))
}
