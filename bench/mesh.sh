#!/usr/bin/env bash
# The mesh data-path benchmark: fortio load against fortio server, side by side in one lab
# (bench/mesh-topology.yaml, real network namespaces):
#   (a) direct   client -> app
#   (b) mesh     client -> meshguard sidecar -> mTLS tunnel -> meshguard sidecar -> app
#   (c) nginx    client -> nginx (originates mTLS) -> nginx (ssl_verify_client) -> app
# Each setup: a fixed-rate run (-qps 1000 -uniform, 32 connections, 30 s, 1 KB responses) with
# the proxies' RSS and CPU (from /proc), then a short max-rate run (-qps 0).
# Root. Installs what it needs (scripts/lib.sh). Usage: bench/mesh.sh [--smoke]
#   --smoke: 2 s per run at 100 qps, to check the harness end to end.
#   MESHGUARD_BIN=path: use that meshguard binary instead of building ./cmd/meshguard.
#   THREATS=off: sidecars without threat detectors (mesh: {threatDetection: false}), to
#   measure their share of the sidecar's cost.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QPS=1000 DUR=30s MAXDUR=5s CONNS=32 SIZE=1024
case "${1:-}" in
--smoke) QPS=100 DUR=2s MAXDUR=2s ;;
"") ;;
*) echo "usage: bench/mesh.sh [--smoke]" >&2; exit 2 ;;
esac
source bench/lib.sh
bench_tools bench/mesh.sh
bench_lab_begin bench/mesh.sh 600

# mTLS material for the nginx pair: ECDSA P-256 CA, server and client certificates.
CERTS="$WORK/certs"
mkdir -m 700 "$CERTS"
(
	cd "$CERTS"
	umask 077
	ossl() { openssl "$@" 2>/dev/null; }
	ossl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
		-days 1 -subj /CN=meshguard-bench-ca
	for who in server client; do
		if [ $who = server ]; then
			san=DNS:app-nginx.bench.svc.cluster.local eku=serverAuth
		else
			san=DNS:client.bench.svc.cluster.local eku=clientAuth
		fi
		ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $who.key -out $who.csr \
			-subj /CN=$who
		printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$san" "$eku" >$who.ext
		ossl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile $who.ext -out $who.crt
	done
)

# The topology with paths filled in; without the sidecar pods when the sidecar is missing.
MESH=1
if ! "$MG" sidecar --help >/dev/null 2>&1; then
	MESH=0 MESH_WHY="this meshguard has no 'sidecar' command"
fi
topology() {
	sed -e "s|@BENCH@|$ROOT/bench|g" -e "s|@CERTS@|$CERTS|g" -e "s|@FORTIO@|$FORTIO|g" bench/mesh-topology.yaml |
		if [ "$1" = 1 ]; then cat; else sed '/# mesh:begin/,/# mesh:end/d'; fi >"$WORK/topology.yaml"
	if [ "${THREATS:-on}" = off ]; then
		echo 'mesh: {threatDetection: false}' >>"$WORK/topology.yaml"
	fi
}
topology $MESH
LAB_UP=1
if ! "$MG" lab up -f "$WORK/topology.yaml"; then
	if [ $MESH = 1 ]; then
		echo "bench/mesh.sh: lab up with sidecars failed; retrying without the mesh pods" >&2
		MESH_WHY="lab up with sidecar pods failed (see above)"
		MESH=0
		"$MG" lab down >/dev/null 2>&1 || true
		topology 0
		"$MG" lab up -f "$WORK/topology.yaml"
	else
		exit 1
	fi
fi

URL_DIRECT="http://app-direct.bench.svc.cluster.local:8080/echo?size=$SIZE"
URL_NGINX="http://127.0.0.1:18080/echo?size=$SIZE"
URL_MESH="http://app-mesh.bench.svc.cluster.local:8080/echo?size=$SIZE"

wait_ok client "$URL_DIRECT" || { echo "bench/mesh.sh: direct path not answering" >&2; exit 1; }
wait_ok client "$URL_NGINX" || { echo "bench/mesh.sh: nginx pair not answering" >&2; "$MG" lab logs client >&2; "$MG" lab logs app-nginx >&2; exit 1; }
if [ $MESH = 1 ] && ! wait_ok mesh-client "$URL_MESH"; then
	MESH=0 MESH_WHY="no answer through the sidecar pair within 30 s"
	"$MG" lab logs app-mesh >&2 || true
fi

# pids_of SETUP: the host pids of the proxies measured for a setup.
nginx_tree() { # nginx master (the pod's PID 1, exec'd by the wrapper) and its nginx workers
	local m=$1 c
	echo "$m"
	for c in $(cat /proc/"$m"/task/*/children 2>/dev/null); do
		[ "$(cat /proc/"$c"/comm 2>/dev/null)" = nginx ] && echo "$c"
	done
	return 0
}
pids_of() { # pids_of SETUP: "SIDE PID" lines, SIDE c (client side) or s (server side)
	case $1 in
	direct) ;;
	mesh)
		echo "c $(pod_field mesh-client .sidecarProc.pid)"
		echo "s $(pod_field app-mesh .sidecarProc.pid)"
		;;
	nginx)
		nginx_tree "$(pod_field client .proc.pid)" | sed 's/^/c /'
		nginx_tree "$(pod_field app-nginx .proc.pid)" | sed 's/^/s /'
		;;
	esac
}
HZ=$(getconf CLK_TCK)
mem_kb() { # mem_kb FILE FIELD PID...: sum of FIELD (kB) from /proc/PID/FILE
	local f=$1 k=$2 t=0 p
	shift 2
	for p in "$@"; do t=$((t + $(awk -v k="$k:" '$1 == k { print $2 }' /proc/"$p"/"$f"))); done
	echo $t
}
mem_sides() { # mem_sides SETUP FILE FIELD: "client-side server-side" sums
	echo "$(mem_kb "$2" "$3" $(awk '$1 == "c" { print $2 }' "$WORK/$1.pids")) $(mem_kb "$2" "$3" $(awk '$1 == "s" { print $2 }' "$WORK/$1.pids"))"
}

load() { # load POD QPS DURATION URL OUT.json; one retry if fortio dies while the lab is still ours
	local try
	for try in 1 2; do
		if "$MG" lab exec "$1" -- "$FORTIO" load -quiet -qps "$2" -uniform -c $CONNS -t "$3" -json "$5" "$4" >"$WORK/fortio.log" 2>&1; then
			return 0
		fi
		cat "$WORK/fortio.log" >&2
		if [ "$(jq -r .topologyFile /run/meshguard/lab/state.json 2>/dev/null)" != "$WORK/topology.yaml" ] || ! lab_daemon_alive; then
			echo "bench/mesh.sh: the lab was stopped under us (by a process not holding /run/meshguard/e2e-lab.lock?)" >&2
			exit 1
		fi
		[ $try = 1 ] && echo "bench/mesh.sh: fortio load in $1 failed with the lab still up; retrying once" >&2
	done
	exit 1
}

SETUPS=(direct nginx)
[ $MESH = 1 ] && SETUPS=(direct mesh nginx)
declare -A POD=([direct]=client [mesh]=mesh-client [nginx]=client)
declare -A URL=([direct]=$URL_DIRECT [mesh]=$URL_MESH [nginx]=$URL_NGINX)
CMD="fortio load -qps $QPS -uniform -c $CONNS -t $DUR -json OUT URL"
[ "${THREATS:-on}" = off ] && echo "THREATS=off: sidecars run without threat detectors"
echo "machine: $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg) before the runs; $("$FORTIO" version | head -1 | sed 's/^/fortio /'); $(nginx -v 2>&1 | sed 's/.*: //')"
for s in "${SETUPS[@]}"; do
	pids_of "$s" >"$WORK/$s.pids"
	P=($(cut -d' ' -f2 "$WORK/$s.pids"))
	t0=$(cpu_ticks "${P[@]}")
	x0=$(ctx_switches "${P[@]}")
	s0=$(date +%s.%N)
	PERF_PID=
	if [ -n "${PERF_DIR:-}" ] && [ "$s" != direct ]; then # profile 10 s of the fixed-rate run
		mkdir -p "$PERF_DIR"
		perf record -q -F 499 -g -p "$(IFS=,; echo "${P[*]}")" -o "$PERF_DIR/$s.data" -- sleep 10 >/dev/null 2>&1 &
		PERF_PID=$!
	fi
	load "${POD[$s]}" "$QPS" "$DUR" "${URL[$s]}" "$WORK/$s.json"
	s1=$(date +%s.%N)
	t1=$(cpu_ticks "${P[@]}")
	x1=$(ctx_switches "${P[@]}")
	if [ -n "$PERF_PID" ]; then wait "$PERF_PID" || true; fi
	if [ "$s" != direct ]; then
		echo "$s: $(jq -r --argjson x $((x1 - x0)) '$x / .DurationHistogram.Count * 10 | round / 10' "$WORK/$s.json") context switches of the proxies per request at $QPS qps"
	fi
	mem_sides "$s" status VmRSS >"$WORK/$s.rss"
	mem_sides "$s" smaps_rollup Pss >"$WORK/$s.pss"
	echo "$((t1 - t0)) $s0 $s1 ${#P[@]}" >"$WORK/$s.cpu"
	cut -d' ' -f1-3 /proc/loadavg >"$WORK/$s.load"
	load "${POD[$s]}" 0 "$MAXDUR" "${URL[$s]}" "$WORK/$s.max.json"
	mem_sides "$s" status VmHWM >"$WORK/$s.hwm"
done

# The table: added latency vs direct, max qps, proxies' RSS and CPU per 1,000 qps.
python3 - "$WORK" "$HZ" "$QPS" "$DUR" "$MAXDUR" "${SETUPS[@]}" <<'PY'
import json, sys
work, hz, qps, dur, maxdur, setups = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
rows = {}
for s in setups:
    r = json.load(open(f"{work}/{s}.json"))
    m = json.load(open(f"{work}/{s}.max.json"))
    p = {x["Percentile"]: x["Value"] * 1e3 for x in r["DurationHistogram"]["Percentiles"]}
    ticks, t0, t1, n = open(f"{work}/{s}.cpu").read().split()
    wall = float(t1) - float(t0)
    cpu_pct = int(ticks) / hz / wall * 100  # % of one core over the fixed-rate run
    mem = lambda k: [int(x) for x in open(f"{work}/{s}.{k}").read().split()]
    ok = r["RetCodes"].get("200", 0)
    rows[s] = dict(p50=p[50], p90=p[90], p99=p[99], qps=r["ActualQPS"], n=r["DurationHistogram"]["Count"],
                   ok=ok, maxqps=m["ActualQPS"], maxok=m["RetCodes"].get("200", 0), maxn=m["DurationHistogram"]["Count"],
                   cpu=cpu_pct / (r["ActualQPS"] / 1000) if int(n) else None, rss=mem("rss"), pss=mem("pss"), hwm=mem("hwm"),
                   load=open(f"{work}/{s}.load").read().strip())
d = rows["direct"]
print(f"\nfixed rate: fortio load -qps {qps} -uniform -c 32 -t {dur}, 1 KB responses; max qps: -qps 0 -c 32 -t {maxdur}\n")
print("| setup | qps | 200s | p50 ms | p90 ms | p99 ms | added p50 | added p90 | added p99 | max qps | proxy CPU, % of a core per 1k qps | proxy RSS MB, client + server side | PSS MB | peak RSS after max run | load avg after |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for s in setups:
    r = rows[s]
    cpu = "-" if r["cpu"] is None else f"{r['cpu']:.1f}"
    mb = lambda v: "-" if sum(v) == 0 else f"{v[0]/1024:.1f} + {v[1]/1024:.1f}"
    print(f"| {s} | {r['qps']:.1f} | {r['ok']}/{r['n']} | {r['p50']:.3f} | {r['p90']:.3f} | {r['p99']:.3f} | "
          f"{r['p50']-d['p50']:+.3f} | {r['p90']-d['p90']:+.3f} | {r['p99']-d['p99']:+.3f} | "
          f"{r['maxqps']:.0f} ({r['maxok']}/{r['maxn']} ok) | {cpu} | {mb(r['rss'])} | {mb(r['pss'])} | {mb(r['hwm'])} | {r['load']} |")
PY
echo "proxies: mesh = the two meshguard sidecars; nginx = both nginx masters and their workers (2 per side)."
echo "RSS and PSS at the end of the fixed-rate run (PSS splits pages shared between processes, e.g. nginx's)."
if [ $MESH = 0 ]; then
	echo "(b) mesh: sidecar not available: $MESH_WHY"
fi
echo "load after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
