package sidecar

import (
	"net"
	"strconv"
	"testing"
)

// FuzzAuthorityPort: the CONNECT authority comes from the peer; parsing must never panic and
// must only ever yield a port the authority really names.
func FuzzAuthorityPort(f *testing.F) {
	for _, s := range []string{":8080", "127.0.0.1:8080", "[::1]:443", "host", ":0", ":65536", "::::", "[::1", ":-1", ":+80", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		port, err := authorityPort(s)
		if err != nil {
			return
		}
		_, ps, serr := net.SplitHostPort(s)
		if serr != nil || port == 0 {
			t.Fatalf("accepted %q as port %d", s, port)
		}
		if n, _ := strconv.ParseUint(ps, 10, 16); uint16(n) != port {
			t.Fatalf("%q: port %d, authority says %q", s, port, ps)
		}
	})
}
