# Shared by scripts/test and scripts/demo: idempotent installs. Sourced, not run.
set -euo pipefail

# Debian packages the tests and the demo use: real servers and clients as workloads and peers.
MESHGUARD_APT_PACKAGES=(
  ca-certificates openssl iproute2 nftables iptables procps psmisc curl
  redis-server redis-tools nginx postgresql postgresql-client mariadb-server mariadb-client
  tshark tcpdump dnsutils openssh-server openssh-client mosquitto mosquitto-clients
  memcached iodine dns2tcp python3 protobuf-compiler
  python3-aiosmtpd python3-pyftpdlib python3-pymongo python3-pika python3-kafka
  nats-server chrony snmpd snmp sipsak ldap-utils openvpn iputils-ping python3-cryptography
  rsyslog jq
)

ensure_apt() {
  local missing=()
  for p in "${MESHGUARD_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "meshguard: missing packages ${missing[*]}; run as root (or install them) first" >&2
    return 1
  fi
  echo "meshguard: installing ${missing[*]}"
  # Servers must not start themselves on install; tests start their own instances.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
}

# ensure_go_tool NAME MODULE@VERSION: install a pinned Go tool into the cache once.
MESHGUARD_CACHE="${MESHGUARD_CACHE:-$HOME/.cache/meshguard}"
ensure_go_tool() {
  local name=$1 mod=$2
  local dir="$MESHGUARD_CACHE/tools/${mod//[@\/]/_}"
  if [ ! -x "$dir/$name" ]; then
    echo "meshguard: installing $mod"
    mkdir -p "$dir"
    GOBIN="$dir" go install "$mod"
  fi
  export PATH="$dir:$PATH"
}

build_meshguard() {
  mkdir -p bin
  go build -trimpath -o bin/meshguard ./cmd/meshguard
}
