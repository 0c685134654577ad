package sidecar

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// TrimImage gives back the pages of this program's executable that it mapped but no longer
// uses, and keeps the kernel from mapping neighbours it does not need. The meshguard binary
// holds every subcommand (controller, lab, inspect, the WAF's rule set…) and the kernel maps
// pages of it 64 KiB at a time around each page the program touches ("fault-around"), so a
// sidecar that runs a fraction of the code had most of the binary's 28 MiB of code and
// read-only data in its resident set. Call it once the sidecar is ready (start-up code and
// tables are behind it): the read-only mappings of the executable are advised MADV_RANDOM
// (no fault-around) and dropped with MADV_DONTNEED; the pages still in use fault back in
// from the page cache, one at a time, at the cost of a minor fault each. Only mappings the
// program cannot have written (r-x and r--, no relocations) are touched. It returns the
// bytes of mappings advised.
func TrimImage() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("trim image: %w", err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("trim image: %w", err)
	}
	var total int64
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// 00400000-010a3000 r-xp 00000000 fe:00 10010842   /path/to/meshguard
		f := bytes.Fields(sc.Bytes())
		if len(f) < 6 || string(f[5]) != exe || (string(f[1]) != "r-xp" && string(f[1]) != "r--p") {
			continue
		}
		lo, hi, ok := bytes.Cut(f[0], []byte{'-'})
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(string(lo), 16, 64)
		end, err2 := strconv.ParseUint(string(hi), 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		for _, advice := range []uintptr{unix.MADV_RANDOM, unix.MADV_DONTNEED} {
			if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), advice); errno != 0 {
				return total, fmt.Errorf("trim image: madvise %s: %w", f[0], errno)
			}
		}
		total += int64(end - start)
	}
	return total, sc.Err()
}
