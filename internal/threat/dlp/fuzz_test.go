package dlp

import "testing"

func FuzzDLP(f *testing.F) {
	f.Add([]byte("4111 1111 1111 1111 123-45-6789 DE89 3704 0044 0532 0130 00 AKIAIOSFODNN7EXAMPLE"))
	f.Add([]byte("-----BEGIN PRIVATE KEY----- ghp_0123456789abcdefghijklmnopqrstuvwxyZ a@b.co"))
	s, err := New(Config{Patterns: Patterns(), MaxScan: 4096})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, fd := range s.Scan(b, "body", nil) {
			if len(fd.Evidence) > 256 {
				t.Fatalf("evidence too long: %d", len(fd.Evidence))
			}
		}
	})
}
