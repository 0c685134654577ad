#!/usr/bin/env bash
# Regenerates the core DPI test captures (http, http2/gRPC, tls, dns) in
# internal/inspect/testdata/ from real clients against real servers on loopback, each on its
# standard port and on a non-standard one. Needs root (tcpdump), nginx, curl, dig, openssl,
# tcpdump, editcap (tshark). Then run: go test ./internal/inspect -run TestGolden -update
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=internal/inspect/testdata
WORK=$(mktemp -d /tmp/meshguard-captures.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

go build -o "$WORK/gen" ./internal/inspect/testdata/gen

# wait_port HOST PORT: bounded wait for a TCP listener.
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "timeout waiting for $1:$2" >&2; return 1
}

# capture FILE IFACE FILTER -- CMD...: tcpdump around one client run.
capture() {
  local file=$1 iface=$2 filter=$3; shift 4
  mkdir -p "$(dirname "$file")"
  rm -f "$WORK/tcpdump.err" # the readiness check below must see this run's message
  tcpdump -i "$iface" --immediate-mode -s 0 -w "$file" "$filter" 2>"$WORK/tcpdump.err" &
  local tp=$!
  for _ in $(seq 1 100); do grep -q listening "$WORK/tcpdump.err" 2>/dev/null && break; sleep 0.05; done
  "$@" >/dev/null 2>&1 || true
  sleep 0.3 # let the last FIN/ACKs reach the capture
  kill -INT "$tp"; wait "$tp" || true
  echo "wrote $file ($(stat -c %s "$file") bytes)"
}

# --- servers -------------------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj /CN=www.meshguard.test -addext subjectAltName=DNS:www.meshguard.test \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
chmod 600 "$WORK/key.pem"
mkdir -p "$WORK/www"
for i in $(seq 1 60); do echo "<p>meshguard test page line $i</p>"; done > "$WORK/www/index.html"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $WORK; proxy_temp_path $WORK; fastcgi_temp_path $WORK;
  uwsgi_temp_path $WORK; scgi_temp_path $WORK;
  gzip on; gzip_types text/plain; gzip_min_length 20;
  server {
    listen 127.0.0.5:80; listen 127.0.0.5:53; listen 127.0.0.5:6379;
    root $WORK/www;
    location /api { return 200 "ok\n"; }
  }
  server {
    listen 127.0.0.5:443 ssl http2; listen 127.0.0.5:8080 ssl http2;
    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
    root $WORK/www;
  }
}
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK"
"$WORK/gen" -mode dns-server -addr 127.0.0.7:53 & PIDS+=($!)
"$WORK/gen" -mode dns-server -addr 127.0.0.7:5300 & PIDS+=($!)
"$WORK/gen" -mode h2c-server -addr 127.0.0.6:80 & PIDS+=($!)
"$WORK/gen" -mode h2c-server -addr 127.0.0.5:8443 & PIDS+=($!)
"$WORK/gen" -mode grpc-server -addr 127.0.0.8:50051 & PIDS+=($!)
"$WORK/gen" -mode grpc-server -addr 127.0.0.8:443 & PIDS+=($!)
wait_port 127.0.0.5 80; wait_port 127.0.0.5 6379; wait_port 127.0.0.5 443; wait_port 127.0.0.7 53; wait_port 127.0.0.7 5300
wait_port 127.0.0.6 80; wait_port 127.0.0.5 8443; wait_port 127.0.0.8 50051; wait_port 127.0.0.8 443

# --- HTTP/1.1: keep-alive, POST, HEAD, gzip'd (chunked) --------------------------------------
http1() {
  local base=$1
  curl -s -A meshguard-test "$base/" "$base/api/items?id=7" -d 'name=widget' >/dev/null
  curl -s -I "$base/index.html" >/dev/null
  curl -s --compressed "$base/index.html" >/dev/null
}
capture "$OUT/http/curl-nginx-80.pcap" lo "host 127.0.0.5 and tcp port 80" -- http1 http://127.0.0.5
capture "$OUT/http/curl-nginx-port53.pcap" lo "host 127.0.0.5 and tcp port 53" -- http1 http://127.0.0.5:53
capture "$OUT/http/curl-nginx-6379.pcap" lo "host 127.0.0.5 and tcp port 6379" -- http1 http://127.0.0.5:6379

# --- TLS (ALPN h2 and http/1.1) -------------------------------------------------------------
tlsrun() {
  local port=$1
  curl -s -k --http2 --resolve "www.meshguard.test:$port:127.0.0.5" "https://www.meshguard.test:$port/" >/dev/null
  curl -s -k --http1.1 --tlsv1.2 --tls-max 1.2 --resolve "www.meshguard.test:$port:127.0.0.5" "https://www.meshguard.test:$port/" >/dev/null
}
capture "$OUT/tls/curl-nginx-443.pcap" lo "host 127.0.0.5 and tcp port 443" -- tlsrun 443
capture "$OUT/tls/curl-nginx-8080.pcap" lo "host 127.0.0.5 and tcp port 8080" -- tlsrun 8080

# --- HTTP/2 cleartext: prior knowledge and Upgrade; gRPC ------------------------------------
h2run() {
  curl -s --http2-prior-knowledge "$1/prior" "$1/again" >/dev/null
  curl -s --http2 "$1/upgrade" >/dev/null
}
capture "$OUT/http2/curl-h2c-80.pcap" lo "host 127.0.0.6 and tcp port 80" -- h2run http://127.0.0.6
capture "$OUT/http2/curl-h2c-8443.pcap" lo "host 127.0.0.5 and tcp port 8443" -- h2run http://127.0.0.5:8443
capture "$OUT/http2/grpc-health-50051.pcap" lo "host 127.0.0.8 and tcp port 50051" -- "$WORK/gen" -mode grpc-client -addr 127.0.0.8:50051
capture "$OUT/http2/grpc-health-443.pcap" lo "host 127.0.0.8 and tcp port 443" -- "$WORK/gen" -mode grpc-client -addr 127.0.0.8:443

# --- DNS over UDP and TCP -------------------------------------------------------------------
digs() {
  local port=$1; shift
  for q in "www.meshguard.test A" "www.meshguard.test AAAA" "www.meshguard.test TXT" \
           "alias.meshguard.test A" "meshguard.test MX" "nope.example NS"; do
    dig "$@" @127.0.0.7 -p "$port" +tries=1 +time=2 $q >/dev/null
  done
}
capture "$OUT/dns/dig-udp-53.pcap" lo "host 127.0.0.7 and udp port 53" -- digs 53
capture "$OUT/dns/dig-tcp-53.pcap" lo "host 127.0.0.7 and tcp port 53" -- digs 53 +tcp
capture "$OUT/dns/dig-udp-5300.pcap" lo "host 127.0.0.7 and udp port 5300" -- digs 5300
capture "$OUT/dns/dig-tcp-5300-any.pcap" any "host 127.0.0.7 and tcp port 5300" -- digs 5300 +tcp
# The same DNS traffic as pcapng (what tshark/dumpcap write by default).
editcap -F pcapng "$OUT/dns/dig-udp-5300.pcap" "$OUT/dns/dig-udp-5300.pcapng"
