package capture

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStorePut stores uploaded pcaps: 0600 files, Bytes from the data, bounds applied, bad
// and duplicate IDs refused.
func TestStorePut(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "captures")
	s, err := OpenStore(dir, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var ids []string
	for i := range 3 {
		id := newID(base.Add(time.Duration(i) * time.Second))
		pcap := bytes.Repeat([]byte{byte(i)}, 100+i)
		info, err := s.Put(Info{ID: id, Created: base.Add(time.Duration(i) * time.Second), Workload: "shop/web-0", Reason: "sqli"}, bytes.NewReader(pcap))
		if err != nil {
			t.Fatal(err)
		}
		if info.Bytes != int64(len(pcap)) {
			t.Fatalf("bytes = %d, want %d", info.Bytes, len(pcap))
		}
		ids = append(ids, id)
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != ids[1] || list[1].ID != ids[2] {
		t.Fatalf("retention kept %+v, want the newest two of %v", list, ids)
	}
	for _, ext := range []string{".pcap", ".json"} {
		st, err := os.Stat(filepath.Join(dir, ids[2]+ext))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want 0600", ext, st, err)
		}
	}
	rc, err := s.Open(ids[2])
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, bytes.Repeat([]byte{2}, 102)) {
		t.Fatalf("stored pcap differs: %d bytes", len(got))
	}
	if _, err := s.Put(Info{ID: ids[2]}, strings.NewReader("x")); err == nil {
		t.Fatal("a second upload with the same id overwrote the capture")
	}
	for _, bad := range []string{"", "../../etc/passwd", "20260101T000000Z-XYZ"} {
		if _, err := s.Put(Info{ID: bad}, strings.NewReader("x")); err == nil {
			t.Fatalf("id %q accepted", bad)
		}
	}
}
