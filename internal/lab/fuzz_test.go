package lab

import (
	"strings"
	"testing"
)

func FuzzParseTopology(f *testing.F) {
	f.Add([]byte(goodTopology))
	f.Add([]byte("pods:\n  - name: a\n    command: [x]\n"))
	f.Add([]byte("pods:\n  - name: a\n    labels: &l {app: a}\n    command: [x]\n  - name: b\n    labels: *l\n"))
	f.Add([]byte("pods: [{name: a, command: [x], replicas: 64}]\nservices: [{name: s, selector: {app: a}, ports: [{port: 1}]}]\n"))
	f.Add([]byte("pods: [{name: d, namespace: ext, command: [x]}]\ndns: {zones: [{name: t.example.net, server: ext/d}, {name: x.org., server: \"10.0.0.9:53\"}]}\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		topo, err := ParseTopology("f.yaml", data, nil)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml:") {
				t.Fatalf("error without file:line: %q", err)
			}
			return
		}
		if len(topo.Pods) == 0 || len(topo.Pods) > maxPods {
			t.Fatalf("accepted %d pods", len(topo.Pods))
		}
		for _, z := range topo.DNS.Zones {
			if !strings.HasSuffix(z.Name, ".") || z.Server == "" {
				t.Fatalf("accepted zone %+v", z)
			}
		}
		seen := map[string]bool{}
		for _, p := range topo.Pods {
			if seen[p.Key()] || len(p.Command) == 0 {
				t.Fatalf("accepted duplicate or commandless pod %q", p.Key())
			}
			seen[p.Key()] = true
		}
	})
}
