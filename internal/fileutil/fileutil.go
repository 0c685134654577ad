// Package fileutil holds the one file-writing routine every persistent piece of meshguard
// shares: replace a file atomically, with its mode set before any byte is written.
package fileutil

import (
	"os"
	"path/filepath"
)

// WriteAtomic writes data to path through a uniquely named temporary file in the same
// directory (mode set first, synced, then renamed), so readers never see half a file and a
// secret is never readable under a looser mode, even briefly.
func WriteAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
