// Package inspect reads packet captures (pcap and pcapng), reassembles TCP, runs every flow
// through the DPI engine and reports one line per flow: endpoints, transport, detected
// protocol, L7 summary and counters. It is the offline twin of what the sidecar does live.
package inspect

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/meshguard/meshguard/internal/dpi"
)

// ErrTruncated marks a capture that ended in the middle of a record: the flows read so far
// are still reported.
var ErrTruncated = errors.New("capture is truncated")

// Config is what an Inspector needs.
type Config struct {
	Engine   *dpi.Engine
	Log      *slog.Logger
	MaxFlows int // flows tracked per capture; later new flows are counted and dropped (default 1M)
}

func (c Config) validate() error {
	if c.Engine == nil || c.Log == nil {
		return errors.New("inspect: config.engine and config.log are required")
	}
	if c.MaxFlows < 0 {
		return fmt.Errorf("inspect: config.max_flows %d must not be negative", c.MaxFlows)
	}
	return nil
}

// Inspector analyses captures; it is not safe for concurrent use (one per goroutine).
type Inspector struct {
	cfg Config
}

// New builds an inspector.
func New(cfg Config) (*Inspector, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MaxFlows == 0 {
		cfg.MaxFlows = 1 << 20
	}
	return &Inspector{cfg: cfg}, nil
}

// Report is one flow of a capture.
type Report struct {
	Src       string       `json:"src"`
	Dst       string       `json:"dst"`
	Transport string       `json:"transport"`
	Protocol  string       `json:"protocol"`
	L7        *dpi.Summary `json:"l7"`
	Packets   uint64       `json:"packets"`
	Bytes     uint64       `json:"bytes"`
	Mismatch  bool         `json:"mismatch,omitempty"`
}

// Result is the analysis of one capture.
type Result struct {
	Flows        []Report
	Packets      uint64 // frames read
	Undecodable  uint64 // frames that were not IPv4/IPv6 TCP, UDP or ICMP
	DroppedFlows uint64 // flows past MaxFlows
	Malformed    uint64 // of Undecodable: IP frames with broken headers, skipped (logged as a warning)
	// IP fragments seen, datagrams reassembled from them, and datagrams given up on (timed
	// out, evicted, inconsistent or never completed).
	Fragments, Reassembled, FragmentsDiscarded uint64
}

// Read analyses one capture. On a truncated capture it returns the flows so far together with
// an error wrapping ErrTruncated; on a file that is not a capture, an error and no result.
func (in *Inspector) Read(ctx context.Context, r io.Reader) (*Result, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("not a pcap or pcapng file: too short to hold a header (%w)", err)
	}
	var src packetSource
	switch binary.LittleEndian.Uint32(magic) {
	case 0x0a0d0d0a:
		ng, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return nil, fmt.Errorf("reading pcapng header: %w", err)
		}
		src = ngSource{ng}
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1:
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("reading pcap header: %w", err)
		}
		src = pcapSource{pr}
	default:
		return nil, fmt.Errorf("not a pcap or pcapng file (magic %x); save captures with tcpdump -w or tshark -w", magic)
	}
	t := newTable(in.cfg)
	res := &Result{}
	var readErr error
	for {
		if res.Packets&1023 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		data, ci, lt, err := src.next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				readErr = fmt.Errorf("%w after %d packets: %v", ErrTruncated, res.Packets, err)
			}
			break
		}
		res.Packets++
		if !t.packet(lt, data, ci.Length, ci.Timestamp) {
			res.Undecodable++
		}
	}
	res.Flows, res.DroppedFlows, res.Malformed = t.finish(), t.dropped, t.malformed
	if t.malformed > 0 {
		in.cfg.Log.Warn("skipped malformed packets (truncated or inconsistent IP/TCP/UDP headers)",
			"count", t.malformed, "packets", res.Packets)
	}
	res.Fragments, res.Reassembled = t.defrag.fragments, t.defrag.reassembled
	res.FragmentsDiscarded = t.defrag.discarded + uint64(len(t.defrag.dgrams))
	return res, readErr
}

// packetSource hides the two reader types; the returned data is only valid until next().
type packetSource interface {
	next() ([]byte, gopacket.CaptureInfo, layers.LinkType, error)
}

type pcapSource struct{ r *pcapgo.Reader }

func (s pcapSource) next() ([]byte, gopacket.CaptureInfo, layers.LinkType, error) {
	data, ci, err := s.r.ZeroCopyReadPacketData()
	return data, ci, s.r.LinkType(), err
}

type ngSource struct{ r *pcapgo.NgReader }

func (s ngSource) next() ([]byte, gopacket.CaptureInfo, layers.LinkType, error) {
	data, ci, err := s.r.ZeroCopyReadPacketData()
	if err != nil {
		return nil, ci, 0, err
	}
	iface, err := s.r.Interface(ci.InterfaceIndex)
	if err != nil {
		return nil, ci, 0, err
	}
	return data, ci, iface.LinkType, nil
}

// endpointString formats ip:port, IPv6 as [ip]:port; ICMP flows have no port.
func endpointString(ap netip.AddrPort, t dpi.Transport) string {
	if t == dpi.ICMP {
		return ap.Addr().String()
	}
	return ap.String()
}

// MarshalLine renders a report as one JSON line (without the newline).
func (r *Report) MarshalLine() ([]byte, error) { return json.Marshal(r) }
