package sidecar

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// TrimImage gives back the pages of this program's executable that it mapped but does not
// use. The meshguard binary holds every subcommand (controller, lab, inspect, the WAF's rule
// set…) and the kernel maps file pages 64 KiB at a time around each one the program touches
// ("fault-around"), so a sidecar that runs a fraction of the code had 24 of its 29 MB of RSS
// in the binary's 28 MiB of code and read-only data. Call it once the sidecar is ready
// (start-up code and tables are behind it): the read-only mappings of the executable are
// advised MADV_RANDOM (no readahead) and dropped with MADV_DONTNEED; the pages still in use
// fault back in from the page cache at the cost of a minor fault each (with their fault-around
// neighbours: in the lab 19 MB stay file-backed). Only read-only mappings (r-x, r--) without
// private copies (smaps "Anonymous: 0", so not the relocated RELRO pages of a PIE build) are
// touched: they hold the file's bytes and nothing else. It returns the bytes advised.
func TrimImage() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("trim image: %w", err)
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, fmt.Errorf("trim image: %w", err)
	}
	type mapping struct {
		start, end uint64
		ok         bool // read-only mapping of the executable
		anon       bool // holds private copies (say relocations of a PIE): never dropped
	}
	var ms []mapping
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 {
			continue
		}
		if string(f[0]) == "Anonymous:" && len(ms) > 0 && len(f) > 1 && string(f[1]) != "0" {
			ms[len(ms)-1].anon = true
			continue
		}
		// 00400000-010a3000 r-xp 00000000 fe:00 10010842   /path/to/meshguard
		lo, hi, isRange := bytes.Cut(f[0], []byte{'-'})
		if !isRange || len(f) < 5 {
			continue
		}
		start, err1 := strconv.ParseUint(string(lo), 16, 64)
		end, err2 := strconv.ParseUint(string(hi), 16, 64)
		if err1 != nil || err2 != nil {
			continue // a field line, not a mapping header
		}
		ro := string(f[1]) == "r-xp" || string(f[1]) == "r--p"
		ms = append(ms, mapping{start: start, end: end, ok: ro && len(f) >= 6 && string(f[5]) == exe && end > start})
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("trim image: %w", err)
	}
	var total int64
	for _, m := range ms {
		if !m.ok || m.anon {
			continue
		}
		for _, advice := range []uintptr{unix.MADV_RANDOM, unix.MADV_DONTNEED} {
			if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(m.start), uintptr(m.end-m.start), advice); errno != 0 {
				return total, fmt.Errorf("trim image: madvise %x-%x: %w", m.start, m.end, errno)
			}
		}
		total += int64(m.end - m.start)
	}
	return total, nil
}
