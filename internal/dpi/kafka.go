package dpi

import (
	"encoding/binary"
	"errors"
	"strconv"
)

// Kafka parses Kafka request headers: API key name (AttrCommand), API version, client id
// and, for Produce, Fetch (before topic ids) and Metadata, the topic names (one AttrTopic
// each, at most 8). Responses carry no self-description and are skipped.
type Kafka struct{}

func (Kafka) Name() string          { return "kafka" }
func (Kafka) Transports() Transport { return TCP }
func (Kafka) Ports() []uint16       { return []uint16{9092, 9093} }

const kafkaMaxRequest = 100 << 20

func (Kafka) Detect(p *Probe) Verdict { return clientFirst(p, kafkaDetect(p)) }

func kafkaDetect(p *Probe) Verdict {
	c := p.Client
	if len(c) == 0 {
		return No
	}
	if len(c) < 14 {
		if len(c) >= 4 && (c[0] != 0 || binary.BigEndian.Uint32(c) < 10) {
			return No
		}
		return NeedMore
	}
	size := binary.BigEndian.Uint32(c)
	key := binary.BigEndian.Uint16(c[4:])
	ver := binary.BigEndian.Uint16(c[6:])
	corr := binary.BigEndian.Uint32(c[8:])
	idLen := int16(binary.BigEndian.Uint16(c[12:]))
	if size < 10 || size > kafkaMaxRequest || kafkaAPI(key) == "" || ver > 20 || idLen < -1 {
		return No
	}
	if idLen > 0 {
		if int(idLen)+10 > int(size) {
			return No
		}
		id := c[14:min(len(c), 14+int(idLen))]
		for _, b := range id {
			if b < 0x20 || b > 0x7e {
				return No
			}
		}
	}
	if s := p.Server; len(s) >= 8 && binary.BigEndian.Uint32(s[4:]) != corr {
		// A Kafka response starts with the request's correlation id; ZooKeeper's (length,
		// xid, type) requests parse as Kafka headers but their replies do not echo "type".
		return No
	}
	if (key == 18 || key == 3) && corr < 1<<20 {
		return Yes
	}
	if len(p.Server) < 8 {
		// Any length-prefixed protocol with zeros up front (ZooKeeper, ...) passes the header
		// checks above: wait for the response to echo the correlation id.
		return NeedMore
	}
	return Maybe
}

// NewParser returns a parser for one connection.
func (Kafka) NewParser() Parser { return &kafkaParser{} }

var errKafkaGarbage = errors.New("kafka: malformed request")

type kafkaParser struct {
	r   lenReasm
	msg Message
	num [2][8]byte
}

func kafkaSize(b []byte) int {
	if len(b) < 4 {
		return 0
	}
	n := binary.BigEndian.Uint32(b)
	if n < 8 || n > kafkaMaxRequest {
		return -1
	}
	return int(n) + 4
}

func (p *kafkaParser) Feed(dir Direction, data []byte, emit func(*Message)) error {
	if dir&1 == ServerToClient {
		return nil
	}
	ok := p.r.feed(data, kafkaSize, func(b []byte, whole bool) { p.request(b[4:], emit) })
	if !ok {
		return errKafkaGarbage
	}
	return nil
}

func (p *kafkaParser) request(b []byte, emit func(*Message)) {
	r := kafkaReader{b: b}
	key, ver := r.i16(), r.i16()
	r.i32() // correlation id
	name := kafkaAPI(uint16(key))
	if r.bad || name == "" {
		return
	}
	m := &p.msg
	m.Reset(ClientToServer, "request")
	m.AddString(AttrCommand, name)
	m.Add(AttrVersion, strconv.AppendInt(p.num[0][:0], int64(ver), 10))
	if id := r.str(); len(id) > 0 {
		m.Add(AttrClientID, capBytes(id, 128))
	}
	flex := kafkaFlexible(key, ver)
	if flex {
		r.tags()
	}
	if key == 18 && ver >= 3 && !r.bad { // ApiVersions names the client library
		if sw := r.nstr(true); len(sw) > 0 && !r.bad {
			m.Add(AttrSoftware, capBytes(sw, 64))
			if v := r.nstr(true); len(v) > 0 && !r.bad {
				m.Add("software_version", capBytes(v, 32))
			}
		}
	}
	if !r.bad {
		p.topics(&r, key, ver, flex)
	}
	emit(m)
}

// topics adds the topic names of Produce, Fetch and Metadata requests.
func (p *kafkaParser) topics(r *kafkaReader, key, ver int16, flex bool) {
	m := &p.msg
	switch key {
	case 0: // Produce
		if ver >= 3 {
			r.nstr(flex) // transactional id
		}
		r.skip(6) // acks, timeout
	case 1: // Fetch
		if ver >= 13 {
			return // topic ids, not names
		}
		r.skip(12)
		if ver >= 3 {
			r.skip(4)
		}
		if ver >= 4 {
			r.skip(1)
		}
		if ver >= 7 {
			r.skip(8)
		}
	case 3: // Metadata
	default:
		return
	}
	n := r.array(flex)
	for i := 0; i < n && i < 8 && !r.bad; i++ {
		if key == 3 && ver >= 10 {
			r.skip(16) // topic id
		}
		name := r.nstr(flex)
		if r.bad {
			return
		}
		if len(name) > 0 {
			m.Add(AttrTopic, capBytes(name, 128))
		}
		switch key {
		case 0:
			parts := r.array(flex)
			for j := 0; j < parts && !r.bad; j++ {
				r.skip(4)
				r.bytes(flex) // records
				if flex {
					r.tags()
				}
			}
		case 1:
			parts := r.array(flex)
			per := 16
			if ver >= 5 {
				per += 8
			}
			if ver >= 9 {
				per += 4
			}
			for j := 0; j < parts && !r.bad; j++ {
				r.skip(per)
				if flex {
					r.tags()
				}
			}
		}
		if flex {
			r.tags()
		}
	}
}

// kafkaFlexible says whether a request uses header v2 and compact encodings.
func kafkaFlexible(key, ver int16) bool {
	var f int16
	switch key {
	case 60:
		f = 0
	case 44:
		f = 1
	case 21, 22, 29, 30, 31, 33, 35, 36, 37, 42:
		f = 2
	case 10, 16, 18, 24, 25, 26, 28:
		f = 3
	case 12, 13, 14, 20, 23, 32:
		f = 4
	case 15, 19:
		f = 5
	case 2, 9, 11:
		f = 6
	case 8:
		f = 8
	case 0, 3:
		f = 9
	case 1:
		f = 12
	case 17:
		return false
	default:
		return key >= 43
	}
	return ver >= f
}

// kafkaReader reads big-endian Kafka primitives; any overrun sets bad and yields zeros.
type kafkaReader struct {
	b   []byte
	bad bool
}

func (r *kafkaReader) take(n int) []byte {
	if r.bad || n < 0 || n > len(r.b) {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *kafkaReader) skip(n int) { r.take(n) }

func (r *kafkaReader) i16() int16 {
	if v := r.take(2); v != nil {
		return int16(binary.BigEndian.Uint16(v))
	}
	return 0
}

func (r *kafkaReader) i32() int32 {
	if v := r.take(4); v != nil {
		return int32(binary.BigEndian.Uint32(v))
	}
	return 0
}

func (r *kafkaReader) uvarint() int {
	if r.bad {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > 1<<30 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return int(v)
}

// str reads a legacy nullable string (int16 length).
func (r *kafkaReader) str() []byte {
	n := r.i16()
	if n < 0 {
		return nil
	}
	return r.take(int(n))
}

// nstr reads a string, compact when flex.
func (r *kafkaReader) nstr(flex bool) []byte {
	if !flex {
		return r.str()
	}
	n := r.uvarint()
	if n == 0 {
		return nil
	}
	return r.take(n - 1)
}

func (r *kafkaReader) bytes(flex bool) []byte {
	if flex {
		return r.nstr(true)
	}
	n := r.i32()
	if n < 0 {
		return nil
	}
	return r.take(int(n))
}

// array reads an array length (-1 and 0 both mean no elements).
func (r *kafkaReader) array(flex bool) int {
	if flex {
		return r.uvarint() - 1
	}
	return int(r.i32())
}

func (r *kafkaReader) tags() {
	n := r.uvarint()
	for i := 0; i < n && !r.bad; i++ {
		r.uvarint()
		r.skip(r.uvarint())
	}
}

func kafkaAPI(key uint16) string {
	names := [...]string{"Produce", "Fetch", "ListOffsets", "Metadata", "LeaderAndIsr",
		"StopReplica", "UpdateMetadata", "ControlledShutdown", "OffsetCommit", "OffsetFetch",
		"FindCoordinator", "JoinGroup", "Heartbeat", "LeaveGroup", "SyncGroup", "DescribeGroups",
		"ListGroups", "SaslHandshake", "ApiVersions", "CreateTopics", "DeleteTopics",
		"DeleteRecords", "InitProducerId", "OffsetForLeaderEpoch", "AddPartitionsToTxn",
		"AddOffsetsToTxn", "EndTxn", "WriteTxnMarkers", "TxnOffsetCommit", "DescribeAcls",
		"CreateAcls", "DeleteAcls", "DescribeConfigs", "AlterConfigs", "AlterReplicaLogDirs",
		"DescribeLogDirs", "SaslAuthenticate", "CreatePartitions", "CreateDelegationToken",
		"RenewDelegationToken", "ExpireDelegationToken", "DescribeDelegationToken", "DeleteGroups",
		"ElectLeaders", "IncrementalAlterConfigs", "AlterPartitionReassignments",
		"ListPartitionReassignments", "OffsetDelete", "DescribeClientQuotas", "AlterClientQuotas",
		"DescribeUserScramCredentials", "AlterUserScramCredentials", "Vote", "BeginQuorumEpoch",
		"EndQuorumEpoch", "DescribeQuorum", "AlterPartition", "UpdateFeatures", "Envelope",
		"FetchSnapshot", "DescribeCluster", "DescribeProducers", "BrokerRegistration",
		"BrokerHeartbeat", "UnregisterBroker", "DescribeTransactions", "ListTransactions",
		"AllocateProducerIds", "ConsumerGroupHeartbeat"}
	if int(key) < len(names) {
		return names[key]
	}
	return ""
}
