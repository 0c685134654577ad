#!/usr/bin/env bash
# Regenerates the batch-B DPI test captures in internal/inspect/testdata/<protocol>/: each
# protocol on its standard port and on a non-standard one, on loopback. Real servers/clients
# from Debian where they exist (nats-server, chronyd, snmpd/snmpget, logger, sipsak, ldapsearch,
# openvpn, ping); scripted peers (scripts/captures/batchb_peer.py) elsewhere, as documented in
# internal/inspect/testdata/README.md. Needs root (tcpdump on lo, low ports).
#   usage: scripts/captures/batch-b.sh [protocol...]     (default: all)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=internal/inspect/testdata
PEER=(python3 scripts/captures/batchb_peer.py)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# bg CMD...: start a background peer and remember its pid for cleanup.
bg() { "$@" >"$WORK/bg.$#.log" 2>&1 & PIDS+=($!); }

# cap FILE FILTER CMD...: capture lo with FILTER into $OUT/FILE while CMD runs.
cap() {
  local file=$OUT/$1 filter=$2
  shift 2
  mkdir -p "$(dirname "$file")"
  tcpdump -i lo -U --immediate-mode -s 0 -Z root -w "$file" "$filter" 2>"$WORK/tcpdump.err" &
  local tp=$!
  for _ in $(seq 50); do grep -q listening "$WORK/tcpdump.err" && break; sleep 0.1; done
  "$@" >"$WORK/cmd.log" 2>&1 || echo "batch-b: $1: command exited non-zero (see output below)" >&2
  sleep 0.5
  kill -INT "$tp"; wait "$tp" 2>/dev/null || true
  echo "batch-b: $file ($(stat -c %s "$file") bytes)"
}

# waitport PROTO PORT: wait until something listens on 127.0.0.1:PORT.
waitport() {
  for _ in $(seq 50); do
    ss -Hln"${1:0:1}" "sport = :$2" | grep -q . && return 0
    sleep 0.1
  done
  echo "batch-b: nothing listening on $1/$2" >&2
  return 1
}

nats() {
  for port in 4222 14222; do
    bg nats-server -a 127.0.0.1 -p "$port"
    waitport tcp "$port"
    cap "nats/nats-$port.pcap" "tcp port $port" "${PEER[@]}" nats-client "$port"
  done
}

ntp() {
  for port in 123 11123; do
    mkdir -p "$WORK/ntp$port"
    printf 'port %s\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\ncmdport 0\npidfile %s\n' \
      "$port" "$WORK/ntp$port/chronyd.pid" >"$WORK/ntp$port/server.conf"
    bg chronyd -d -x -f "$WORK/ntp$port/server.conf"
    waitport udp "$port"
    printf 'server 127.0.0.1 port %s iburst maxsamples 2\ncmdport 0\npidfile %s\n' \
      "$port" "$WORK/ntp$port/client.pid" >"$WORK/ntp$port/client.conf"
    cap "ntp/chrony-$port.pcap" "udp port $port" timeout 20 chronyd -Q -f "$WORK/ntp$port/client.conf"
  done
}

snmp() {
  mkdir -p "$WORK/snmp"
  cat >"$WORK/snmp/snmpd.conf" <<EOF
agentAddress udp:127.0.0.1:161,udp:127.0.0.1:11161
rocommunity mg-community 127.0.0.1
createUser mguser SHA mg-auth-pass AES mg-priv-pass
rouser mguser priv
persistentDir $WORK/snmp
EOF
  bg snmpd -f -Lo -C -c "$WORK/snmp/snmpd.conf" -p "$WORK/snmp/pid"
  waitport udp 161
  cap snmp/snmp-161.pcap "udp port 161" sh -c '
    snmpget -v2c -c mg-community 127.0.0.1:161 1.3.6.1.2.1.1.1.0 1.3.6.1.2.1.1.5.0
    snmpget -v1 -c mg-community 127.0.0.1:161 1.3.6.1.2.1.1.3.0'
  cap snmp/snmp-11161.pcap "udp port 11161" sh -c '
    snmpgetnext -v2c -c mg-community 127.0.0.1:11161 1.3.6.1.2.1.1
    snmpget -v3 -l authPriv -u mguser -a SHA -A mg-auth-pass -x AES -X mg-priv-pass 127.0.0.1:11161 1.3.6.1.2.1.1.1.0'
}

syslog() {
  for port in 514 10514; do
    bg "${PEER[@]}" syslog-listen "$port" 8
    waitport tcp "$port"
    cap "syslog/logger-$port.pcap" "port $port" sh -c "
      logger --server 127.0.0.1 --port $port --udp -t mg-app -p local3.warning 'udp rfc5424 message'
      logger --server 127.0.0.1 --port $port --udp --rfc3164 -t mg-bsd -p auth.info 'udp rfc3164 message'
      logger --server 127.0.0.1 --port $port --tcp --octet-count -t mg-tcp -p daemon.err 'tcp octet counted'
      logger --server 127.0.0.1 --port $port --tcp -t mg-tcp-nl -p user.notice 'tcp newline framed'"
  done
}

sip() {
  for port in 5060 15060; do
    bg "${PEER[@]}" sip-responder "$port" 6
    waitport udp "$port"
    cap "sip/sipsak-$port.pcap" "port $port" sh -c "
      sipsak -s sip:alice@127.0.0.1:$port
      sipsak -E tcp -s sip:bob@127.0.0.1:$port"
  done
}

ldap() {
  for port in 389 10389; do
    bg "${PEER[@]}" ldap-responder "$port"
    waitport tcp "$port"
    cap "ldap/ldapsearch-$port.pcap" "tcp port $port" ldapsearch -x -H "ldap://127.0.0.1:$port" \
      -D cn=admin,dc=example,dc=org -w mg-not-a-real-secret -b ou=people,dc=example,dc=org '(uid=alice)' cn
  done
}

scripted() { # scripted NAME PROTO STDPORT ODDPORT
  local name=$1 proto=$2
  for port in $3 $4; do
    cap "$name/$name-$port.pcap" "$proto port $port" "${PEER[@]}" "$name" "$port"
  done
}

openvpn_caps() {
  local d=$WORK/ovpn
  mkdir -p "$d"
  (cd "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj /CN=mg-ca -keyout ca.key -out ca.crt 2>/dev/null
    for n in server client; do
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=mg-$n" \
        -keyout $n.key -out $n.csr 2>/dev/null
      openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out $n.crt 2>/dev/null
    done)
  local common=(--dev null --ca "$d/ca.crt" --verb 3 --data-ciphers AES-128-GCM)
  cap openvpn/openvpn-udp-1194.pcap "udp port 1194" sh -c "
    openvpn ${common[*]} --tls-server --dh none --cert $d/server.crt --key $d/server.key \
      --local 127.0.0.1 --lport 1194 --proto udp4 & s=\$!
    timeout 6 openvpn ${common[*]} --tls-client --cert $d/client.crt --key $d/client.key \
      --remote 127.0.0.1 1194 --proto udp4 --nobind
    kill \$s"
  cap openvpn/openvpn-tcp-11940.pcap "tcp port 11940" sh -c "
    openvpn ${common[*]} --tls-server --dh none --cert $d/server.crt --key $d/server.key \
      --local 127.0.0.1 --lport 11940 --proto tcp-server & s=\$!
    sleep 1
    timeout 6 openvpn ${common[*]} --tls-client --cert $d/client.crt --key $d/client.key \
      --remote 127.0.0.1 11940 --proto tcp-client
    kill \$s"
}

icmp() {
  cap icmp/ping.pcap "icmp or icmp6" sh -c 'ping -c 2 -i 0.2 127.0.0.1; ping -6 -c 2 -i 0.2 ::1 || true'
}

all=(nats ntp snmp syslog sip ldap rtsp cassandra zookeeper stun dhcp wireguard quic openvpn icmp)
for p in "${@:-${all[@]}}"; do
  case $p in
    rtsp) scripted rtsp tcp 554 18554 ;;
    cassandra) scripted cassandra tcp 9042 19042 ;;
    zookeeper) scripted zookeeper tcp 2181 12181 ;;
    stun) scripted stun udp 3478 13478 ;;
    dhcp) scripted dhcp udp 67 10067 ;;
    wireguard) scripted wireguard udp 51820 41820 ;;
    quic) scripted quic udp 443 14433 ;;
    openvpn) openvpn_caps ;;
    *) "$p" ;;
  esac
done
