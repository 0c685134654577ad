#!/usr/bin/env bash
# Times `meshguard inspect` against `tshark -r FILE -q -z io,phs` on the same ~100 MB capture,
# built by replaying the test captures (bench/pcapgen). Usage: bench/inspect.sh [SIZE_MB]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-100}
WORK=$(mktemp -d /tmp/meshguard-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
go build -trimpath -o "$WORK/meshguard" ./cmd/meshguard
go run ./bench/pcapgen -o "$WORK/big.pcap" -size "$SIZE"
BYTES=$(stat -c %s "$WORK/big.pcap")
PKTS=$(capinfos -c -M "$WORK/big.pcap" 2>/dev/null | awk -F: '/Number of packets/ {gsub(/ /,"",$2); print $2}')
echo "capture: $BYTES bytes, $PKTS packets; $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg); $(go version | cut -d' ' -f3); $(tshark --version | head -1)"

run() { # run NAME CMD...: wall and CPU time, throughput per wall second and per CPU second
  local name=$1; shift
  /usr/bin/time -f "%e %U %S" -o "$WORK/time" "$@" > "$WORK/$name.out"
  read -r real user sys < "$WORK/time"
  awk -v n="$name" -v r="$real" -v u="$user" -v s="$sys" -v b="$BYTES" 'BEGIN {
    c = u + s; if (c <= 0) c = 0.01
    printf "%-20s wall %6.2f s (%7.1f MB/s)   cpu %6.2f s (%7.1f MB/s, %5.2f Gbit/s per CPU-second)\n",
      n, r, b/r/1e6, c, b/c/1e6, b*8/c/1e9 }'
}
run "meshguard inspect" "$WORK/meshguard" inspect --format json "$WORK/big.pcap"
run "tshark -z io,phs" tshark -r "$WORK/big.pcap" -q -z io,phs
echo "meshguard flows: $(wc -l < "$WORK/meshguard inspect.out")"
echo "meshguard protocols:"
grep -o '"protocol":"[a-z0-9]*"' "$WORK/meshguard inspect.out" | sort | uniq -c | sort -rn | head -40
