package inspect

import (
	"bytes"
	"context"
	"flag"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshguard/meshguard/internal/dpi"
)

var update = flag.Bool("update", false, "rewrite testdata/**/*.golden.jsonl from the current output")

func newInspector(t testing.TB) *Inspector {
	t.Helper()
	eng, err := dpi.New(dpi.Config{Protocols: dpi.DefaultProtocols()})
	if err != nil {
		t.Fatal(err)
	}
	in, err := New(Config{Engine: eng, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// captures lists every capture under testdata (any protocol's directory).
func captures(t testing.TB) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir("testdata", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "gen" {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, ".pcap") || strings.HasSuffix(path, ".pcapng") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func jsonLines(t testing.TB, flows []Report) []byte {
	t.Helper()
	var b bytes.Buffer
	for i := range flows {
		line, err := flows[i].MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// TestGolden runs inspect over every capture in testdata and compares with the sibling
// .golden.jsonl file. Regenerate with: go test ./internal/inspect -run TestGolden -update
func TestGolden(t *testing.T) {
	files := captures(t)
	if len(files) == 0 {
		t.Fatal("no captures under testdata")
	}
	for _, path := range files {
		t.Run(path, func(t *testing.T) {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			res, err := newInspector(t).Read(context.Background(), f)
			if err != nil {
				t.Fatalf("inspect %s: %v", path, err)
			}
			got := jsonLines(t, res.Flows)
			golden := strings.TrimSuffix(strings.TrimSuffix(path, ".pcapng"), ".pcap") + ".golden.jsonl"
			if strings.HasSuffix(path, ".pcapng") {
				golden = strings.TrimSuffix(path, ".pcapng") + ".pcapng.golden.jsonl"
			}
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (create it with -update and review the diff)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s\n--- got\n%s--- want\n%s", path, golden, got, want)
			}
		})
	}
}
