#!/bin/sh
# Regenerates iodine.pcap: a real iodine (IP-over-DNS) tunnel, client on the host, iodined in a
# throw-away network namespace reached over a veth pair (10.231.0.0/30). Needs root, iodine,
# tcpdump. Traffic never leaves the machine. Bounded: at most 400 packets / 40 s.
set -eu
cd "$(dirname "$0")"
NS=mgthr-dns
cleanup() {
	[ -n "${IOD:-}" ] && kill "$IOD" 2>/dev/null || true
	[ -n "${CLI:-}" ] && kill "$CLI" 2>/dev/null || true
	[ -n "${TCPD:-}" ] && kill "$TCPD" 2>/dev/null || true
	ip link del mgthr0 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
ip netns add "$NS"
ip link add mgthr0 type veth peer name mgthr1
ip link set mgthr1 netns "$NS"
ip addr add 10.231.0.1/30 dev mgthr0
ip link set mgthr0 up
ip -n "$NS" addr add 10.231.0.2/30 dev mgthr1
ip -n "$NS" link set mgthr1 up
ip -n "$NS" link set lo up
tcpdump -i mgthr0 -U -n -c 400 -w iodine.pcap udp port 53 2>/dev/null &
TCPD=$!
ip netns exec "$NS" iodined -f -P meshguard-test -l 10.231.0.2 -d mgthrtun0 10.232.0.1/27 t.tunnel.test >/dev/null 2>&1 &
IOD=$!
sleep 1
timeout 40 iodine -f -r -P meshguard-test -d mgthrtun1 10.231.0.2 t.tunnel.test >/dev/null 2>&1 &
CLI=$!
i=0
while [ $i -lt 30 ] && ! ip addr show mgthrtun1 2>/dev/null | grep -q 10.232.0; do sleep 1; i=$((i+1)); done
ping -c 5 -W 2 10.232.0.1 >/dev/null 2>&1 || true
ping -c 3 -s 1000 -W 2 10.232.0.1 >/dev/null 2>&1 || true
sleep 2
