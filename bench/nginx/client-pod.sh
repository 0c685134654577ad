#!/bin/sh
# Pod command of bench/mesh-topology.yaml's client pod: the client-side nginx of the nginx pair,
# the faithful equivalent of a sidecar (same netns as the load generator, loopback listener). It
# originates mTLS to app-nginx. Usage: client-pod.sh CERT_DIR
set -eu
dir="${MESHGUARD_POD_DIR:?run me as the command of a meshguard lab pod}/nginx"
certs="${1:?usage: client-pod.sh CERT_DIR}"
mkdir -p "$dir"
sed -e "s|@DIR@|$dir|g" -e "s|@CERTS@|$certs|g" "$(dirname "$0")/client.conf.in" >"$dir/nginx.conf"
exec nginx -e stderr -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
