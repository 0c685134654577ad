#!/usr/bin/env bash
# Regenerates the batch-A DPI test captures in internal/inspect/testdata/<protocol>/: each
# protocol on its standard port and on a non-standard one, on loopback. Real Debian servers and
# clients where they exist (sshd/ssh, redis-server/redis-cli, postgres/psql, mariadbd/mariadb,
# mosquitto/mosquitto_pub+sub, memcached, aiosmtpd+smtplib, pyftpdlib+ftplib); real client
# libraries against scripted servers elsewhere (poplib, imaplib, pymongo, pika, kafka-python with
# scripts/captures/batcha_peer.py). Needs root (tcpdump on lo, low ports, server users).
#   usage: scripts/captures/batch-a.sh [protocol...]     (default: all)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=internal/inspect/testdata
PY=/usr/bin/python3 # Debian's python: the client libraries come from apt
PEER=("$PY" scripts/captures/batcha_peer.py)
WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/pg/postmaster.pid" ] && su postgres -c "/usr/lib/postgresql/15/bin/pg_ctl -D $WORK/pg -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# bg CMD...: start a background server and remember its pid for cleanup.
bg() { "$@" >>"$WORK/bg.log" 2>&1 & PIDS+=($!); }

# stop: kill the background servers started so far.
stop() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}

# cap FILE PORT CMD...: capture lo tcp port PORT into $OUT/FILE while CMD runs.
cap() {
  local file=$OUT/$1 port=$2
  shift 2
  mkdir -p "$(dirname "$file")"
  tcpdump -i lo -U --immediate-mode -s 0 -Z root -w "$file" "tcp port $port" 2>"$WORK/tcpdump.err" &
  local tp=$!
  for _ in $(seq 50); do grep -q listening "$WORK/tcpdump.err" && break; sleep 0.1; done
  "$@" >"$WORK/cmd.log" 2>&1 || { echo "batch-a: $file: command exited non-zero:" >&2; tail -5 "$WORK/cmd.log" >&2; }
  sleep 0.5
  kill -INT "$tp"; wait "$tp" 2>/dev/null || true
  echo "batch-a: $file ($(stat -c %s "$file") bytes)"
}

# waitport PORT: wait until something listens on 127.0.0.1:PORT.
waitport() {
  for _ in $(seq 100); do
    ss -Hlnt "sport = :$1" | grep -q . && return 0
    sleep 0.1
  done
  echo "batch-a: nothing listening on tcp/$1" >&2
  return 1
}

# free PORT: refuse to capture on a port another process already uses.
free() {
  if ss -Hlnt "sport = :$1" | grep -q .; then
    echo "batch-a: tcp/$1 is busy, skipping" >&2
    return 1
  fi
}

ssh() {
  mkdir -p /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/hostkey"
  for port in 22 8443; do
    free "$port" || continue
    bg /usr/sbin/sshd -D -e -f /dev/null -h "$WORK/hostkey" -p "$port" -o ListenAddress=127.0.0.1 -o PidFile=none
    waitport "$port"
    # The login fails (no keys, batch mode): banners, key exchange and auth attempts are what count.
    cap "ssh/openssh-$port.pcap" "$port" sh -c "/usr/bin/ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no \
      -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5 -p $port nobody@127.0.0.1 true || true"
    stop
  done
}

redis() {
  for port in 6379 8080; do
    free "$port" || continue
    bg redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no
    waitport "$port"
    # One redis-cli per command: fed from stdin, redis-cli first downloads COMMAND DOCS (180 kB).
    cap "redis/redis-cli-$port.pcap" "$port" sh -c "
      redis-cli -p $port SET user:1 alice && redis-cli -p $port LPUSH user:1 x &&
      redis-cli -p $port MSET a 1 b 2 && redis-cli -p $port DEL user:1 a b && ${PEER[*]} redis-inline $port"
    stop
  done
}

postgres() {
  local bin=/usr/lib/postgresql/15/bin
  mkdir -p "$WORK/pg" "$WORK/pgsock" && chown postgres "$WORK/pg" "$WORK/pgsock"
  su postgres -c "$bin/initdb -D $WORK/pg -A trust -U postgres" >/dev/null
  for port in 5432 6379; do
    free "$port" || continue
    su postgres -c "$bin/pg_ctl -D $WORK/pg -w -l $WORK/pgsock/pg.log -o '-p $port -k $WORK/pgsock -c listen_addresses=127.0.0.1' start" >/dev/null
    cap "postgres/psql-$port.pcap" "$port" psql "host=127.0.0.1 port=$port user=postgres dbname=postgres sslmode=prefer application_name=capture" \
      -c "SELECT 1 AS one" -c "CREATE TABLE t (a int)" -c "INSERT INTO t VALUES (1)" -c "SELECT * FROM nosuch" -c "DROP TABLE t"
    su postgres -c "$bin/pg_ctl -D $WORK/pg -w stop" >/dev/null
  done
}

mysql() {
  mkdir -p "$WORK/my" "$WORK/mysock" && chown mysql "$WORK/my" "$WORK/mysock"
  mariadb-install-db --no-defaults --datadir="$WORK/my" --user=mysql --auth-root-authentication-method=normal >/dev/null 2>&1
  for port in 3306 8081; do
    free "$port" || continue
    bg /usr/sbin/mariadbd --no-defaults --datadir="$WORK/my" --port="$port" --bind-address=127.0.0.1 \
      --socket="$WORK/mysock/my.sock" --user=mysql --skip-log-bin --pid-file="$WORK/mysock/my.pid"
    waitport "$port"
    cap "mysql/mariadb-$port.pcap" "$port" mariadb --no-defaults -h 127.0.0.1 -P "$port" -u root --skip-ssl -D mysql \
      -e "SELECT user FROM user LIMIT 1; CREATE DATABASE IF NOT EXISTS shop; USE shop; CREATE TABLE IF NOT EXISTS t (a int); INSERT INTO t VALUES (1); SELECT * FROM nosuch"
    stop
  done
}

mqtt() {
  for port in 1883 8082; do
    free "$port" || continue
    bg mosquitto -p "$port"
    waitport "$port"
    cap "mqtt/mosquitto-$port.pcap" "$port" sh -c "
      mosquitto_sub -p $port -i sub-1 -t 'sensors/#' -t 'alerts/+' -C 2 -W 10 -V mqttv5 & s=\$!
      sleep 0.5
      mosquitto_pub -p $port -i pub-311 -u alice -P s3cret -V mqttv311 -q 1 -t sensors/temp -m 21.5
      mosquitto_pub -p $port -i pub-5 -V mqttv5 -q 0 -r -t alerts/door -m open
      wait \$s"
    stop
  done
}

memcached() {
  for port in 11211 8083; do
    free "$port" || continue
    bg /usr/bin/memcached -l 127.0.0.1 -p "$port" -U 0 -u nobody
    waitport "$port"
    cap "memcached/memcached-$port.pcap" "$port" "${PEER[@]}" memcached-client "$port"
    stop
  done
}

smtp() {
  for port in 25 8084; do
    free "$port" || continue
    bg "$PY" -m aiosmtpd -n -l "127.0.0.1:$port" -c aiosmtpd.handlers.Sink
    waitport "$port"
    cap "smtp/aiosmtpd-$port.pcap" "$port" "${PEER[@]}" smtp-client "$port"
    stop
  done
}

ftp() {
  mkdir -p "$WORK/ftproot" && echo hello >"$WORK/ftproot/hello.txt"
  for port in 21 8085; do
    free "$port" || continue
    bg "$PY" -m pyftpdlib -i 127.0.0.1 -p "$port" -d "$WORK/ftproot"
    waitport "$port"
    cap "ftp/pyftpdlib-$port.pcap" "$port" "${PEER[@]}" ftp-client "$port"
    stop
  done
}

pop3() {
  for port in 110 8086; do
    free "$port" || continue
    bg "${PEER[@]}" pop3-server "$port"
    waitport "$port"
    cap "pop3/poplib-$port.pcap" "$port" "${PEER[@]}" pop3-client "$port"
    stop
  done
}

imap() {
  for port in 143 8087; do
    free "$port" || continue
    bg "${PEER[@]}" imap-server "$port"
    waitport "$port"
    cap "imap/imaplib-$port.pcap" "$port" "${PEER[@]}" imap-client "$port"
    stop
  done
}

mongodb() {
  for port in 27017 8088; do
    free "$port" || continue
    bg "${PEER[@]}" mongo-server "$port"
    waitport "$port"
    cap "mongodb/pymongo-$port.pcap" "$port" "${PEER[@]}" mongo-client "$port"
    stop
  done
}

amqp() {
  for port in 5672 8089; do
    free "$port" || continue
    bg "${PEER[@]}" amqp-server "$port"
    waitport "$port"
    cap "amqp/pika-$port.pcap" "$port" "${PEER[@]}" amqp-client "$port"
    stop
  done
}

kafka() {
  for port in 9092 8090; do
    free "$port" || continue
    bg "${PEER[@]}" kafka-server "$port"
    waitport "$port"
    cap "kafka/kafka-python-$port.pcap" "$port" "${PEER[@]}" kafka-client "$port"
    stop
  done
}

ALL=(ssh redis postgres mysql mqtt memcached smtp ftp pop3 imap mongodb amqp kafka)
for p in "${@:-${ALL[@]}}"; do
  "$p"
done
