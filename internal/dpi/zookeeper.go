package dpi

import (
	"bytes"
	"encoding/binary"
)

// ZooKeeper is the ZooKeeper client protocol: 4-byte length-prefixed jute records. The client
// opens with a ConnectRequest (protocol version 0, a 16-byte session password which is never
// read), then sends requests (xid, op code, path for the path-carrying ops); the server
// answers with reply headers (xid, zxid, error code). Reports op names and paths.
type ZooKeeper struct{}

func (ZooKeeper) Name() string          { return "zookeeper" }
func (ZooKeeper) Transports() Transport { return TCP }
func (ZooKeeper) Ports() []uint16       { return []uint16{2181} }
func (ZooKeeper) NewParser() Parser     { return &zkParser{} }

var zkOps = map[int32]string{
	0: "notification", 1: "create", 2: "delete", 3: "exists", 4: "getData", 5: "setData",
	6: "getACL", 7: "setACL", 8: "getChildren", 9: "sync", 11: "ping", 12: "getChildren2",
	13: "check", 14: "multi", 15: "create2", 16: "reconfig", 17: "checkWatches",
	18: "removeWatches", 19: "createContainer", 20: "deleteContainer", 21: "createTTL",
	22: "multiRead", 100: "auth", 101: "setWatches", 102: "sasl", 103: "getEphemerals",
	104: "getAllChildrenNumber", 105: "setWatches2", 106: "addWatch", 107: "whoAmI",
	-10: "createSession", -11: "closeSession", -1: "error",
}

// zkPathOp: ops whose request body starts with the znode path.
func zkPathOp(op int32) bool {
	switch op {
	case 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 15, 17, 18, 19, 20, 21, 103, 104, 106:
		return true
	}
	return false
}

var zkErrors = map[int32]string{
	0: "OK", -1: "SYSTEMERROR", -2: "RUNTIMEINCONSISTENCY", -3: "DATAINCONSISTENCY",
	-4: "CONNECTIONLOSS", -5: "MARSHALLINGERROR", -6: "UNIMPLEMENTED", -7: "OPERATIONTIMEOUT",
	-8: "BADARGUMENTS", -13: "NEWCONFIGNOQUORUM", -14: "RECONFIGINPROGRESS",
	-100: "APIERROR", -101: "NONODE", -102: "NOAUTH", -103: "BADVERSION",
	-108: "NOCHILDRENFOREPHEMERALS", -110: "NODEEXISTS", -111: "NOTEMPTY",
	-112: "SESSIONEXPIRED", -113: "INVALIDCALLBACK", -114: "INVALIDACL", -115: "AUTHFAILED",
	-118: "SESSIONMOVED", -119: "NOTREADONLY", -120: "EPHEMERALONLOCALSESSION",
	-121: "NOWATCHER", -122: "REQUESTTIMEOUT", -123: "RECONFIGDISABLED",
	-124: "SESSIONCLOSEDREQUIRESASLAUTH", -125: "QUOTAEXCEEDED", -127: "THROTTLEDOP",
}

// zkMaxRecord is jute.maxbuffer's default (1 MiB, plus slack).
const zkMaxRecord = 1<<20 + 1024

// zkIsConnect recognises a ConnectRequest record (after the length): protocol version 0,
// last zxid, timeout, session id, password of 16 bytes, optional read-only flag.
func zkIsConnect(rec []byte) bool {
	if len(rec) != 44 && len(rec) != 45 {
		return false
	}
	return binary.BigEndian.Uint32(rec) == 0 && binary.BigEndian.Uint32(rec[24:]) == 16
}

// zk4lw: the admin "four letter words" sent alone on a connection (ruok, srvr, mntr...).
func zk4lw(b []byte) bool {
	switch string(bytes.TrimRight(b, "\r\n")) {
	case "ruok", "stat", "srvr", "mntr", "conf", "cons", "crst", "srst", "dump", "envi",
		"reqs", "wchs", "wchc", "wchp", "dirs", "isro", "gtmk", "stmk":
		return true
	}
	return false
}

func (ZooKeeper) Detect(p *Probe) Verdict {
	c := p.Client
	if zk4lw(c) {
		return Maybe
	}
	if len(c) > 0 {
		if len(c) < 4 {
			if c[0] == 0 {
				return NeedMore
			}
			return No
		}
		n := binary.BigEndian.Uint32(c)
		if n == 44 || n == 45 {
			if len(c) < 4+int(n) {
				return NeedMore
			}
			if zkIsConnect(c[4 : 4+n]) {
				return Yes
			}
			return No
		}
		// Mid-stream request: xid, known op, and a path that starts with '/'.
		if n >= 8 && n < zkMaxRecord && len(c) >= 12 {
			op := int32(binary.BigEndian.Uint32(c[8:]))
			if zkPathOp(op) && len(c) >= 17 {
				pl := binary.BigEndian.Uint32(c[12:])
				if pl > 0 && pl < 4096 && c[16] == '/' && int(pl)+8 <= int(n) {
					// The reply echoing the xid, then a zxid and a small error code, settles
					// it (Kafka's header checks also pass on these bytes).
					if sv := p.Server; len(sv) >= 20 && string(sv[4:8]) == string(c[4:8]) {
						if e := int32(binary.BigEndian.Uint32(sv[16:])); e <= 0 && e >= -200 {
							return Yes
						}
					}
					return Maybe
				}
			}
		}
		return No
	}
	s := p.Server
	if len(s) >= 8 && binary.BigEndian.Uint32(s) == 36 || len(s) >= 8 && binary.BigEndian.Uint32(s) == 37 {
		if binary.BigEndian.Uint32(s[4:]) == 0 && len(s) >= 24 && binary.BigEndian.Uint32(s[20:]) == 16 {
			return Maybe
		}
	}
	return No
}

type zkParser struct {
	admin   bool // a four-letter-word admin connection
	r       [2]lenReasm
	started [2]bool
	msg     Message
	sc      scratch
}

func zkSize(b []byte) int {
	if len(b) < 4 {
		return 0
	}
	n := binary.BigEndian.Uint32(b)
	if n > zkMaxRecord {
		return -1
	}
	return 4 + int(n)
}

func (p *zkParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	d := dir & 1
	if !p.started[d] && len(p.r[d].buf) == 0 && zk4lw(data) {
		if dir == ClientToServer {
			p.msg.Reset(dir, "admin")
			p.msg.Add(AttrCommand, bytes.TrimRight(data, "\r\n"))
			emit(&p.msg)
		}
		p.started[d] = true
		p.admin = true
		return nil
	}
	if p.admin {
		return nil // the four-letter-word answer is free text
	}
	if !p.r[d].feed(data, zkSize, func(rec []byte, _ bool) { p.record(dir, rec[4:], emit) }) {
		return errNotThisProtocol("zookeeper")
	}
	return nil
}

func (p *zkParser) record(dir Direction, rec []byte, emit func(*Message)) {
	d := dir & 1
	first := !p.started[d]
	p.started[d] = true
	m := &p.msg
	p.sc.reset()
	if dir == ClientToServer {
		if first && zkIsConnect(rec) {
			m.Reset(dir, "connect")
			m.AddString(AttrCommand, "connect")
			m.Add("timeout_ms", p.sc.uint(uint64(binary.BigEndian.Uint32(rec[12:]))))
			if sid := rec[16:24]; binary.BigEndian.Uint64(sid) != 0 {
				m.Add("session", p.sc.hex(sid, 0))
			}
			emit(m)
			return
		}
		if len(rec) < 8 {
			return
		}
		op := int32(binary.BigEndian.Uint32(rec[4:]))
		name, ok := zkOps[op]
		if !ok {
			return
		}
		m.Reset(dir, "request")
		m.AddString(AttrCommand, name)
		if zkPathOp(op) && len(rec) >= 12 {
			pl := int32(binary.BigEndian.Uint32(rec[8:]))
			if pl > 0 {
				path := rec[12:]
				if int(pl) < len(path) {
					path = path[:pl]
				}
				m.Add(AttrName, capBytes(path, 1024))
			}
		}
		if op == 100 && len(rec) >= 20 { // auth: the scheme only, never the credentials
			sl := int32(binary.BigEndian.Uint32(rec[12:]))
			if sl > 0 && int(sl) <= len(rec)-16 {
				m.Add("scheme", capBytes(rec[16:16+sl], 64))
			}
		}
		emit(m)
		return
	}
	if first && (len(rec) == 36 || len(rec) == 37) && binary.BigEndian.Uint32(rec) == 0 &&
		binary.BigEndian.Uint32(rec[16:]) == 16 {
		m.Reset(dir, "connect")
		m.AddString(AttrCommand, "connect")
		m.Add("timeout_ms", p.sc.uint(uint64(binary.BigEndian.Uint32(rec[4:]))))
		m.Add("session", p.sc.hex(rec[8:16], 0))
		emit(m)
		return
	}
	if len(rec) < 16 {
		return
	}
	xid := int32(binary.BigEndian.Uint32(rec))
	errc := int32(binary.BigEndian.Uint32(rec[12:]))
	m.Reset(dir, "response")
	switch xid {
	case -1:
		m.Reset(dir, "watch")
		m.AddString(AttrCommand, "notification")
		if len(rec) >= 28 {
			pl := int32(binary.BigEndian.Uint32(rec[24:]))
			if pl > 0 {
				path := rec[28:]
				if int(pl) < len(path) {
					path = path[:pl]
				}
				m.Add(AttrName, capBytes(path, 1024))
			}
		}
	case -2:
		m.AddString(AttrCommand, "ping")
	}
	if s, ok := zkErrors[errc]; ok {
		m.AddString(AttrStatus, s)
	} else {
		m.Add(AttrStatus, p.sc.int(int64(errc)))
	}
	emit(m)
}
