package threat

import (
	"container/list"
	"fmt"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// FloodConfig tunes the per-source rate detectors. Zero fields take the defaults.
type FloodConfig struct {
	Clock clockwork.Clock // required
	// ConnRate and ConnBurst: connection attempts per second per source (token bucket): 50/s, 200.
	ConnRate  float64
	ConnBurst float64
	// ReqRate and ReqBurst: requests per second per source: 200/s, 1000.
	ReqRate  float64
	ReqBurst float64
	// MaxSources bounds the sources tracked (least recently seen forgotten first): 10000.
	MaxSources int
	// Cooldown between two findings for the same source and kind: 30 s.
	Cooldown time.Duration
}

func (c FloodConfig) withDefaults() (FloodConfig, error) {
	if c.Clock == nil {
		return c, fmt.Errorf("threat: flood detector needs a clock (clockwork.NewRealClock())")
	}
	def := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.ConnRate, 50)
	def(&c.ConnBurst, 200)
	def(&c.ReqRate, 200)
	def(&c.ReqBurst, 1000)
	if c.MaxSources <= 0 {
		c.MaxSources = 10000
	}
	if c.Cooldown <= 0 {
		c.Cooldown = 30 * time.Second
	}
	return c, nil
}

// FloodDetector keeps a token bucket per source for connections and for requests. Safe for
// concurrent use; memory bounded by MaxSources.
type FloodDetector struct {
	cfg FloodConfig

	mu      sync.Mutex
	sources map[string]*list.Element
	lru     list.List // of *floodSource
}

type bucket struct {
	tokens   float64
	last     time.Time
	reported time.Time
}

type floodSource struct {
	key       string
	conn, req bucket
}

// NewFlood builds the flood detector.
func NewFlood(cfg FloodConfig) (*FloodDetector, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &FloodDetector{cfg: cfg, sources: make(map[string]*list.Element)}, nil
}

// Connection accounts one connection attempt from src. ok is false when src is over its rate
// (the caller may refuse the connection); a finding is appended at most once per Cooldown.
func (f *FloodDetector) Connection(src string, dst []Finding) (bool, []Finding) {
	return f.take(src, true, dst)
}

// Request accounts one request (HTTP request, Redis command, DNS query...) from src.
func (f *FloodDetector) Request(src string, dst []Finding) (bool, []Finding) {
	return f.take(src, false, dst)
}

func (f *FloodDetector) take(src string, conn bool, dst []Finding) (bool, []Finding) {
	now := f.cfg.Clock.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.source(src, now)
	b, rate, burst, name := &s.req, f.cfg.ReqRate, f.cfg.ReqBurst, RequestFlood
	if conn {
		b, rate, burst, name = &s.conn, f.cfg.ConnRate, f.cfg.ConnBurst, ConnectionFlood
	}
	b.tokens += now.Sub(b.last).Seconds() * rate
	if b.tokens > burst {
		b.tokens = burst
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, dst
	}
	if b.reported.IsZero() || now.Sub(b.reported) >= f.cfg.Cooldown {
		b.reported = now
		dst = append(dst, NewFinding(name, "source:"+src, []byte(src),
			fmt.Sprintf("more than %.0f/s (burst %.0f) from %s", rate, burst, src)))
	}
	return false, dst
}

func (f *FloodDetector) source(src string, now time.Time) *floodSource {
	if e, ok := f.sources[src]; ok {
		f.lru.MoveToFront(e)
		return e.Value.(*floodSource)
	}
	var s *floodSource
	if f.lru.Len() >= f.cfg.MaxSources {
		e := f.lru.Back()
		s = e.Value.(*floodSource)
		delete(f.sources, s.key)
		f.lru.Remove(e)
	} else {
		s = new(floodSource)
	}
	*s = floodSource{key: src,
		conn: bucket{tokens: f.cfg.ConnBurst, last: now},
		req:  bucket{tokens: f.cfg.ReqBurst, last: now}}
	f.sources[src] = f.lru.PushFront(s)
	return s
}

// Tracked is how many sources are held.
func (f *FloodDetector) Tracked() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lru.Len()
}
