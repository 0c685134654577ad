package policy

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/dpi"
)

// Scale of the benchmark: 10,000 workloads, 2,000 groups, 20,000 rules.
const (
	benchWorkloads  = 10000
	benchGroups     = 2000
	benchRules      = 20000
	benchNamespaces = 100
)

// scaleSet builds groups in benchNamespaces namespaces and rules between groups of the same
// namespace, with a mix of ports, applications, L7 sections and deny rules.
func scaleSet() *Set {
	rng := rand.New(rand.NewPCG(1, 2))
	tm := func(k string) TypeMeta { return TypeMeta{APIVersion: APIVersion, Kind: k} }
	s := &Set{}
	perNS := benchGroups / benchNamespaces
	modes := []Mode{ModeDiscover, ModeMonitor, ModeProtect}
	for i := 0; i < benchGroups; i++ {
		ns := fmt.Sprintf("ns%d", i/perNS)
		s.Groups = append(s.Groups, Group{TypeMeta: tm(KindGroup),
			Metadata: ObjectMeta{Name: fmt.Sprintf("g%d", i%perNS), Namespace: ns},
			Spec:     GroupSpec{Selector: &LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("g%d", i%perNS)}}, Mode: modes[i%3]}})
	}
	apps := []string{"http", "redis", "postgres", "grpc", "dns", "any"}
	for i := 0; i < benchRules; i++ {
		to := i % benchGroups
		ns := to / perNS
		from := ns*perNS + rng.IntN(perNS)
		app := apps[i%len(apps)]
		nr := NetworkRule{TypeMeta: tm(KindNetworkRule),
			Metadata: ObjectMeta{Name: fmt.Sprintf("r%d", i), Namespace: fmt.Sprintf("ns%d", ns)},
			Spec: NetworkRuleSpec{
				From:         GroupRef{Group: fmt.Sprintf("g%d", from%perNS)},
				To:           GroupRef{Group: fmt.Sprintf("g%d", to%perNS)},
				Ports:        []string{fmt.Sprintf("tcp/%d", 1000+rng.IntN(50)), fmt.Sprintf("tcp/%d-%d", 8000, 8000+rng.IntN(100))},
				Applications: []string{app},
				Action:       ActionAllow,
				Priority:     rng.IntN(10),
			}}
		switch app {
		case "http":
			nr.Spec.L7 = &L7{HTTP: &HTTPMatch{Methods: []string{"GET", "POST"}, Paths: []string{"/api/", "/static/"}, Hosts: []string{"*.example.com"}}}
		case "redis":
			nr.Spec.L7 = &L7{Redis: &RedisMatch{DenyCommands: []string{"FLUSHALL", "CONFIG"}}}
		}
		if i%10 == 0 {
			nr.Spec.Action = ActionDeny
			nr.Spec.Priority = 100 // distinct from allow priorities: no conflicts
			nr.Spec.Ports = []string{fmt.Sprintf("tcp/%d", 2000+rng.IntN(50))}
		}
		s.NetworkRules = append(s.NetworkRules, nr)
	}
	return s
}

// benchInputs gives every workload its automatic group plus one shared group of its namespace
// and builds n inputs between workloads of one namespace (where the rules are).
func benchInputs(p *Policy, n int) []Input {
	rng := rand.New(rand.NewPCG(3, 4))
	perNS := benchGroups / benchNamespaces
	wl := make([][]GroupID, benchWorkloads)
	wlNS := make([]int, benchWorkloads)
	for w := range wl {
		ns := w % benchNamespaces
		g1 := ns*perNS + rng.IntN(perNS)
		g2 := ns*perNS + rng.IntN(perNS)
		wl[w] = p.GroupIDsOf(nil, Key(fmt.Sprintf("ns%d", ns), fmt.Sprintf("g%d", g1%perNS)), Key(fmt.Sprintf("ns%d", ns), fmt.Sprintf("g%d", g2%perNS)))
		wlNS[w] = ns
	}
	byNS := make([][]int, benchNamespaces)
	for w, ns := range wlNS {
		byNS[ns] = append(byNS[ns], w)
	}
	apps := []string{"http", "redis", "postgres", "grpc", "dns", ""}
	msgs := []*dpi.Message{nil, msg("request", dpi.AttrMethod, "GET", dpi.AttrPath, "/api/v1/items", dpi.AttrHost, "www.example.com"),
		msg("command", dpi.AttrCommand, "FLUSHALL"), msg("command", dpi.AttrCommand, "GET")}
	in := make([]Input, n)
	for i := range in {
		src := rng.IntN(benchWorkloads)
		peers := byNS[wlNS[src]]
		dst := peers[rng.IntN(len(peers))]
		port := uint16(1000 + rng.IntN(60))
		if i%3 == 0 {
			port = uint16(8000 + rng.IntN(100))
		}
		app := apps[rng.IntN(len(apps))]
		var m *dpi.Message
		switch app {
		case "http":
			m = msgs[rng.IntN(2)]
		case "redis":
			m = msgs[2+rng.IntN(2)]
		}
		in[i] = Input{SrcGroups: wl[src], DstGroups: wl[dst], Port: port, Transport: dpi.TCP, App: app, L7: m}
	}
	return in
}

func BenchmarkCompile(b *testing.B) {
	s := scaleSet()
	b.ReportAllocs()
	var p *Policy
	for b.Loop() {
		var err error
		if p, err = Compile(s, CompileOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	_ = p
	// Memory held by one compiled policy (documents excluded: they are the store's).
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	p, _ = Compile(s, CompileOptions{})
	runtime.GC()
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/(1<<20), "policy-MB")
	runtime.KeepAlive(p)
}

func BenchmarkValidate(b *testing.B) {
	s := scaleSet()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	p, err := Compile(scaleSet(), CompileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ins := benchInputs(p, 1<<16)
	var allow int
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if p.Decide(&ins[i&(len(ins)-1)]).Verdict == Allow {
			allow++
		}
		i++
	}
	// CPU time of this thread per decision: unlike ns/op, not inflated by waiting for a CPU
	// on a shared machine.
	b.ReportMetric(float64(threadCPU()-cpu0)/float64(i), "cpu-ns/op")
	b.ReportMetric(float64(allow)/float64(i), "allow-ratio")
}

// BenchmarkDecideP99 times every call and reports the 99th percentile (timer overhead
// included, so the real figure is lower).
func BenchmarkDecideP99(b *testing.B) {
	p, err := Compile(scaleSet(), CompileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ins := benchInputs(p, 1<<16)
	lat := make([]time.Duration, 0, 1<<20)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		t0 := time.Now()
		p.Decide(&ins[i&(len(ins)-1)])
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(t0))
		}
		i++
	}
	slices.Sort(lat)
	// The cost of the timing itself, to read the percentiles against.
	empty := make([]time.Duration, 0, 1<<16)
	for len(empty) < cap(empty) {
		t0 := time.Now()
		empty = append(empty, time.Since(t0))
	}
	slices.Sort(empty)
	b.ReportMetric(float64(empty[len(empty)*99/100].Nanoseconds()), "timer-p99-ns")
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
		b.ReportMetric(float64(lat[len(lat)*999/1000].Nanoseconds()), "p99.9-ns")
	}
}

func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

const rusageThread = 1 // RUSAGE_THREAD (Linux)

func TestDecideAllocatesNothing(t *testing.T) {
	p, err := Compile(scaleSet(), CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ins := benchInputs(p, 1024)
	i := 0
	if a := testing.AllocsPerRun(2000, func() { p.Decide(&ins[i&1023]); i++ }); a != 0 {
		t.Fatalf("Decide allocates %v per call", a)
	}
}

// BenchmarkDecideSidecar is the steady state of one sidecar: its own destination groups and a
// handful of peers, so the policy data it touches stays in cache.
func BenchmarkDecideSidecar(b *testing.B) {
	p, err := Compile(scaleSet(), CompileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	all := benchInputs(p, 1<<16)
	dst := all[0].DstGroups
	var ins []Input
	for i := range all {
		if slices.Equal(all[i].DstGroups, dst) {
			ins = append(ins, all[i])
		}
	}
	for len(ins) < 64 {
		ins = append(ins, ins...)
	}
	ins = ins[:64]
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p.Decide(&ins[i&63])
		i++
	}
	b.ReportMetric(float64(threadCPU()-cpu0)/float64(i), "cpu-ns/op")
}
