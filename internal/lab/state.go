package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/meshguard/meshguard/internal/fileutil"
)

// Resource names. Everything the lab creates carries one of these prefixes, so cleanup can
// find leftovers even when the state file missed them (crash between create and record).
const (
	DefaultStateDir = "/run/meshguard/lab"
	BridgeName      = "mg-br0"
	NFTTable        = "meshguard-lab"
	NetnsDir        = "/run/meshguard/netns" // pods' netns bind mounts: NetnsDir/mglab-<index>
	NetnsPrefix     = "mglab-"
	VethPrefix      = "mgv" // host side of a pod's veth pair: mgv<index>
	stateFileName   = "state.json"
	stateVersion    = 1
	maxPods         = 250
	maxServices     = 250
)

// Default address ranges. These addresses live only inside this machine's namespaces.
var (
	DefaultPodCIDR     = netip.MustParsePrefix("10.244.0.0/24")
	DefaultServiceCIDR = netip.MustParsePrefix("10.96.0.0/24")
)

// State is the lab's state file (<state dir>/state.json): what the lab is and every resource
// it made. The daemon rewrites it atomically whenever something changes; `lab down` and
// `lab up` (stale cleanup) read it. Other processes (controller, sidecars) read pods' labels,
// namespace, service account, IP and netns path from here.
type State struct {
	Version      int    `json:"version"`
	TopologyFile string `json:"topologyFile"`
	StateDir     string `json:"stateDir"`
	Phase        string `json:"phase"` // starting | ready | stopping
	// Daemon identifies the lab daemon; Start guards against pid reuse.
	Daemon      Proc   `json:"daemon"`
	Bridge      string `json:"bridge"`
	Gateway     string `json:"gateway"` // the bridge's address: DNS, controller API and identity listen here
	PodCIDR     string `json:"podCIDR"`
	ServiceCIDR string `json:"serviceCIDR"`
	DNS         string `json:"dns"` // host:port of the lab DNS server
	NFTTable    string `json:"nftTable"`
	// IPForwardWas is net.ipv4.ip_forward before the lab set it; restored by cleanup.
	IPForwardWas string          `json:"ipForwardWas,omitempty"`
	Pods         []PodState      `json:"pods"`
	Services     []ServiceState  `json:"services"`
	System       []SystemProcess `json:"system,omitempty"` // controller, later agents: see Launcher
	// Mesh is the topology's mesh-wide settings, for the controller the daemon starts.
	Mesh Mesh `json:"mesh,omitempty"`
	// DNSZones are the topology's delegated zones with their servers resolved to ip:port.
	DNSZones []ForwardZone `json:"dnsZones,omitempty"`
}

// ForwardZone is a zone the lab DNS server forwards to Server (ip:port) instead of answering.
type ForwardZone struct {
	Name   string `json:"name"`          // FQDN, lower-case, with the trailing dot
	Server string `json:"server"`        // ip:port
	Pod    string `json:"pod,omitempty"` // "namespace/name" when the topology named a pod
}

// Proc is a process the lab started. Start is the start time in clock ticks since boot
// (field 22 of /proc/PID/stat): a pid is only signalled when both still match.
type Proc struct {
	PID   int    `json:"pid,omitempty"`
	Start uint64 `json:"start,omitempty"`
}

// PodState is one pod: its identity, addresses, namespaces and process.
type PodState struct {
	Pod
	IP          string `json:"ip"`
	Hostname    string `json:"hostname"`
	Netns       string `json:"netns"`    // bind-mounted netns path, e.g. /run/netns/mglab-0
	HostVeth    string `json:"hostVeth"` // host side of the veth pair; the pod side is eth0
	Dir         string `json:"dir"`      // per-pod dir (resolv.conf, hosts, log, $MESHGUARD_POD_DIR)
	LogFile     string `json:"logFile"`
	Proc        Proc   `json:"proc"`
	State       string `json:"state"` // pending | running | exited | failed
	ExitCode    int    `json:"exitCode,omitempty"`
	Error       string `json:"error,omitempty"`
	SidecarProc *Proc  `json:"sidecarProc,omitempty"` // set when a SidecarLauncher started one
	SidecarLog  string `json:"sidecarLog,omitempty"`
}

// ServiceState is a service with its virtual IP and the endpoints (pod IPs) behind it.
type ServiceState struct {
	Service
	VIP       string   `json:"vip"`
	DNSName   string   `json:"dnsName"`
	Endpoints []string `json:"endpoints"`
}

// SystemProcess is a lab-managed process that is not a pod (controller now, others later).
type SystemProcess struct {
	Name    string `json:"name"`
	Proc    Proc   `json:"proc"`
	LogFile string `json:"logFile"`
	State   string `json:"state"`
}

// PodsDir holds the per-pod dirs. It sits beside the 0700 state dir, not inside it, so a pod
// running as an unprivileged uid can reach its own dir (0700, owned by that uid).
func PodsDir(stateDir string) string { return filepath.Clean(stateDir) + "-pods" }

// StatePath is the state file inside dir.
func StatePath(dir string) string { return filepath.Join(dir, stateFileName) }

// ReadState loads the state file; os.ErrNotExist (wrapped) when there is no lab.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(StatePath(dir))
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("lab state %s is corrupt (run 'meshguard lab down' to clean up): %w", StatePath(dir), err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("lab state %s has version %d, want %d (run 'meshguard lab down')", StatePath(dir), s.Version, stateVersion)
	}
	return &s, nil
}

// WriteState replaces the state file atomically (0600, in a 0700 dir).
func WriteState(dir string, s *State) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create lab state dir: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := fileutil.WriteAtomic(StatePath(dir), b, 0o600); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return nil
}

// FindPod resolves "name" or "namespace/name" to a pod; a bare name must be unique.
func (s *State) FindPod(ref string) (*PodState, error) {
	ns, name, qualified := strings.Cut(ref, "/")
	if !qualified {
		name, ns = ns, ""
	}
	var found []*PodState
	for i := range s.Pods {
		p := &s.Pods[i]
		if p.Name == name && (ns == "" || p.Namespace == ns) {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		known := make([]string, 0, len(s.Pods))
		for _, p := range s.Pods {
			known = append(known, p.Key())
		}
		return nil, fmt.Errorf("no pod %q in the lab (known: %s)", ref, strings.Join(known, ", "))
	default:
		keys := make([]string, len(found))
		for i, p := range found {
			keys[i] = p.Key()
		}
		return nil, fmt.Errorf("pod name %q is ambiguous (write namespace/name: %s)", ref, strings.Join(keys, ", "))
	}
}

// PodNetns returns the network namespace path of pod ref ("name" or "namespace/name") in the
// lab whose state lives in stateDir (lab.DefaultStateDir normally), e.g.
// /run/meshguard/netns/mglab-3. Open it with netns.GetFromPath.
func PodNetns(stateDir, ref string) (string, error) {
	s, err := ReadState(stateDir)
	if err != nil {
		return "", err
	}
	p, err := s.FindPod(ref)
	if err != nil {
		return "", err
	}
	return p.Netns, nil
}

// Plan assigns addresses and resource names to a validated topology: the gateway takes the
// pod CIDR's first address, pods the next ones in file order, services the service CIDR's
// addresses in file order. Deterministic, so the same file gives the same addresses.
func Plan(t *Topology, dir string, podCIDR, serviceCIDR netip.Prefix) (*State, error) {
	if err := checkCIDR("--pod-cidr", podCIDR); err != nil {
		return nil, err
	}
	if err := checkCIDR("--service-cidr", serviceCIDR); err != nil {
		return nil, err
	}
	if podCIDR.Overlaps(serviceCIDR) {
		return nil, fmt.Errorf("--pod-cidr %s overlaps --service-cidr %s (pick disjoint ranges)", podCIDR, serviceCIDR)
	}
	podIPs := newIPAM(podCIDR)
	gw, err := podIPs.next()
	if err != nil {
		return nil, err
	}
	s := &State{
		Version:      stateVersion,
		TopologyFile: t.File,
		StateDir:     dir,
		Phase:        "starting",
		Bridge:       BridgeName,
		Gateway:      gw.String(),
		PodCIDR:      podCIDR.Masked().String(),
		ServiceCIDR:  serviceCIDR.Masked().String(),
		DNS:          netip.AddrPortFrom(gw, 53).String(),
		NFTTable:     NFTTable,
		Mesh:         t.Mesh,
	}
	for i, p := range t.Pods {
		ip, err := podIPs.next()
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", t.File, p.Line, p.Field, err)
		}
		podDir := filepath.Join(PodsDir(dir), p.Namespace+"_"+p.Name)
		if c := p.Command[0]; strings.Contains(c, "/") && !filepath.IsAbs(c) {
			// A relative program path is relative to the topology file, not to the pod.
			abs, err := filepath.Abs(filepath.Join(filepath.Dir(t.File), c))
			if err != nil {
				return nil, err
			}
			p.Command = append([]string{abs}, p.Command[1:]...)
		}
		s.Pods = append(s.Pods, PodState{
			Pod:      p,
			IP:       ip.String(),
			Hostname: p.Name,
			Netns:    filepath.Join(NetnsDir, NetnsPrefix+strconv.Itoa(i)),
			HostVeth: VethPrefix + strconv.Itoa(i),
			Dir:      podDir,
			LogFile:  filepath.Join(podDir, "log"),
			State:    "pending",
		})
	}
	svcIPs := newIPAM(serviceCIDR)
	for _, svc := range t.Services {
		vip, err := svcIPs.next()
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", t.File, svc.Line, svc.Field, err)
		}
		ss := ServiceState{Service: svc, VIP: vip.String(), DNSName: svc.Name + "." + svc.Namespace + ".svc.cluster.local"}
		for _, p := range s.Pods {
			if svc.Selects(p.Pod) {
				ss.Endpoints = append(ss.Endpoints, p.IP)
			}
		}
		s.Services = append(s.Services, ss)
	}
	for _, z := range t.DNS.Zones {
		fz := ForwardZone{Name: z.Name, Server: z.Server}
		if strings.Contains(z.Server, "/") {
			p, err := s.FindPod(z.Server)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %s.server: %w", t.File, z.Line, z.Field, err)
			}
			fz.Pod, fz.Server = p.Key(), net.JoinHostPort(p.IP, "53")
		}
		s.DNSZones = append(s.DNSZones, fz)
	}
	return s, nil
}

func checkCIDR(flag string, p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("%s %s: want an IPv4 CIDR such as 10.244.0.0/24", flag, p)
	}
	if p.Bits() < 8 || p.Bits() > 29 {
		return fmt.Errorf("%s %s: prefix length must be between /8 and /29", flag, p)
	}
	return nil
}

// ipam hands out consecutive host addresses of a prefix, skipping network and broadcast.
type ipam struct {
	prefix netip.Prefix
	cur    netip.Addr
}

func newIPAM(p netip.Prefix) *ipam {
	p = p.Masked()
	return &ipam{prefix: p, cur: p.Addr()}
}

var errExhausted = errors.New("address range exhausted (use a larger CIDR or fewer pods/services)")

func (a *ipam) next() (netip.Addr, error) {
	n := a.cur.Next()
	if !n.IsValid() || !a.prefix.Contains(n) || !a.prefix.Contains(n.Next()) {
		return netip.Addr{}, errExhausted // the last address is broadcast
	}
	a.cur = n
	return n, nil
}
