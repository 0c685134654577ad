package dpi

import (
	"errors"
	"fmt"
	"strings"
)

// Config is what an Engine needs; Protocols is required, the limits default when zero.
type Config struct {
	Protocols []Protocol // probe order; usually DefaultProtocols()

	// Summary bounds: distinct attribute keys kept per flow, distinct values kept per key and
	// bytes kept per value. They cap the memory a hostile flow can make the summary hold.
	MaxSummaryKeys   int // default 16
	MaxSummaryValues int // default 4
	MaxValueLen      int // default 128
}

func (c Config) validate() error {
	if len(c.Protocols) == 0 {
		return errors.New("dpi: config.protocols is empty; pass dpi.DefaultProtocols()")
	}
	if len(c.Protocols) > 255 {
		return fmt.Errorf("dpi: config.protocols has %d entries, at most 255 are supported", len(c.Protocols))
	}
	seen := make(map[string]bool, len(c.Protocols))
	for i, p := range c.Protocols {
		if p == nil {
			return fmt.Errorf("dpi: config.protocols[%d] is nil", i)
		}
		n := p.Name()
		if n == "" || n != strings.ToLower(n) || n == Unknown {
			return fmt.Errorf("dpi: config.protocols[%d]: name %q must be non-empty lowercase and not %q", i, n, Unknown)
		}
		if seen[n] {
			return fmt.Errorf("dpi: config.protocols[%d]: protocol %q is listed twice", i, n)
		}
		seen[n] = true
	}
	if c.MaxSummaryKeys < 0 || c.MaxSummaryValues < 0 || c.MaxValueLen < 0 {
		return errors.New("dpi: summary limits must not be negative (zero means the default)")
	}
	return nil
}

// Unknown is the protocol name of a flow no detector recognised.
const Unknown = "unknown"

// GapParser is implemented by parsers that can resynchronise after bytes were lost in one
// direction (a hole in TCP reassembly). Parsers without it just keep receiving bytes.
type GapParser interface {
	Gap(dir Direction)
}

type portKey struct {
	t    Transport
	port uint16
}

// Engine holds the registry and the port table; it is immutable after New and safe for
// concurrent use. Per-flow state lives in Flow, which is not safe for concurrent use: a proxy
// that copies each direction in its own goroutine serialises Feed calls with a mutex.
//
//	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
//	fl := eng.NewFlow(dpi.FlowInfo{Transport: dpi.TCP, ServerPort: 6379}, onMessage)
//	fl.Feed(dpi.ClientToServer, buf[:n]) // bytes as they are relayed, any segmentation
//	fl.Feed(dpi.ServerToClient, buf[:n])
//	if fl.Detected() { _ = fl.Protocol(); _ = fl.Mismatch() } // policy can decide now
//	fl.Close()                                                  // connection ended
//	report(fl.Protocol(), fl.Summary())                         // Summary marshals to JSON
type Engine struct {
	cfg    Config
	protos []Protocol
	byT    [3][]uint8 // indices into protos per transport (tcp, udp, icmp), probe order
	owners map[portKey][]uint8
}

// New builds an engine from a validated config.
func New(cfg Config) (*Engine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MaxSummaryKeys == 0 {
		cfg.MaxSummaryKeys = 16
	}
	if cfg.MaxSummaryValues == 0 {
		cfg.MaxSummaryValues = 4
	}
	if cfg.MaxValueLen == 0 {
		cfg.MaxValueLen = 128
	}
	e := &Engine{cfg: cfg, protos: cfg.Protocols, owners: make(map[portKey][]uint8)}
	for i, p := range cfg.Protocols {
		for ti, t := range []Transport{TCP, UDP, ICMP} {
			if p.Transports()&t == 0 {
				continue
			}
			e.byT[ti] = append(e.byT[ti], uint8(i))
			for _, port := range p.Ports() {
				k := portKey{t, port}
				e.owners[k] = append(e.owners[k], uint8(i))
			}
		}
	}
	return e, nil
}

// Protocols returns the registry the engine was built with.
func (e *Engine) Protocols() []Protocol { return e.protos }

// WellKnown says a registered protocol claims port on transport t (its default ports): a hint
// for which end of a flow seen from the middle is the server.
func (e *Engine) WellKnown(t Transport, port uint16) bool {
	return len(e.owners[portKey{t, port}]) > 0
}

func tIndex(t Transport) int {
	switch t {
	case UDP:
		return 1
	case ICMP:
		return 2
	}
	return 0
}

// FlowInfo describes a new flow.
type FlowInfo struct {
	Transport  Transport
	ServerPort uint16 // only for the mismatch signal and detector tie-breaks
	Midstream  bool   // the flow's start (TCP handshake, first bytes) was not seen
	// (the engine also sets it when bytes are lost during detection)
}

type flowState uint8

const (
	detecting flowState = iota
	parsing
	passthrough // unknown protocol, or the parser gave up: only counters move
)

type segment struct {
	dir   Direction
	start int
	end   int
}

// Limits of detection besides MaxProbe bytes per direction: TCP segments (or datagrams)
// remembered for in-order replay to the parser, and datagrams per direction for UDP/ICMP.
const (
	maxProbeSegments  = 16
	maxProbeDatagrams = 3
	maxYesWaits       = 2 // direction turns a Yes waits for an earlier protocol's NeedMore
	// Mid-stream TCP flows keep probing fresh bytes until this many were seen.
	maxMidstreamProbe = 8 * MaxProbe
)

// Flow is one connection (or UDP/ICMP conversation) going through the engine. Feed it the
// bytes of each direction as they arrive; it detects the protocol from the first bytes, then
// parses incrementally and keeps a bounded summary.
type Flow struct {
	e        *Engine
	info     FlowInfo
	state    flowState
	proto    int // index into e.protos, -1 while detecting or unknown
	parser   Parser
	onMsg    func(*Message)
	emit     func(*Message) // f.handle, bound once so Feed does not allocate
	probe    [2][]byte
	segs     [maxProbeSegments]segment
	nsegs    int
	grams    [2]int
	yesWaits int
	waitSegs int
	mismatch bool
	err      error
	packets  [2]uint64
	bytes    [2]uint64
	summary  Summary
}

// NewFlow starts a flow. onMessage, if not nil, sees every parsed message (valid only during
// the call, like the Parser contract says).
func (e *Engine) NewFlow(info FlowInfo, onMessage func(*Message)) *Flow {
	f := &Flow{e: e, info: info, proto: -1, onMsg: onMessage}
	f.summary.init(e.cfg)
	f.emit = f.handle
	return f
}

// Protocol is the detected protocol name, Unknown when none matched, "" while undecided.
func (f *Flow) Protocol() string {
	switch {
	case f.proto >= 0:
		return f.e.protos[f.proto].Name()
	case f.state == detecting:
		return ""
	}
	return Unknown
}

// Detected says detection has finished (with a protocol or Unknown).
func (f *Flow) Detected() bool { return f.state != detecting }

// Mismatch says the protocol does not belong on the server port while another protocol
// claims that port as well-known (SSH on 443, HTTP on 6379), or that the flow carried bytes
// nobody recognised on a well-known port (non-DNS on 53).
func (f *Flow) Mismatch() bool { return f.mismatch }

// Err is why parsing stopped early, if it did.
func (f *Flow) Err() error { return f.err }

// Summary is the flow's bounded L7 summary.
func (f *Flow) Summary() *Summary { return &f.summary }

// Packets and Bytes count what was fed per direction (non-empty Feed calls and their bytes).
func (f *Flow) Packets(dir Direction) uint64 { return f.packets[dir&1] }

// Bytes counts payload bytes fed in dir.
func (f *Flow) Bytes(dir Direction) uint64 { return f.bytes[dir&1] }

// Info returns what the flow was created with.
func (f *Flow) Info() FlowInfo { return f.info }

// Feed gives the next bytes of dir: for TCP any segmentation of the stream, for UDP and ICMP
// one datagram. The data is not retained after Feed returns.
func (f *Flow) Feed(dir Direction, data []byte) {
	if len(data) == 0 {
		return
	}
	dir &= 1
	f.packets[dir]++
	f.bytes[dir] += uint64(len(data))
	switch f.state {
	case parsing:
		f.feedParser(dir, data)
	case detecting:
		f.buffer(dir, data)
	}
}

// Gap says bytes of dir were lost (a hole in reassembly). Detection decides on what it has
// and, failing that, goes on as for a flow picked up mid-stream; a parser that can
// resynchronise is told.
func (f *Flow) Gap(dir Direction) {
	switch f.state {
	case detecting:
		f.info.Midstream = true // what follows the hole starts anywhere in a message
		if len(f.probe[dir&1]) > 0 {
			// The bytes after the hole cannot be appended to the probe: decide now.
			f.detect(true)
		}
		// Nothing of dir was probed yet (its first bytes were lost): its bytes after the
		// hole are as good as a mid-stream start, so detection goes on with them.
	case parsing:
		if g, ok := f.parser.(GapParser); ok {
			f.safely(func() { g.Gap(dir & 1) })
		}
	}
}

// Close ends the flow: undecided detection decides on the bytes it has, and the parser is
// released (the summary, protocol and counters stay readable; further Feeds only count).
func (f *Flow) Close() {
	if f.state == detecting && f.nsegs > 0 {
		f.detect(true)
	}
	if f.state == detecting {
		f.state = passthrough
		f.checkMismatch()
	}
	f.state, f.parser = passthrough, nil
	f.release()
}

func (f *Flow) handle(m *Message) {
	f.summary.add(m)
	if f.onMsg != nil {
		f.onMsg(m)
	}
}

// safely runs parser code, turning a panic into a parse error: a bug in one parser must
// not take down the sidecar or the whole inspection.
func (f *Flow) safely(fn func()) {
	defer func() {
		if r := recover(); r != nil {
			f.fail(fmt.Errorf("parser panic: %v", r))
		}
	}()
	fn()
}

func (f *Flow) fail(err error) {
	f.err = err
	f.state = passthrough
	f.parser = nil
	f.summary.err = err.Error()
}

func (f *Flow) feedParser(dir Direction, data []byte) {
	defer func() {
		if r := recover(); r != nil {
			f.fail(fmt.Errorf("parser panic: %v", r))
		}
	}()
	if err := f.parser.Feed(dir, data, f.emit); err != nil {
		f.fail(err)
	}
}

func (f *Flow) buffer(dir Direction, data []byte) {
	dgram := f.info.Transport != TCP
	limit := MaxProbe
	if dgram {
		limit = MaxBuffer // whole datagrams, so the parser sees them intact after detection
	}
	b := f.probe[dir]
	if b == nil {
		b = make([]byte, 0, min(limit, max(len(data), 512)))
	}
	room := limit - len(b)
	full := false
	if len(data) > room {
		data, full = data[:room], true
	}
	start := len(b)
	b = append(b, data...)
	f.probe[dir] = b
	switch {
	case len(data) == 0:
	case !dgram && f.nsegs > 0 && f.segs[f.nsegs-1].dir == dir && f.segs[f.nsegs-1].end == start:
		f.segs[f.nsegs-1].end = len(b) // stream bytes continuing in the same direction
	default:
		f.segs[f.nsegs] = segment{dir: dir, start: start, end: len(b)}
		f.nsegs++
	}
	f.grams[dir]++
	final := full || f.nsegs == maxProbeSegments
	if dgram {
		final = final || (f.grams[0] > 0 && f.grams[1] > 0) || f.grams[dir] >= maxProbeDatagrams
	} else {
		final = final || len(b) >= MaxProbe
	}
	f.detect(final)
}

func (f *Flow) probeBytes(dir Direction) []byte {
	b := f.probe[dir]
	if f.info.Transport == TCP {
		return b
	}
	for i := 0; i < f.nsegs; i++ { // the first datagram of the direction
		if s := f.segs[i]; s.dir == dir {
			return b[s.start:min(s.end, s.start+MaxProbe)]
		}
	}
	return nil
}

// detect runs the detectors over the probe. Registry order is priority: the first Yes wins
// unless an earlier protocol still says NeedMore (then we wait a few feeds, or until final).
// A Maybe is the fallback when nothing says Yes.
func (f *Flow) detect(final bool) {
	p := Probe{
		Transport:  f.info.Transport,
		Client:     f.probeBytes(ClientToServer),
		Server:     f.probeBytes(ServerToClient),
		ServerPort: f.info.ServerPort,
		Midstream:  f.info.Midstream,
	}
	firstYes, firstMaybe, need := -1, -1, false
	for _, i := range f.e.byT[tIndex(f.info.Transport)] {
		v := f.detectOne(int(i), &p)
		switch v {
		case Yes:
			if !need {
				f.choose(int(i))
				return
			}
			if firstYes < 0 {
				firstYes = int(i)
			}
		case Maybe:
			if firstMaybe < 0 {
				firstMaybe = int(i)
			}
		case NeedMore:
			need = true
		}
	}
	if need && !final {
		// A later protocol's Yes waits for an earlier NeedMore only a few turns of the
		// conversation, so one hesitant detector cannot hold back detection for the whole flow.
		if firstYes >= 0 && f.nsegs != f.waitSegs {
			f.waitSegs = f.nsegs
			f.yesWaits++
		}
		if firstYes < 0 || f.yesWaits <= maxYesWaits {
			return
		}
	}
	switch {
	case firstYes >= 0:
		f.choose(firstYes)
	case firstMaybe >= 0:
		f.choose(firstMaybe)
	case f.info.Midstream && f.info.Transport == TCP && f.bytes[0]+f.bytes[1] < maxMidstreamProbe:
		// Picked up in the middle of a message (a large body, say): look again at later
		// bytes, which may hold the next message start.
		f.release()
		f.waitSegs, f.yesWaits = 0, 0
	default:
		f.state = passthrough
		f.release()
		f.checkMismatch()
	}
}

func (f *Flow) detectOne(i int, p *Probe) (v Verdict) {
	defer func() {
		if r := recover(); r != nil {
			v = No
		}
	}()
	return f.e.protos[i].Detect(p)
}

func (f *Flow) choose(i int) {
	f.proto = i
	f.state = parsing
	f.checkMismatch()
	f.safely(func() {
		if fp, ok := f.e.protos[i].(FlowParserMaker); ok {
			f.parser = fp.NewFlowParser(f.info)
		} else {
			f.parser = f.e.protos[i].NewParser()
		}
	})
	if f.state != parsing {
		f.release()
		return
	}
	if g, ok := f.parser.(midstreamParser); ok && f.info.Midstream {
		g.Midstream()
	}
	// Replay the probe in arrival order so request/response pairing holds.
	for j := 0; j < f.nsegs && f.state == parsing; j++ {
		s := f.segs[j]
		f.feedParser(s.dir, f.probe[s.dir][s.start:s.end])
	}
	f.release()
}

// FlowParserMaker is implemented by protocols whose parser depends on the flow (DNS frames
// TCP and UDP differently). The engine prefers it to NewParser.
type FlowParserMaker interface {
	NewFlowParser(info FlowInfo) Parser
}

// midstreamParser is implemented by parsers that want to know the flow's start was missed.
type midstreamParser interface{ Midstream() }

func (f *Flow) release() {
	f.probe = [2][]byte{}
	f.nsegs = 0
}

func (f *Flow) checkMismatch() {
	k := portKey{f.info.Transport, f.info.ServerPort}
	owners := f.e.owners[k]
	if f.proto < 0 {
		// Bytes nobody recognised on a port a protocol owns: a tunnel or a covert channel.
		f.mismatch = len(owners) > 0 && f.bytes[0]+f.bytes[1] >= 8
		return
	}
	if len(owners) == 0 {
		return
	}
	for _, o := range owners {
		if int(o) == f.proto {
			return
		}
	}
	f.mismatch = true
}
