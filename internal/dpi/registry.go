package dpi

// DefaultProtocols is every protocol meshguard understands, in probe order: on the same bytes
// the first Yes wins, and a protocol earlier in the list that still says NeedMore is waited for
// (bounded by MaxProbe), so more specific detectors go first.
func DefaultProtocols() []Protocol {
	return []Protocol{
		// Core protocols (engine owner).
		HTTP2{}, // before HTTP1: an HTTP/1.1 request asking to upgrade to h2c is HTTP/2
		HTTP1{},
		TLS{},
		DNS{},

		// --- Application protocols A (one line each; ssh, redis, postgres, mysql, mongodb,
		// kafka, amqp, mqtt, smtp, imap, pop3, ftp, memcached) ---
		SSH{},
		Postgres{},
		MySQL{},
		MongoDB{},
		AMQP{},
		MQTT{},
		Redis{}, // before Memcached: both accept inline "get k"; RESP replies decide
		Memcached{},
		Kafka{}, // after Postgres: a startup message can pass Kafka's header checks
		SMTP{},  // SMTP, FTP, POP3, IMAP share server-banner logic (textmail.go)
		FTP{},
		POP3{},
		IMAP{},

		// --- end A ---

		// --- Application protocols B (one line each; cassandra, zookeeper, nats, ldap, sip,
		// rtsp, ntp, snmp, syslog, dhcp, quic, wireguard, openvpn, stun, icmp) ---
		ICMPProto{}, // the only ICMP protocol
		DHCP{},      // magic cookie: exact
		STUN{},      // magic cookie and length: exact
		WireGuard{}, // exact sizes
		QUIC{},
		SNMP{},
		LDAP{},
		SIP{},
		RTSP{},
		NATS{},
		Cassandra{},
		ZooKeeper{},
		OpenVPN{},
		Syslog{}, // weak (a PRI and text) and NTP (a few header bits): last
		NTP{},
		// --- end B ---
	}
}
