package dpi

import "encoding/binary"

// ICMPProto (the Transport constant has the short name) is ICMPv4 and ICMPv6 at the packet level (Transport ICMP; one message per Feed, the
// ICMP header onwards). The IP version is not in the Probe, so it is told from the checksum:
// ICMPv4's covers only the message, ICMPv6's also a pseudo-header. Reports the type and code
// names and echo identifier/sequence.
type ICMPProto struct{}

func (ICMPProto) Name() string          { return "icmp" }
func (ICMPProto) Transports() Transport { return ICMP }
func (ICMPProto) Ports() []uint16       { return nil }
func (ICMPProto) NewParser() Parser     { return &icmpParser{} }

func (ICMPProto) Detect(p *Probe) Verdict {
	if p.Transport != ICMP {
		return No
	}
	if len(p.Client) >= 4 || len(p.Server) >= 4 {
		return Yes
	}
	return No
}

// icmpV4Checksum reports whether b carries a valid ICMPv4 (Internet) checksum.
func icmpV4Checksum(b []byte) bool {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

// icmpIsV6 guesses the version: types only one family uses decide; otherwise the checksum.
func icmpIsV6(b []byte) bool {
	t := b[0]
	switch {
	case t >= 128 && t <= 161:
		return true
	case t == 0 || t == 8 || t == 5 || t == 9 || t == 10 || t == 11 || t == 12 || t == 13 || t == 14:
		return false
	case t == 1 || t == 2:
		return true
	}
	return !icmpV4Checksum(b)
}

var icmp4Unreach = [...]string{"net_unreachable", "host_unreachable", "protocol_unreachable",
	"port_unreachable", "fragmentation_needed", "source_route_failed", "net_unknown",
	"host_unknown", "source_host_isolated", "net_prohibited", "host_prohibited",
	"net_tos_unreachable", "host_tos_unreachable", "communication_prohibited",
	"host_precedence_violation", "precedence_cutoff"}

var icmp6Unreach = [...]string{"no_route", "admin_prohibited", "beyond_scope",
	"address_unreachable", "port_unreachable", "source_policy_failed", "reject_route",
	"source_routing_header_error"}

func icmp4Type(t, c byte) (string, string) {
	switch t {
	case 0:
		return "echo_reply", ""
	case 3:
		if int(c) < len(icmp4Unreach) {
			return "destination_unreachable", icmp4Unreach[c]
		}
		return "destination_unreachable", ""
	case 4:
		return "source_quench", ""
	case 5:
		return "redirect", ""
	case 8:
		return "echo_request", ""
	case 9:
		return "router_advertisement", ""
	case 10:
		return "router_solicitation", ""
	case 11:
		if c == 1 {
			return "time_exceeded", "fragment_reassembly"
		}
		return "time_exceeded", "ttl_exceeded"
	case 12:
		return "parameter_problem", ""
	case 13:
		return "timestamp_request", ""
	case 14:
		return "timestamp_reply", ""
	case 42:
		return "extended_echo_request", ""
	case 43:
		return "extended_echo_reply", ""
	}
	return "", ""
}

func icmp6Type(t, c byte) (string, string) {
	switch t {
	case 1:
		if int(c) < len(icmp6Unreach) {
			return "destination_unreachable", icmp6Unreach[c]
		}
		return "destination_unreachable", ""
	case 2:
		return "packet_too_big", ""
	case 3:
		if c == 1 {
			return "time_exceeded", "fragment_reassembly"
		}
		return "time_exceeded", "hop_limit_exceeded"
	case 4:
		return "parameter_problem", ""
	case 128:
		return "echo_request", ""
	case 129:
		return "echo_reply", ""
	case 130:
		return "mld_query", ""
	case 131:
		return "mld_report", ""
	case 132:
		return "mld_done", ""
	case 133:
		return "router_solicitation", ""
	case 134:
		return "router_advertisement", ""
	case 135:
		return "neighbor_solicitation", ""
	case 136:
		return "neighbor_advertisement", ""
	case 137:
		return "redirect", ""
	case 143:
		return "mldv2_report", ""
	}
	return "", ""
}

type icmpParser struct {
	msg Message
	sc  scratch
}

func (p *icmpParser) Feed(dir Direction, b []byte, emit func(*Message)) error {
	if len(b) < 4 {
		return nil
	}
	m := &p.msg
	p.sc.reset()
	v6 := icmpIsV6(b)
	var name, code string
	if v6 {
		name, code = icmp6Type(b[0], b[1])
		m.Reset(dir, "icmpv6")
		m.AddString(AttrVersion, "6")
	} else {
		name, code = icmp4Type(b[0], b[1])
		m.Reset(dir, "icmp")
		m.AddString(AttrVersion, "4")
	}
	if name != "" {
		m.AddString(AttrCommand, name)
	} else {
		m.Add(AttrCommand, p.sc.uint(uint64(b[0])))
	}
	if code != "" {
		m.AddString("code", code)
	} else if b[1] != 0 {
		m.Add("code", p.sc.uint(uint64(b[1])))
	}
	echo := !v6 && (b[0] == 0 || b[0] == 8) || v6 && (b[0] == 128 || b[0] == 129)
	if echo && len(b) >= 8 {
		m.Add("id", p.sc.uint(uint64(binary.BigEndian.Uint16(b[4:]))))
		m.Add("seq", p.sc.uint(uint64(binary.BigEndian.Uint16(b[6:]))))
	}
	emit(m)
	return nil
}
