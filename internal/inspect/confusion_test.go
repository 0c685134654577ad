package inspect

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

type ltFrame struct {
	lt   layers.LinkType
	data []byte
	ts   time.Time
}

// readAnyCapture reads every frame of a pcap or pcapng file with its link type.
func readAnyCapture(t testing.TB, path string) []ltFrame {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []ltFrame
	if bytes.HasPrefix(b, []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		r, err := pcapgo.NewNgReader(bytes.NewReader(b), pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			t.Fatal(err)
		}
		for {
			data, ci, err := r.ReadPacketData()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
				return out
			}
			iface, err := r.Interface(ci.InterfaceIndex)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, ltFrame{iface.LinkType, data, ci.Timestamp})
		}
	}
	r, err := pcapgo.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			return out
		}
		out = append(out, ltFrame{r.LinkType(), data, ci.Timestamp})
	}
}

// frameFlow names the flow a frame belongs to (both directions alike); "" when the frame is
// not a TCP/UDP/ICMP packet on its own (fragments, ARP...).
func frameFlow(f ltFrame) string {
	ip, ok := decodeLink(f.lt, f.data)
	if !ok {
		return ""
	}
	var p packetInfo
	if decodeIP(ip, &p, nil, f.ts, len(f.data)) != ipOK {
		return ""
	}
	k := keyOf(&p)
	return fmt.Sprintf("%v %v %v", k.t, k.lo, k.hi)
}

func reportFlow(r Report) string {
	a, b := r.Src, r.Dst
	if r.Transport == "icmp" || r.Transport == "icmpv6" {
		a, b = a+":0", b+":0"
	}
	e := []string{a, b}
	sort.Strings(e)
	tr := r.Transport
	if tr == "icmpv6" {
		tr = "icmp"
	}
	return tr + " " + e[0] + " " + e[1]
}

func runFrames(t testing.TB, in *Inspector, frames []ltFrame) []Report {
	tb := newTable(in.cfg)
	for _, f := range frames {
		tb.packet(f.lt, f.data, len(f.data), f.ts)
	}
	return tb.finish()
}

// TestConfusion is the accuracy contract for captures seen from the middle or with loss: every
// golden capture is replayed with each flow's first N packets removed (N = 1..4, so the
// handshake and first messages are missed) and with seeded random packet drops. A flow may
// then be reported as its real protocol or as unknown, never as another protocol.
func TestConfusion(t *testing.T) {
	in := newInspector(t)
	type tally struct{ right, unknown int }
	recall := map[string]*tally{} // per protocol, over every damaged variant (go test -v shows it)
	defer func() {
		names := make([]string, 0, len(recall))
		for n := range recall {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			r := recall[n]
			t.Logf("%-10s named right in %4d of %4d damaged flows (the rest: unknown)", n, r.right, r.right+r.unknown)
		}
	}()
	for _, path := range captures(t) {
		frames := readAnyCapture(t, path)
		keys := make([]string, len(frames))
		for i, f := range frames {
			keys[i] = frameFlow(f)
		}
		truth := map[string]map[string]bool{} // flow -> protocols the full capture shows
		for _, r := range runFrames(t, in, frames) {
			k := reportFlow(r)
			if truth[k] == nil {
				truth[k] = map[string]bool{}
			}
			truth[k][r.Protocol] = true
			if slices.Contains(r.L7.Values("method"), "CONNECT") {
				// A proxy tunnel carries another protocol after the CONNECT: with the
				// request lost, naming what is inside (TLS, say) is right too.
				truth[k]["tls"], truth[k]["ssh"] = true, true
			}
		}
		check := func(variant string, kept []ltFrame) {
			for _, r := range runFrames(t, in, kept) {
				want := truth[reportFlow(r)]
				if len(want) == 1 && !want["unknown"] {
					for p := range want {
						if recall[p] == nil {
							recall[p] = &tally{}
						}
						if r.Protocol == p {
							recall[p].right++
						} else {
							recall[p].unknown++
						}
					}
				}
				if r.Protocol == "unknown" {
					continue
				}
				if want == nil {
					// A flow the full capture does not have: only possible when dropping
					// changed how fragments or ports pair up; it must then be unknown.
					t.Errorf("%s %s: new flow %s -> %s reported as %s", path, variant, r.Src, r.Dst, r.Protocol)
					continue
				}
				if !want[r.Protocol] {
					t.Errorf("%s %s: flow %s -> %s reported as %s, the full capture says %v",
						path, variant, r.Src, r.Dst, r.Protocol, want)
				}
			}
		}
		// Reordering and duplication alone lose nothing: reassembly must give back the same
		// protocol for every flow.
		for seed := uint64(1); seed <= 4; seed++ {
			rng := rand.New(rand.NewPCG(seed, 0x72656f72))
			mixed := append([]ltFrame(nil), frames...)
			for i := 0; i+1 < len(mixed); i++ {
				if rng.IntN(4) == 0 {
					mixed[i], mixed[i+1] = mixed[i+1], mixed[i]
					i++
				}
			}
			var out []ltFrame
			for _, f := range mixed {
				out = append(out, f)
				if rng.IntN(6) == 0 {
					out = append(out, f) // a retransmission
				}
			}
			for _, r := range runFrames(t, in, out) {
				if want := truth[reportFlow(r)]; !want[r.Protocol] {
					t.Errorf("%s seed %d reordered+duplicated: flow %s -> %s reported as %s, the full capture says %v",
						path, seed, r.Src, r.Dst, r.Protocol, want)
				}
			}
		}
		for n := 1; n <= 4; n++ {
			seen := map[string]int{}
			var kept []ltFrame
			for i, f := range frames {
				if k := keys[i]; k != "" {
					seen[k]++
					if seen[k] <= n {
						continue
					}
				}
				kept = append(kept, f)
			}
			check(fmt.Sprintf("first %d packets removed", n), kept)
		}
		for seed := uint64(1); seed <= 40; seed++ {
			loss := 5 + int(seed%4)*10 // 5%, 15%, 25%, 35%
			rng := rand.New(rand.NewPCG(seed, 0x6d657368))
			var kept []ltFrame
			for _, f := range frames {
				if rng.IntN(100) >= loss {
					kept = append(kept, f)
				}
			}
			check(fmt.Sprintf("seed %d %d%% dropped", seed, loss), kept)
			// Drops and a late start together.
			skip := rng.IntN(6)
			check(fmt.Sprintf("seed %d %d%% dropped, first %d frames missed", seed, loss, skip), kept[min(skip, len(kept)):])
		}
	}
}

// TestMidstreamOrientation: a gRPC flow (server 50051, client 38572: both above 32768, and the
// client's port is the lower) picked up after its handshake is still oriented to the server,
// because 50051 is a port a protocol claims.
func TestMidstreamOrientation(t *testing.T) {
	frames := readAnyCapture(t, "testdata/http2/grpc-health-50051.pcap")
	got := runFrames(t, newInspector(t), frames[3:])
	if len(got) == 0 || got[0].Dst != "127.0.0.8:50051" {
		t.Fatalf("got %+v, want the flow oriented to 127.0.0.8:50051", got)
	}
}
