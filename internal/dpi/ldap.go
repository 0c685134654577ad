package dpi

// LDAP is LDAPv2/v3 over TCP and CLDAP over UDP: BER-encoded LDAPMessage envelopes. Reports
// the operation, the bind DN and mechanism (never the password or SASL credentials), the
// search base DN and scope, entry DNs, extended-operation OIDs (StartTLS...) and result codes.
type LDAP struct{}

func (LDAP) Name() string          { return "ldap" }
func (LDAP) Transports() Transport { return TCP | UDP }
func (LDAP) Ports() []uint16       { return []uint16{389, 636, 3268} }
func (LDAP) NewParser() Parser     { return &ldapParser{} }

// berHeader parses a BER identifier (single byte tags only) and definite length. hdr is the
// header size, n the content length; need=true when b is too short to tell.
func berHeader(b []byte) (tag byte, hdr, n int, need, ok bool) {
	if len(b) < 2 {
		return 0, 0, 0, true, false
	}
	tag = b[0]
	if tag&0x1f == 0x1f {
		return 0, 0, 0, false, false
	}
	l := b[1]
	if l < 0x80 {
		return tag, 2, int(l), false, true
	}
	k := int(l & 0x7f)
	if k == 0 || k > 4 {
		return 0, 0, 0, false, false // indefinite lengths are not allowed in LDAP/SNMP
	}
	if len(b) < 2+k {
		return 0, 0, 0, true, false
	}
	v := 0
	for i := 0; i < k; i++ {
		v = v<<8 | int(b[2+i])
	}
	if v < 0 || v > 1<<30 {
		return 0, 0, 0, false, false
	}
	return tag, 2 + k, v, false, true
}

// berRead returns the next element; a truncated element yields what is there (rest empty).
func berRead(b []byte) (tag byte, val, rest []byte, ok bool) {
	tag, hdr, n, _, ok := berHeader(b)
	if !ok {
		return 0, nil, nil, false
	}
	if hdr+n > len(b) {
		return tag, b[hdr:], nil, true
	}
	return tag, b[hdr : hdr+n], b[hdr+n:], true
}

// berInt decodes a small INTEGER/ENUMERATED.
func berInt(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 8 {
		return 0, false
	}
	x := int64(int8(v[0]))
	for _, c := range v[1:] {
		x = x<<8 | int64(c)
	}
	return x, true
}

var ldapOps = [...]string{
	0: "bindRequest", 1: "bindResponse", 2: "unbindRequest", 3: "searchRequest",
	4: "searchResEntry", 5: "searchResDone", 6: "modifyRequest", 7: "modifyResponse",
	8: "addRequest", 9: "addResponse", 10: "delRequest", 11: "delResponse",
	12: "modDNRequest", 13: "modDNResponse", 14: "compareRequest", 15: "compareResponse",
	16: "abandonRequest", 19: "searchResRef", 23: "extendedRequest", 24: "extendedResponse",
	25: "intermediateResponse",
}

var ldapResults = map[int64]string{
	0: "success", 1: "operationsError", 2: "protocolError", 3: "timeLimitExceeded",
	4: "sizeLimitExceeded", 5: "compareFalse", 6: "compareTrue", 7: "authMethodNotSupported",
	8: "strongerAuthRequired", 10: "referral", 11: "adminLimitExceeded",
	13: "confidentialityRequired", 14: "saslBindInProgress", 16: "noSuchAttribute",
	17: "undefinedAttributeType", 20: "attributeOrValueExists", 21: "invalidAttributeSyntax",
	32: "noSuchObject", 34: "invalidDNSyntax", 48: "inappropriateAuthentication",
	49: "invalidCredentials", 50: "insufficientAccessRights", 51: "busy", 52: "unavailable",
	53: "unwillingToPerform", 64: "namingViolation", 65: "objectClassViolation",
	68: "entryAlreadyExists", 80: "other",
}

// ldapOp validates an LDAPMessage header: SEQUENCE { INTEGER messageID, [APPLICATION n] }.
// It returns the op number and its element, or ok=false.
func ldapOp(msg []byte) (op int, body []byte, tag byte, ok bool) {
	t, v, _, ok := berRead(msg)
	if !ok || t != 0x30 {
		return 0, nil, 0, false
	}
	t, id, rest, ok := berRead(v)
	if !ok || t != 0x02 || len(id) == 0 || len(id) > 4 {
		return 0, nil, 0, false
	}
	t, body, _, ok = berRead(rest)
	if !ok || t&0xc0 != 0x40 {
		return 0, nil, 0, false
	}
	op = int(t & 0x1f)
	if op >= len(ldapOps) || ldapOps[op] == "" {
		return 0, nil, 0, false
	}
	// Primitive only for unbind, del, abandon.
	if prim := t&0x20 == 0; prim != (op == 2 || op == 10 || op == 16) {
		return 0, nil, 0, false
	}
	return op, body, t, true
}

func (LDAP) Detect(p *Probe) Verdict {
	c := p.Client
	if len(c) == 0 {
		c = p.Server
		if len(c) == 0 {
			return No
		}
	}
	if c[0] != 0x30 {
		return No
	}
	_, hdr, n, need, ok := berHeader(c)
	if need {
		return NeedMore
	}
	if !ok || n < 5 {
		return No
	}
	if len(c) < hdr+n && len(c) < 64 {
		return NeedMore
	}
	op, _, _, ok := ldapOp(c)
	if !ok {
		return No
	}
	if len(p.Client) > 0 && (op == 1 || op == 4 || op == 5 || op == 7 || op == 9 || op == 11 ||
		op == 13 || op == 15 || op == 19 || op == 24 || op == 25) {
		return Maybe // a response first from the client side: only mid-stream
	}
	return Yes
}

type ldapParser struct {
	r   [2]lenReasm
	msg Message
	sc  scratch
}

func ldapSize(b []byte) int {
	_, hdr, n, need, ok := berHeader(b)
	if need {
		return 0
	}
	if !ok || b[0] != 0x30 {
		return -1
	}
	return hdr + n
}

func (p *ldapParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	if !p.r[dir&1].feed(data, ldapSize, func(msg []byte, _ bool) { p.message(dir, msg, emit) }) {
		return errNotThisProtocol("ldap")
	}
	return nil
}

func (p *ldapParser) message(dir Direction, msg []byte, emit func(*Message)) {
	op, body, _, ok := ldapOp(msg)
	if !ok {
		return
	}
	m := &p.msg
	p.sc.reset()
	typ := "request"
	switch op {
	case 1, 4, 5, 7, 9, 11, 13, 15, 19, 24, 25:
		typ = "response"
	}
	m.Reset(dir, typ)
	m.AddString(AttrCommand, ldapOps[op])
	switch op {
	case 0: // bindRequest: version, name, authentication
		t, v, rest, ok := berRead(body)
		if !ok || t != 0x02 {
			break
		}
		if ver, ok := berInt(v); ok {
			m.Add(AttrVersion, p.sc.int(ver))
		}
		t, dn, rest, ok := berRead(rest)
		if !ok || t != 0x04 {
			break
		}
		m.Add(AttrName, capBytes(dn, 1024))
		if len(rest) > 0 {
			switch rest[0] {
			case 0x80:
				m.AddString("auth", "simple")
			case 0xa3:
				m.AddString("auth", "sasl")
				if _, sasl, _, ok := berRead(rest); ok {
					if t, mech, _, ok := berRead(sasl); ok && t == 0x04 {
						m.Add("mechanism", capBytes(mech, 64))
					}
				}
			}
		}
	case 3: // searchRequest: baseObject, scope, ...
		t, dn, rest, ok := berRead(body)
		if !ok || t != 0x04 {
			break
		}
		m.Add(AttrName, capBytes(dn, 1024))
		if t, sc, _, ok := berRead(rest); ok && t == 0x0a {
			if s, ok := berInt(sc); ok {
				switch s {
				case 0:
					m.AddString("scope", "base")
				case 1:
					m.AddString("scope", "one")
				case 2:
					m.AddString("scope", "sub")
				}
			}
		}
	case 4, 6, 8, 12, 14: // entry, modify, add, modDN, compare: the DN first
		if t, dn, _, ok := berRead(body); ok && t == 0x04 {
			m.Add(AttrName, capBytes(dn, 1024))
		}
	case 10: // delRequest: the DN is the primitive content
		m.Add(AttrName, capBytes(body, 1024))
	case 23: // extendedRequest: [0] requestName OID string
		if t, oid, _, ok := berRead(body); ok && t == 0x80 {
			m.Add("oid", capBytes(oid, 128))
			if string(oid) == "1.3.6.1.4.1.1466.20037" {
				m.AddString("extended", "StartTLS")
			}
		}
	}
	if typ == "response" && op != 4 && op != 19 && op != 25 { // LDAPResult: resultCode first
		if t, rc, rest, ok := berRead(body); ok && t == 0x0a {
			if code, ok := berInt(rc); ok {
				if s, ok := ldapResults[code]; ok {
					m.AddString(AttrStatus, s)
				} else {
					m.Add(AttrStatus, p.sc.int(code))
				}
			}
			if t, dn, _, ok := berRead(rest); ok && t == 0x04 && len(dn) > 0 {
				m.Add(AttrName, capBytes(dn, 1024))
			}
		}
	}
	emit(m)
}
