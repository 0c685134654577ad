// Command pcapgen builds a large benchmark capture by replaying the small test captures
// (internal/inspect/testdata/**/*.pcap, Ethernet/IPv4 ones) over and over, giving every replay
// its own client address so each becomes distinct flows. bench/inspect.sh uses it; the output
// is not committed.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

type packet struct {
	ci   gopacket.CaptureInfo
	data []byte
}

func main() {
	out := flag.String("o", "", "output pcap file")
	sizeMB := flag.Int("size", 100, "approximate output size in MB")
	dir := flag.String("captures", "internal/inspect/testdata", "directory of source captures")
	flag.Parse()
	if *out == "" || *sizeMB <= 0 {
		log.Fatal("usage: pcapgen -o FILE [-size MB] [-captures DIR]")
	}
	var src [][]packet
	err := filepath.WalkDir(*dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".pcap") {
			return err
		}
		pkts, err := read(path)
		if err != nil {
			log.Printf("skipping %s: %v", path, err)
			return nil
		}
		if len(pkts) > 0 {
			src = append(src, pkts)
		}
		return nil
	})
	if err != nil || len(src) == 0 {
		log.Fatalf("no Ethernet captures under %s (%v)", *dir, err)
	}
	f, err := os.Create(*out)
	if err != nil {
		log.Fatal(err)
	}
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		log.Fatal(err)
	}
	limit := int64(*sizeMB) << 20
	var written int64
	ts := time.Unix(1_700_000_000, 0)
	buf := make([]byte, 0, 65536)
	replica := 0
	for written < limit {
		replica++
		for _, pkts := range src {
			for _, p := range pkts {
				buf = append(buf[:0], p.data...)
				rewrite(buf, replica)
				ts = ts.Add(10 * time.Microsecond)
				ci := gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(buf), Length: len(buf)}
				if err := w.WritePacket(ci, buf); err != nil {
					log.Fatal(err)
				}
				written += int64(len(buf) + 16)
			}
		}
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %d MB, %d replays of %d captures\n", *out, written>>20, replica, len(src))
}

func read(path string) ([]packet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return nil, err
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		return nil, nil
	}
	var out []packet
	for {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			return out, nil
		}
		out = append(out, packet{ci, data})
	}
}

// rewrite moves 127.0.0.1 (every test client) to 10.x.y.z for replica n and fixes the IPv4
// header checksum. Transport checksums are left stale; neither inspect nor tshark checks them.
func rewrite(b []byte, n int) {
	if len(b) < 34 || binary.BigEndian.Uint16(b[12:]) != 0x0800 {
		return
	}
	ip := b[14:]
	ihl := int(ip[0]&0xf) * 4
	if ihl < 20 || len(ip) < ihl {
		return
	}
	client := [4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}
	for _, off := range []int{12, 16} {
		if [4]byte(ip[off:off+4]) == [4]byte{127, 0, 0, 1} {
			copy(ip[off:], client[:])
		}
	}
	ip[10], ip[11] = 0, 0
	var sum uint32
	for i := 0; i < ihl; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
}
