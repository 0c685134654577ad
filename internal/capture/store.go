package capture

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Info describes one stored capture; it is written next to the pcap as ID.json.
type Info struct {
	ID          string    `json:"id"`
	Created     time.Time `json:"created"`
	Reason      string    `json:"reason,omitempty"`
	Workload    string    `json:"workload,omitempty"`
	ConnIDs     []string  `json:"connIds,omitempty"`
	Connections int       `json:"connections"`
	Bytes       int64     `json:"bytes"`     // size of the pcap file
	Truncated   bool      `json:"truncated"` // the capture hit its byte bound
}

// idPattern is what capture IDs look like; anything else is refused before touching the disk.
var idPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$`)

// ValidID reports whether id is a well-formed capture ID (safe as a file name).
func ValidID(id string) bool { return idPattern.MatchString(id) }

func newID(now time.Time) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// Store is the capture directory: ID.pcap and ID.json files, 0600, in a 0700 directory,
// pruned oldest first beyond MaxFiles captures or MaxBytes of pcap.
type Store struct {
	dir      string
	maxFiles int
	maxBytes int64
}

// OpenStore creates (or tightens) dir and returns the store over it.
func OpenStore(dir string, maxFiles int, maxBytes int64) (*Store, error) {
	if dir == "" {
		return nil, errors.New("capture: store dir is required (set Config.Dir)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("capture: create store dir %q: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("capture: chmod store dir %q: %w", dir, err)
	}
	return &Store{dir: dir, maxFiles: maxFiles, maxBytes: maxBytes}, nil
}

// Save writes the conversations as ID.pcap plus its Info, then applies retention.
func (s *Store) Save(info Info, convs []Conversation) (Info, error) {
	if !ValidID(info.ID) {
		return info, fmt.Errorf("capture: invalid capture id %q", info.ID)
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-*.pcap")
	if err != nil {
		return info, fmt.Errorf("capture: create pcap in %q: %w", s.dir, err)
	}
	defer os.Remove(tmp.Name())
	werr := WritePCAP(tmp, convs)
	st, serr := tmp.Stat()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return info, fmt.Errorf("capture: write %s: %w", info.ID, err)
	}
	info.Bytes = st.Size()
	meta, err := json.Marshal(info)
	if err != nil {
		return info, err
	}
	if err := os.WriteFile(s.path(info.ID, ".json"), meta, 0o600); err != nil {
		return info, fmt.Errorf("capture: write %s metadata: %w", info.ID, err)
	}
	if err := os.Rename(tmp.Name(), s.path(info.ID, ".pcap")); err != nil {
		return info, fmt.Errorf("capture: store %s: %w", info.ID, err)
	}
	return info, s.prune()
}

// Put stores a pcap made elsewhere (a sidecar's upload) under info.ID: the pcap is copied to
// a 0600 file, info.Bytes set from what was written, then retention applies as for Save. An
// existing capture with the same ID is refused, so an upload cannot overwrite another.
func (s *Store) Put(info Info, pcap io.Reader) (Info, error) {
	if !ValidID(info.ID) {
		return info, fmt.Errorf("capture: invalid capture id %q (want YYYYMMDDTHHMMSSZ-12 hex digits)", info.ID)
	}
	if _, err := os.Lstat(s.path(info.ID, ".json")); err == nil {
		return info, fmt.Errorf("capture: %s already stored", info.ID)
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-*.pcap")
	if err != nil {
		return info, fmt.Errorf("capture: create pcap in %q: %w", s.dir, err)
	}
	defer os.Remove(tmp.Name())
	n, werr := io.Copy(tmp, pcap)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return info, fmt.Errorf("capture: write %s: %w", info.ID, err)
	}
	info.Bytes = n
	meta, err := json.Marshal(info)
	if err != nil {
		return info, err
	}
	if err := os.Rename(tmp.Name(), s.path(info.ID, ".pcap")); err != nil {
		return info, fmt.Errorf("capture: store %s: %w", info.ID, err)
	}
	// Metadata last: List and Get only see a capture once its pcap is in place.
	if err := os.WriteFile(s.path(info.ID, ".json"), meta, 0o600); err != nil {
		_ = os.Remove(s.path(info.ID, ".pcap"))
		return info, fmt.Errorf("capture: write %s metadata: %w", info.ID, err)
	}
	return info, s.prune()
}

func (s *Store) path(id, ext string) string { return filepath.Join(s.dir, id+ext) }

// List returns the stored captures, oldest first.
func (s *Store) List() ([]Info, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("capture: list %q: %w", s.dir, err)
	}
	var out []Info
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !ValidID(id) {
			continue
		}
		info, err := s.Get(id)
		if err != nil {
			continue // half-pruned or being written
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Get returns one capture's Info.
func (s *Store) Get(id string) (Info, error) {
	var info Info
	if !ValidID(id) {
		return info, fmt.Errorf("capture: invalid capture id %q", id)
	}
	b, err := os.ReadFile(s.path(id, ".json"))
	if err != nil {
		return info, fmt.Errorf("capture %s: %w", id, err)
	}
	if _, err := os.Stat(s.path(id, ".pcap")); err != nil {
		return info, fmt.Errorf("capture %s: %w", id, err)
	}
	return info, json.Unmarshal(b, &info)
}

// Open returns the pcap of a capture (`meshguard capture get ID -o F.pcap`).
func (s *Store) Open(id string) (io.ReadCloser, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("capture: invalid capture id %q", id)
	}
	f, err := os.Open(s.path(id, ".pcap"))
	if err != nil {
		return nil, fmt.Errorf("capture %s: %w", id, err)
	}
	return f, nil
}

// Delete removes one capture.
func (s *Store) Delete(id string) error {
	if !ValidID(id) {
		return fmt.Errorf("capture: invalid capture id %q", id)
	}
	return errors.Join(rmIfExists(s.path(id, ".pcap")), rmIfExists(s.path(id, ".json")))
}

func rmIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// prune deletes the oldest captures beyond the count and byte bounds (IDs sort by time).
func (s *Store) prune() error {
	list, err := s.List()
	if err != nil {
		return err
	}
	var total int64
	for _, i := range list {
		total += i.Bytes
	}
	var errs []error
	for len(list) > 1 && ((s.maxFiles > 0 && len(list) > s.maxFiles) || (s.maxBytes > 0 && total > s.maxBytes)) {
		errs = append(errs, s.Delete(list[0].ID))
		total -= list[0].Bytes
		list = list[1:]
	}
	return errors.Join(errs...)
}
