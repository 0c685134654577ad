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
echo "capture: $BYTES bytes, $PKTS packets; $(nproc) cpus; $(go version | cut -d' ' -f3)"

run() { # run NAME CMD...: wall time and throughput
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  "$@" > "$WORK/$name.out"
  end=$(date +%s.%N)
  awk -v n="$name" -v s="$start" -v e="$end" -v b="$BYTES" \
    'BEGIN { t = e - s; printf "%-22s %7.2f s  %8.1f MB/s  %6.2f Gbit/s\n", n, t, b/t/1e6, b*8/t/1e9 }'
}
run "meshguard inspect" "$WORK/meshguard" inspect --format json "$WORK/big.pcap"
run "tshark -z io,phs" tshark -r "$WORK/big.pcap" -q -z io,phs
echo "meshguard flows: $(wc -l < "$WORK/meshguard inspect.out")"
echo "meshguard protocols:"
grep -o '"protocol":"[a-z0-9]*"' "$WORK/meshguard inspect.out" | sort | uniq -c | sort -rn | head -40
