package lab

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
)

const goodTopology = `pods:
  - name: web                 # replicas get -0, -1 suffixes
    namespace: shop
    serviceAccount: web
    labels: {app: web}
    command: ["python3", "-m", "http.server", "8080"]
    user: 1000
    replicas: 2
    sidecar: true
  - name: client
    namespace: shop
    command: ["sleep", "infinity"]
    sidecar: false
services:
  - name: web
    namespace: shop
    selector: {app: web}
    ports: [{port: 80, targetPort: 8080}]
`

func TestParseTopologyGood(t *testing.T) {
	topo, err := ParseTopology("shop.yaml", []byte(goodTopology), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.Pods) != 3 {
		t.Fatalf("want 3 pods after replica expansion, got %d", len(topo.Pods))
	}
	w0, w1, c := topo.Pods[0], topo.Pods[1], topo.Pods[2]
	if w0.Name != "web-0" || w1.Name != "web-1" || c.Name != "client" {
		t.Fatalf("names: %q %q %q", w0.Name, w1.Name, c.Name)
	}
	if w0.UID != 1000 || w0.ServiceAccount != "web" || w0.Labels["app"] != "web" || !w0.Sidecar {
		t.Fatalf("web-0 fields: %+v", w0)
	}
	if c.Sidecar || c.ServiceAccount != "default" || c.UID != 0 {
		t.Fatalf("client defaults: %+v", c)
	}
	if got := topo.Services[0].Ports; len(got) != 1 || got[0] != (ServicePort{Port: 80, TargetPort: 8080}) {
		t.Fatalf("ports: %+v", got)
	}
}

func TestParseTopologyUserName(t *testing.T) {
	src := "pods:\n  - name: db\n    command: [postgres]\n    user: postgres\n"
	lookup := func(name string) (uint32, uint32, error) {
		if name == "postgres" {
			return 101, 104, nil
		}
		return 0, 0, errors.New("unknown")
	}
	topo, err := ParseTopology("t.yaml", []byte(src), lookup)
	if err != nil {
		t.Fatal(err)
	}
	if p := topo.Pods[0]; p.UID != 101 || p.GID != 104 || p.Namespace != "default" {
		t.Fatalf("pod: %+v", p)
	}
	_, err = ParseTopology("t.yaml", []byte(strings.Replace(src, "postgres\n", "nosuchuser\n", 1)), lookup)
	wantErr(t, err, "t.yaml:4: pods[0].user: unknown user")
}

func wantErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want error containing %q, got nil", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not contain %q", err, w)
		}
	}
}

func TestParseTopologyMistakes(t *testing.T) {
	cases := []struct {
		name, src string
		want      []string
	}{
		{"unknown top field", "pods:\n  - name: a\n    command: [x]\nservice: []\n", []string{"t.yaml:4: service: unknown field"}},
		{"unknown pod field", "pods:\n  - name: a\n    command: [x]\n    image: nginx\n", []string{"t.yaml:4: pods[0].image: unknown field (known: name,"}},
		{"unknown port field", "pods:\n  - name: a\n    labels: {app: a}\n    command: [x]\nservices:\n  - name: s\n    selector: {app: a}\n    ports:\n      - port: 80\n        protocol: TCP\n", []string{"t.yaml:10: services[0].ports[0].protocol: unknown field"}},
		{"duplicate pod", "pods:\n  - name: a\n    command: [x]\n  - name: a\n    command: [y]\n", []string{"t.yaml:4: pods[1].name: duplicate pod \"default/a\" (first defined at line 2"}},
		{"duplicate after replicas", "pods:\n  - name: a\n    replicas: 2\n    command: [x]\n  - name: a-1\n    command: [y]\n", []string{"t.yaml:5: pods[1].name: duplicate pod \"default/a-1\""}},
		{"same name other namespace ok but service selects nothing", "pods:\n  - name: a\n    namespace: x\n    labels: {app: a}\n    command: [x]\nservices:\n  - name: s\n    namespace: y\n    selector: {app: a}\n    ports: [{port: 80}]\n", []string{"t.yaml:7: services[0].selector: service \"y/s\" selects no pod"}},
		{"duplicate port", "pods:\n  - name: a\n    labels: {app: a}\n    command: [x]\nservices:\n  - name: s\n    selector: {app: a}\n    ports: [{port: 80}, {port: 80, targetPort: 81}]\n", []string{"t.yaml:8: services[0].ports[1].port: port 80 is listed twice"}},
		{"port clash across services", "pods:\n  - name: a\n    labels: {app: a, tier: x}\n    command: [x]\nservices:\n  - name: s\n    selector: {app: a}\n    ports: [{port: 80, targetPort: 8080}]\n  - name: t\n    selector: {tier: x}\n    ports: [{port: 80, targetPort: 9090}]\n", []string{"t.yaml:9: services[1].ports: port 80 of pod \"default/a\" maps to targetPort 9090 here but to 8080"}},
		{"bad name", "pods:\n  - name: Web_1\n    command: [x]\n", []string{"t.yaml:2: pods[0].name: \"Web_1\" is not a DNS-1123 label"}},
		{"bad namespace", "pods:\n  - name: a\n    namespace: -x\n    command: [x]\n", []string{"t.yaml:3: pods[0].namespace:"}},
		{"long replica name", "pods:\n  - name: " + strings.Repeat("a", 62) + "\n    replicas: 2\n    command: [x]\n", []string{"pods[0].name: with replica suffix"}},
		{"bad uid", "pods:\n  - name: a\n    command: [x]\n    user: -1\n", []string{"t.yaml:4: pods[0].user: -1 is out of range"}},
		{"uid too big", "pods:\n  - name: a\n    command: [x]\n    user: 4294967295\n", []string{"t.yaml:4: pods[0].user:"}},
		{"user name without lookup", "pods:\n  - name: a\n    command: [x]\n    user: bob\n", []string{"t.yaml:4: pods[0].user:"}},
		{"empty command", "pods:\n  - name: a\n    command: []\n", []string{"t.yaml:3: pods[0].command: empty"}},
		{"blank program", "pods:\n  - name: a\n    command: [\"  \"]\n", []string{"t.yaml:3: pods[0].command[0]:"}},
		{"missing command", "pods:\n  - name: a\n", []string{"t.yaml:2: pods[0].command: missing"}},
		{"command not a list", "pods:\n  - name: a\n    command: sleep 1\n", []string{"t.yaml:3: pods[0].command: want a list"}},
		{"replicas zero", "pods:\n  - name: a\n    command: [x]\n    replicas: 0\n", []string{"t.yaml:4: pods[0].replicas: 0 is out of range"}},
		{"sidecar not bool", "pods:\n  - name: a\n    command: [x]\n    sidecar: yes please\n", []string{"t.yaml:4: pods[0].sidecar: want true or false"}},
		{"bad label", "pods:\n  - name: a\n    labels: {app: \"a b\"}\n    command: [x]\n", []string{"t.yaml:3: pods[0].labels.app: label value"}},
		{"port out of range", "pods:\n  - name: a\n    labels: {app: a}\n    command: [x]\nservices:\n  - name: s\n    selector: {app: a}\n    ports: [{port: 70000}]\n", []string{"t.yaml:8: services[0].ports[0].port: 70000 is out of range"}},
		{"empty selector", "pods:\n  - name: a\n    command: [x]\nservices:\n  - name: s\n    selector: {}\n    ports: [{port: 80}]\n", []string{"t.yaml:6: services[0].selector: empty"}},
		{"duplicate service", "pods:\n  - name: a\n    labels: {app: a}\n    command: [x]\nservices:\n  - name: s\n    selector: {app: a}\n    ports: [{port: 80}]\n  - name: s\n    selector: {app: a}\n    ports: [{port: 81}]\n", []string{"t.yaml:9: services[1].name: duplicate service \"default/s\""}},
		{"duplicate key", "pods:\n  - name: a\n    name: b\n    command: [x]\n", []string{"t.yaml:3: pods[0].name: field given twice"}},
		{"alias", "pods:\n  - name: a\n    labels: &l {app: a}\n    command: [x]\n  - name: b\n    labels: *l\n    command: [x]\n", []string{"t.yaml:6: pods[1].labels: YAML aliases are not supported"}},
		{"no pods", "services: []\n", []string{"t.yaml:1: pods: missing"}},
		{"empty file", "", []string{"t.yaml:1: empty topology"}},
		{"bad yaml", "pods:\n  - name: [\n", []string{"t.yaml:"}},
		{"bad egress", "pods:\n  - name: a\n    command: [x]\nmesh:\n  egress: ALLOW_ANY\n", []string{"t.yaml:5: mesh.egress: \"ALLOW_ANY\" is not an egress mode (want allow-any or registry-only)"}},
		{"unknown mesh field", "pods:\n  - name: a\n    command: [x]\nmesh: {mtls: permissive}\n", []string{"t.yaml:4: mesh.mtls: unknown field (known: permissiveNamespaces, egress, threatDetection)"}},
		{"bad permissive namespace", "pods:\n  - name: a\n    command: [x]\nmesh:\n  permissiveNamespaces: [legacy, Bad_NS]\n", []string{"t.yaml:5: mesh.permissiveNamespaces[1]:"}},
		{"permissive not a list", "pods:\n  - name: a\n    command: [x]\nmesh:\n  permissiveNamespaces: legacy\n", []string{"t.yaml:5: mesh.permissiveNamespaces: want a list"}},
		{"two docs", "pods:\n  - name: a\n    command: [x]\n---\npods: []\n", []string{"more than one YAML document"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTopology("t.yaml", []byte(tc.src), nil)
			wantErr(t, err, tc.want...)
		})
	}
}

func TestParseTopologyReportsAllMistakes(t *testing.T) {
	src := "pods:\n  - name: a\n    image: x\n    command: [x]\n  - name: B\n    command: [y]\n"
	_, err := ParseTopology("t.yaml", []byte(src), nil)
	wantErr(t, err, "t.yaml:3: pods[0].image: unknown field", "t.yaml:5: pods[1].name:")
}

func TestPlanAddresses(t *testing.T) {
	topo, err := ParseTopology("/topo/shop.yaml", []byte(goodTopology), nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Plan(topo, "/run/x/lab", DefaultPodCIDR, DefaultServiceCIDR)
	if err != nil {
		t.Fatal(err)
	}
	if st.Gateway != "10.244.0.1" || st.DNS != "10.244.0.1:53" {
		t.Fatalf("gateway %s dns %s", st.Gateway, st.DNS)
	}
	var ips []string
	for _, p := range st.Pods {
		ips = append(ips, p.IP)
	}
	if got := strings.Join(ips, ","); got != "10.244.0.2,10.244.0.3,10.244.0.4" {
		t.Fatalf("pod ips %s", got)
	}
	if p := st.Pods[1]; p.Netns != "/run/meshguard/netns/mglab-1" || p.HostVeth != "mgv1" || p.Dir != "/run/x/lab-pods/shop_web-1" || p.Hostname != "web-1" {
		t.Fatalf("pod 1 names: %+v", p)
	}
	sv := st.Services[0]
	if sv.VIP != "10.96.0.1" || sv.DNSName != "web.shop.svc.cluster.local" || strings.Join(sv.Endpoints, ",") != "10.244.0.2,10.244.0.3" {
		t.Fatalf("service: %+v", sv)
	}
	if _, err := Plan(topo, "/x", DefaultPodCIDR, netip.MustParsePrefix("10.244.0.0/16")); err == nil {
		t.Fatal("overlapping CIDRs accepted")
	}
	// /29: gateway + 5 pods fit (network and broadcast excluded); 6 do not.
	small := netip.MustParsePrefix("10.1.0.0/29")
	if _, err := Plan(topo, "/x", small, DefaultServiceCIDR); err != nil {
		t.Fatalf("3 pods in a /29: %v", err)
	}
	big := &Topology{File: "t.yaml"}
	for i := 0; i < 6; i++ {
		big.Pods = append(big.Pods, Pod{Name: "p", Command: []string{"x"}})
	}
	if _, err := Plan(big, "/x", small, DefaultServiceCIDR); err == nil || !strings.Contains(err.Error(), "exhausted") {
		t.Fatalf("6 pods in a /29: %v", err)
	}
}

func TestPlanRelativeCommand(t *testing.T) {
	src := "pods:\n  - name: db\n    command: [\"./pg.sh\", \"-x\"]\n"
	topo, err := ParseTopology("/srv/examples/shop.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Plan(topo, "/x", DefaultPodCIDR, DefaultServiceCIDR)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(st.Pods[0].Command, " "); got != "/srv/examples/pg.sh -x" {
		t.Fatalf("command %q", got)
	}
}

func TestFindPod(t *testing.T) {
	s := &State{Pods: []PodState{
		{Pod: Pod{Name: "web", Namespace: "a"}},
		{Pod: Pod{Name: "web", Namespace: "b"}},
		{Pod: Pod{Name: "db", Namespace: "a"}},
	}}
	if p, err := s.FindPod("db"); err != nil || p.Key() != "a/db" {
		t.Fatalf("db: %v %v", p, err)
	}
	if p, err := s.FindPod("b/web"); err != nil || p.Key() != "b/web" {
		t.Fatalf("b/web: %v %v", p, err)
	}
	if _, err := s.FindPod("web"); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Fatalf("web: %v", err)
	}
	if _, err := s.FindPod("nope"); err == nil || !strings.Contains(err.Error(), "known: a/web, b/web, a/db") {
		t.Fatalf("nope: %v", err)
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	topo, err := ParseTopology("t.yaml", []byte(goodTopology), nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Plan(topo, dir, DefaultPodCIDR, DefaultServiceCIDR)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteState(dir, st); err != nil {
		t.Fatal(err)
	}
	got, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Pods[0].Labels["app"] != "web" || got.Pods[0].ServiceAccount != "web" || got.Services[0].VIP != "10.96.0.1" {
		t.Fatalf("round trip lost fields: %+v", got.Pods[0])
	}
	if _, err := ReadState(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing state: %v", err)
	}
}

func TestParseTopologyMesh(t *testing.T) {
	src := goodTopology + "mesh:\n  permissiveNamespaces: [legacy, shop]\n  egress: allow-any\n"
	topo, err := ParseTopology("shop.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := topo.Mesh; len(m.PermissiveNamespaces) != 2 || m.PermissiveNamespaces[0] != "legacy" || m.Egress != "allow-any" {
		t.Fatalf("mesh: %+v", m)
	}
	st, err := Plan(topo, t.TempDir(), DefaultPodCIDR, DefaultServiceCIDR)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mesh.Egress != "allow-any" || len(st.Mesh.PermissiveNamespaces) != 2 {
		t.Fatalf("the plan lost the mesh settings the daemon passes to the controller: %+v", st.Mesh)
	}
	plain, err := ParseTopology("shop.yaml", []byte(goodTopology), nil)
	if err != nil || plain.Mesh.Egress != "" || plain.Mesh.PermissiveNamespaces != nil {
		t.Fatalf("without mesh: %+v %v (want defaults)", plain.Mesh, err)
	}
}

func TestParseTopologyThreatDetection(t *testing.T) {
	off, err := ParseTopology("t.yaml", []byte(goodTopology+"mesh: {threatDetection: false}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Plan(off, t.TempDir(), DefaultPodCIDR, DefaultServiceCIDR)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Mesh.ThreatDetectionOff {
		t.Fatalf("threatDetection: false did not reach the state the sidecar launcher reads: %+v", st.Mesh)
	}
	for _, src := range []string{goodTopology, goodTopology + "mesh: {threatDetection: true}\n"} {
		on, err := ParseTopology("t.yaml", []byte(src), nil)
		if err != nil || on.Mesh.ThreatDetectionOff {
			t.Fatalf("default or true: %+v %v (want detection on)", on.Mesh, err)
		}
	}
	_, err = ParseTopology("t.yaml", []byte(goodTopology+"mesh:\n  threatDetection: \"no\"\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "t.yaml:20: mesh.threatDetection: want true or false") {
		t.Fatalf("quoted string: %v, want a file:line error", err)
	}
}
