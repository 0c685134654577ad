package dpi

import "encoding/binary"

// DHCP is DHCPv4 (BOOTP with the 63.82.53.63 magic cookie) over UDP: message type, client
// MAC, hostname, vendor class, requested and offered addresses.
type DHCP struct{}

func (DHCP) Name() string          { return "dhcp" }
func (DHCP) Transports() Transport { return UDP }
func (DHCP) Ports() []uint16       { return []uint16{67, 68} }
func (DHCP) NewParser() Parser     { return &dhcpParser{} }

const dhcpCookieOff = 236

var dhcpTypes = [...]string{"", "DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK",
	"RELEASE", "INFORM", "FORCERENEW", "LEASEQUERY", "LEASEUNASSIGNED", "LEASEUNKNOWN",
	"LEASEACTIVE", "BULKLEASEQUERY", "LEASEQUERYDONE", "ACTIVELEASEQUERY",
	"LEASEQUERYSTATUS", "TLS"}

func dhcpValid(b []byte) bool {
	return len(b) >= dhcpCookieOff+4 && (b[0] == 1 || b[0] == 2) && b[2] <= 16 &&
		binary.BigEndian.Uint32(b[dhcpCookieOff:]) == 0x63825363
}

func (DHCP) Detect(p *Probe) Verdict {
	for _, b := range [][]byte{p.Client, p.Server} {
		if len(b) > 0 {
			if dhcpValid(b) {
				return Yes
			}
			return No
		}
	}
	return No
}

type dhcpParser struct {
	msg Message
	sc  scratch
}

func (p *dhcpParser) Feed(dir Direction, b []byte, emit func(*Message)) error {
	if !dhcpValid(b) {
		return nil
	}
	m := &p.msg
	p.sc.reset()
	m.Reset(dir, "bootp")
	if b[0] == 1 {
		m.Type = "request"
	} else {
		m.Type = "reply"
	}
	hlen := int(b[2])
	if b[1] == 1 && hlen == 6 { // Ethernet
		m.Add("client_mac", p.sc.hex(b[28:34], ':'))
	}
	if yi := b[16:20]; binary.BigEndian.Uint32(yi) != 0 {
		m.Add("your_ip", p.sc.ipv4(yi))
	}
	opts := b[dhcpCookieOff+4:]
	for i := 0; i < 255 && len(opts) > 0; i++ {
		code := opts[0]
		if code == 0 { // pad
			opts = opts[1:]
			continue
		}
		if code == 255 || len(opts) < 2 {
			break
		}
		n := int(opts[1])
		if 2+n > len(opts) {
			break
		}
		v := opts[2 : 2+n]
		switch code {
		case 53:
			if n == 1 && int(v[0]) < len(dhcpTypes) && v[0] > 0 {
				m.AddString(AttrCommand, dhcpTypes[v[0]])
			}
		case 12:
			m.Add(AttrHost, capBytes(v, 255))
		case 60:
			m.Add(AttrSoftware, capBytes(v, 128))
		case 50:
			if n == 4 {
				m.Add("requested_ip", p.sc.ipv4(v))
			}
		case 54:
			if n == 4 {
				m.Add("server_id", p.sc.ipv4(v))
			}
		case 81: // client FQDN: flags, rcode1, rcode2, name (ASCII form when E=0)
			if n > 3 && v[0]&0x04 == 0 {
				m.Add("fqdn", capBytes(v[3:], 255))
			}
		}
		opts = opts[2+n:]
	}
	emit(m)
	return nil
}
