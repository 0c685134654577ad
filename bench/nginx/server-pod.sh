#!/bin/sh
# Pod command of bench/mesh-topology.yaml's app-nginx pod: fortio server on loopback (the app)
# behind nginx terminating mTLS on :8443 with ssl_verify_client on. nginx becomes the pod's PID 1,
# so the pod's end takes fortio with it. Usage: server-pod.sh CERT_DIR FORTIO_BINARY
set -eu
dir="${MESHGUARD_POD_DIR:?run me as the command of a meshguard lab pod}/nginx"
certs="${1:?usage: server-pod.sh CERT_DIR FORTIO_BINARY}"
fortio="${2:?usage: server-pod.sh CERT_DIR FORTIO_BINARY}"
mkdir -p "$dir"
sed -e "s|@DIR@|$dir|g" -e "s|@CERTS@|$certs|g" "$(dirname "$0")/server.conf.in" >"$dir/nginx.conf"
"$fortio" server -quiet -http-port 127.0.0.1:8080 -grpc-port disabled -redirect-port disabled \
	-tcp-port disabled -udp-port disabled -ui-path "" &
exec nginx -e stderr -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
