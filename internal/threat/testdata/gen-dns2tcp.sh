#!/bin/sh
# Regenerates dns2tcp.pcap: a real dns2tcp (TCP-over-DNS, TXT records) session, client on the
# host, dns2tcpd in a throw-away network namespace over a veth pair (10.232.0.0/30), relaying to
# a netcat listener there. Needs root, dns2tcp, tcpdump, nc. Bounded: 300 packets / 30 s.
set -eu
cd "$(dirname "$0")"
NS=mgthr-dns2
TMP=$(mktemp -d)
cleanup() {
	for p in ${PIDS:-}; do kill "$p" 2>/dev/null || true; done
	ip link del mgthr2 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
ip link del mgthr2 2>/dev/null || true
ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"
ip link add mgthr2 type veth peer name mgthr3
ip link set mgthr3 netns "$NS"
ip addr add 10.232.0.1/30 dev mgthr2
ip link set mgthr2 up
ip -n "$NS" addr add 10.232.0.2/30 dev mgthr3
ip -n "$NS" link set mgthr3 up
ip -n "$NS" link set lo up
cat >"$TMP/d.conf" <<CONF
listen = 10.232.0.2
port = 53
user = nobody
chroot = /tmp
domain = t.tunnel2.test
resources = echo:127.0.0.1:7777
CONF
PIDS=""
tcpdump -i mgthr2 -U -n -c 300 -w dns2tcp.pcap udp port 53 2>/dev/null & PIDS="$PIDS $!"
ip netns exec "$NS" sh -c 'head -c 3000 /dev/urandom | base64 | timeout 30 nc -l -p 7777 >/dev/null' & PIDS="$PIDS $!"
ip netns exec "$NS" dns2tcpd -F -f "$TMP/d.conf" >/dev/null 2>&1 & PIDS="$PIDS $!"
sleep 1
head -c 2000 /dev/urandom | base64 | timeout 20 dns2tcpc -z t.tunnel2.test -r echo -l - 10.232.0.2 >/dev/null 2>&1 || true
sleep 1
