package dpi

import "strconv"

// SNMP is SNMP v1, v2c and v3 over UDP (BER). Reports the version, the PDU type, request id,
// error status and up to snmpMaxOIDs variable-binding OIDs; for v3 the USM user name and the
// security level (the PDU only when it is not encrypted). Community strings are shared
// secrets and are never recorded, not even whether they are "public".
type SNMP struct{}

func (SNMP) Name() string          { return "snmp" }
func (SNMP) Transports() Transport { return UDP }
func (SNMP) Ports() []uint16       { return []uint16{161, 162} }
func (SNMP) NewParser() Parser     { return &snmpParser{} }

const snmpMaxOIDs = 8

var snmpPDUs = [...]string{"get", "getnext", "response", "set", "trap", "getbulk", "inform",
	"trap2", "report"}

var snmpErrors = [...]string{"noError", "tooBig", "noSuchName", "badValue", "readOnly",
	"genErr", "noAccess", "wrongType", "wrongLength", "wrongEncoding", "wrongValue",
	"noCreation", "inconsistentValue", "resourceUnavailable", "commitFailed", "undoFailed",
	"authorizationError", "notWritable", "inconsistentName"}

// snmpParse walks a message; f is called with the pieces found. ok=false if it is not SNMP.
type snmpView struct {
	version  int64
	user     []byte
	level    string
	pdu      byte // 0 if none (encrypted v3)
	pduBody  []byte
	hasScope bool
}

func snmpDecode(b []byte) (v snmpView, ok bool) {
	t, msg, _, ok := berRead(b)
	if !ok || t != 0x30 {
		return v, false
	}
	t, ver, rest, ok := berRead(msg)
	if !ok || t != 0x02 {
		return v, false
	}
	if v.version, ok = berInt(ver); !ok {
		return v, false
	}
	switch v.version {
	case 0, 1:
		t, _, rest, ok = berRead(rest) // community: skipped, never kept
		if !ok || t != 0x04 {
			return v, false
		}
	case 3:
		t, global, r2, ok := berRead(rest)
		if !ok || t != 0x30 {
			return v, false
		}
		// msgGlobalData: msgID, msgMaxSize, msgFlags, msgSecurityModel
		_, _, g, _ := berRead(global)
		_, _, g, _ = berRead(g)
		if t, flags, _, ok := berRead(g); ok && t == 0x04 && len(flags) == 1 {
			switch flags[0] & 3 {
			case 0:
				v.level = "noAuthNoPriv"
			case 1:
				v.level = "authNoPriv"
			case 3:
				v.level = "authPriv"
			}
		}
		t, secParams, r3, ok := berRead(r2)
		if !ok || t != 0x04 {
			return v, false
		}
		// USM: SEQUENCE { engineID, boots, time, userName, authParams, privParams }
		if t, usm, _, ok := berRead(secParams); ok && t == 0x30 {
			_, _, u, _ := berRead(usm)
			_, _, u, _ = berRead(u)
			_, _, u, _ = berRead(u)
			if t, name, _, ok := berRead(u); ok && t == 0x04 {
				v.user = name
			}
		}
		t, scoped, _, ok := berRead(r3)
		if !ok {
			return v, false
		}
		if t == 0x04 { // encryptedPDU
			return v, true
		}
		if t != 0x30 {
			return v, false
		}
		v.hasScope = true
		_, _, s, _ := berRead(scoped) // contextEngineID
		_, _, rest, _ = berRead(s)    // contextName
	default:
		return v, false
	}
	t, pdu, _, ok := berRead(rest)
	if !ok || t < 0xa0 || t > 0xa8 {
		return v, false
	}
	v.pdu, v.pduBody = t, pdu
	return v, true
}

func (SNMP) Detect(p *Probe) Verdict {
	b := p.Client
	if len(b) == 0 {
		b = p.Server
	}
	if len(b) < 2 || b[0] != 0x30 {
		return No
	}
	v, ok := snmpDecode(b)
	if !ok {
		return No
	}
	if v.pdu == 0 && v.version != 3 {
		return No
	}
	return Yes
}

type snmpParser struct {
	msg Message
	sc  scratch
}

func (p *snmpParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	v, ok := snmpDecode(data)
	if !ok {
		return nil // a stray datagram: skip it
	}
	m := &p.msg
	p.sc.reset()
	m.Reset(dir, "pdu")
	switch v.version {
	case 0:
		m.AddString(AttrVersion, "1")
	case 1:
		m.AddString(AttrVersion, "2c")
	case 3:
		m.AddString(AttrVersion, "3")
	}
	if len(v.user) > 0 {
		m.Add(AttrUser, capBytes(v.user, 64))
	}
	if v.level != "" {
		m.AddString("security", v.level)
	}
	if v.pdu == 0 {
		m.AddString(AttrCommand, "encrypted")
		emit(m)
		return nil
	}
	m.AddString(AttrCommand, snmpPDUs[v.pdu-0xa0])
	body := v.pduBody
	if v.pdu == 0xa4 { // v1 Trap: enterprise OID, agent address, generic, specific, time, vbs
		t, ent, rest, ok := berRead(body)
		if ok && t == 0x06 {
			m.Add("enterprise", p.oid(ent))
		}
		for i := 0; i < 4 && ok; i++ {
			_, _, rest, ok = berRead(rest)
		}
		body = rest
	} else {
		t, id, rest, ok := berRead(body)
		if !ok || t != 0x02 {
			emit(m)
			return nil
		}
		if x, ok := berInt(id); ok {
			m.Add("request_id", p.sc.int(x))
		}
		_, es, rest, _ := berRead(rest)
		if x, ok := berInt(es); ok && v.pdu != 0xa5 && x != 0 {
			if x > 0 && int(x) < len(snmpErrors) {
				m.AddString(AttrStatus, snmpErrors[x])
			} else {
				m.Add(AttrStatus, p.sc.int(x))
			}
		}
		_, _, body, _ = berRead(rest)
	}
	if t, vbs, _, ok := berRead(body); ok && t == 0x30 {
		for i := 0; i < snmpMaxOIDs && len(vbs) > 0; i++ {
			t, vb, rest, ok := berRead(vbs)
			if !ok || t != 0x30 {
				break
			}
			if t, oid, _, ok := berRead(vb); ok && t == 0x06 {
				m.Add("oid", p.oid(oid))
			}
			vbs = rest
		}
	}
	emit(m)
	return nil
}

// oid formats a BER OBJECT IDENTIFIER as dotted decimal into the scratch buffer (capped).
func (p *snmpParser) oid(b []byte) []byte {
	start := len(p.sc.b)
	if len(b) > 64 {
		b = b[:64]
	}
	var x uint64
	first := true
	for _, c := range b {
		x = x<<7 | uint64(c&0x7f)
		if x > 1<<56 {
			break
		}
		if c&0x80 != 0 {
			continue
		}
		if first {
			a := x / 40
			if a > 2 {
				a = 2
			}
			p.sc.b = strconv.AppendUint(p.sc.b, a, 10)
			p.sc.b = append(p.sc.b, '.')
			p.sc.b = strconv.AppendUint(p.sc.b, x-a*40, 10)
			first = false
		} else {
			p.sc.b = append(p.sc.b, '.')
			p.sc.b = strconv.AppendUint(p.sc.b, x, 10)
		}
		x = 0
	}
	return p.sc.b[start:len(p.sc.b):len(p.sc.b)]
}
