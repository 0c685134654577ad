package dpi

import (
	"encoding/binary"
	"testing"
)

// bsonTestDoc builds a document from pre-encoded elements.
func bsonTestDoc(elems ...string) string {
	body := ""
	for _, e := range elems {
		body += e
	}
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(body)+5))
	return string(b) + body + "\x00"
}

func bsonStr(k, v string) string {
	return "\x02" + k + "\x00" + string(binary.LittleEndian.AppendUint32(nil, uint32(len(v)+1))) + v + "\x00"
}

func mongoTestMsg(op uint32, respTo uint32, body string) string {
	b := binary.LittleEndian.AppendUint32(nil, uint32(16+len(body)))
	b = binary.LittleEndian.AppendUint32(b, 7)
	b = binary.LittleEndian.AppendUint32(b, respTo)
	b = binary.LittleEndian.AppendUint32(b, op)
	return string(b) + body
}

func TestMongoDBParse(t *testing.T) {
	find := mongoTestMsg(mongoOpMsg, 0, "\x00\x00\x00\x00\x00"+bsonTestDoc(bsonStr("find", "users"), "\x03filter\x00"+bsonTestDoc(bsonStr("name", "x")), bsonStr("$db", "shop")))
	hello := mongoTestMsg(mongoOpQuery, 0, "\x00\x00\x00\x00admin.$cmd\x00\x00\x00\x00\x00\xff\xff\xff\xff"+bsonTestDoc("\x10isMaster\x00\x01\x00\x00\x00"))
	okReply := mongoTestMsg(mongoOpMsg, 7, "\x00\x00\x00\x00\x00"+bsonTestDoc("\x01ok\x00\x00\x00\x00\x00\x00\x00\xf0\x3f"))
	errReply := mongoTestMsg(mongoOpMsg, 7, "\x00\x00\x00\x00\x00"+bsonTestDoc("\x01ok\x00\x00\x00\x00\x00\x00\x00\x00\x00", bsonStr("errmsg", "no"), bsonStr("codeName", "Unauthorized")))
	checkDetect(t, MongoDB{}, []detectCase{
		{"op_msg", find, "", Yes},
		{"op_query", hello, "", Yes},
		{"partial", find[:10], "", NeedMore},
		{"http", "GET / HTTP/1.1\r\n\r\n", "", No},
	})
	checkConv(t, MongoDB{}, []seg{c2s(hello), c2s(find), s2c(okReply + errReply)}, []string{
		"client command command=isMaster database=admin",
		"client command command=find collection=users database=shop",
		"server reply status=ok",
		"server reply status=error error=Unauthorized",
	})
}

func FuzzMongoDB(f *testing.F) {
	fuzzA(f, MongoDB{}, []byte(mongoTestMsg(mongoOpMsg, 0, "\x00\x00\x00\x00\x00"+bsonTestDoc(bsonStr("find", "users"), bsonStr("$db", "shop")))))
}

func TestMongoDBBadBodyTerminates(t *testing.T) {
	// A kind-0 section whose document length overruns the message must end parsing of the
	// message, not loop.
	msg := mongoTestMsg(mongoOpMsg, 0, "\x00\x00\x00\x00\x00\xff\x00\x00\x00\x01\x02")
	if got := runA(t, MongoDB{}, []seg{c2s(msg)}, 0); len(got) != 0 {
		t.Fatalf("got %q", got)
	}
}

func TestMongoDBLegacyOpcodes(t *testing.T) {
	insert := mongoTestMsg(mongoOpInsert, 0, "\x00\x00\x00\x00shop.users\x00"+bsonTestDoc(bsonStr("name", "x")))
	if v := (MongoDB{}).Detect(&Probe{Transport: TCP, Client: []byte(insert)}); v != Yes {
		t.Fatalf("OP_INSERT: %d", v)
	}
	checkConv(t, MongoDB{}, []seg{c2s(insert)}, []string{"client command command=insert collection=users database=shop"})
}
