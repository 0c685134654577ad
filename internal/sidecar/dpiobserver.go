package sidecar

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"

	"github.com/meshguard/meshguard/internal/dpi"
)

// dpiBudget bounds the bytes per direction a stream's DPI flow is fed: detection and the
// first messages are what reports need, and bulk transfers then cost nothing.
const dpiBudget = 64 << 10

// DPIInspector runs the DPI engine on every stream and annotates its report with the detected
// application protocol, a bounded L7 summary and, when the protocol is not the one its port
// suggests, mismatch=true.
func DPIInspector(eng *dpi.Engine) Inspector {
	return func(_ context.Context, s StreamInfo) StreamObserver {
		port := s.DestPort
		if port == 0 {
			port = s.Dest.Port()
		}
		return &dpiObserver{fl: eng.NewFlow(dpi.FlowInfo{Transport: dpi.TCP, ServerPort: port}, nil)}
	}
}

// dpiObserver feeds one flow from both copy goroutines; a Flow is not goroutine-safe.
type dpiObserver struct {
	mu  sync.Mutex
	fl  *dpi.Flow
	fed [2]int
}

func (o *dpiObserver) feed(dir dpi.Direction, p []byte) error {
	o.mu.Lock()
	if n := dpiBudget - o.fed[dir]; n > 0 {
		if len(p) > n {
			p = p[:n]
		}
		o.fed[dir] += len(p)
		o.fl.Feed(dir, p)
	}
	o.mu.Unlock()
	return nil
}

func (o *dpiObserver) FromClient(p []byte) error { return o.feed(dpi.ClientToServer, p) }
func (o *dpiObserver) FromServer(p []byte) error { return o.feed(dpi.ServerToClient, p) }

func (o *dpiObserver) Close() {
	o.mu.Lock()
	o.fl.Close()
	o.mu.Unlock()
}

// Annotate implements Annotator.
func (o *dpiObserver) Annotate(r *ConnReport) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if p := o.fl.Protocol(); p != "" && p != dpi.Unknown {
		r.AppProtocol = p
	}
	l7 := map[string]string{}
	if b, err := o.fl.Summary().MarshalJSON(); err == nil {
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) == nil {
			for k, raw := range m {
				var vs []string
				var counts map[string]int
				switch {
				case json.Unmarshal(raw, &vs) == nil:
					l7[k] = strings.Join(vs, ",")
				case json.Unmarshal(raw, &counts) == nil:
					for t, n := range counts {
						l7["messages."+t] = strconv.Itoa(n)
					}
				default:
					var s string
					if json.Unmarshal(raw, &s) == nil {
						l7[k] = s
					}
				}
			}
		}
	}
	if o.fl.Mismatch() {
		l7["mismatch"] = "true"
	}
	if len(l7) > 0 {
		r.L7 = l7
	}
}
