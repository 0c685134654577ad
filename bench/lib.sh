# Shared by the lab benchmarks (bench/mesh.sh, bench/threats.sh), sourced from the repository
# root: call bench_tools NAME first (root check, packages, FORTIO and MG, the meshguard
# binary), then bench_lab_begin NAME LOCK_WAIT_SECONDS. It takes the lab lock the
# e2e tests take (held until the script exits), waits (bounded) for a lab someone else brought
# up, makes WORK (0700) with HOME inside it (lab up copies the lab's admin config there), and
# on exit brings the lab down when LAB_UP=1 and removes WORK. Then wait_ok, pod_field,
# cpu_ticks and ctx_switches help measure the lab's pods.

bench_tools() {
	if [ "$(id -u)" != 0 ]; then
		echo "$1: the lab needs root (network namespaces, nftables)" >&2
		exit 1
	fi
	source scripts/lib.sh
	ensure_apt
	ensure_go_tool fortio fortio.org/fortio@v1.68.2
	FORTIO=$(command -v fortio)
	# MESHGUARD_BIN: benchmark this binary instead of building the working tree.
	if [ -n "${MESHGUARD_BIN:-}" ]; then
		MG=$(realpath "$MESHGUARD_BIN")
	else
		build_meshguard
		MG="$ROOT/bin/meshguard"
	fi
}

lab_daemon_alive() {
	local pid
	pid=$(jq -r '.daemon.pid // 0' /run/meshguard/lab/state.json 2>/dev/null) || return 1
	[ "$pid" -gt 0 ] && tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | grep -q 'lab daemon'
}

bench_lab_begin() {
	local name=$1 wait=$2 i
	BENCH_NAME=$name
	mkdir -p /run/meshguard
	exec 9>/run/meshguard/e2e-lab.lock
	if ! flock -w "$wait" 9; then
		echo "$name: another process holds /run/meshguard/e2e-lab.lock for over $wait s" >&2
		exit 1
	fi
	# A lab someone else brought up (without the lock) is theirs: wait for it, never stop it.
	# A stale one (its daemon gone) is what 'lab up' cleans first.
	for i in $(seq 60); do
		lab_daemon_alive || break
		if [ "$i" = 60 ]; then
			echo "$name: a lab has been running on this machine for 5 minutes; not touching it ('meshguard lab down' first)" >&2
			exit 1
		fi
		[ "$i" = 1 ] && echo "$name: a lab is running on this machine; waiting for it to go (up to 5 minutes)" >&2
		sleep 5 # poll interval of a bounded wait
	done
	WORK=$(mktemp -d "/tmp/meshguard-${name##*/}.XXXXXX") # 0700
	LAB_UP=0
	trap bench_lab_cleanup EXIT
	trap 'exit 130' INT TERM
	export HOME="$WORK/home"
	mkdir -p "$HOME"
}

bench_lab_cleanup() {
	local rc=$?
	if [ "$LAB_UP" = 1 ]; then
		timeout 120 "$MG" lab down >/dev/null 2>&1 || echo "$BENCH_NAME: lab down failed; run 'meshguard lab down'" >&2
	fi
	rm -rf "$WORK"
	exit $rc
}

# wait_ok POD URL: up to 30 s for one 200 from URL inside POD.
wait_ok() {
	local i
	for i in $(seq 60); do
		if "$MG" lab exec "$1" -- curl -fsS -o /dev/null --max-time 2 "$2" 2>/dev/null; then
			return 0
		fi
		sleep 0.5 # poll interval of a bounded wait for the pods to come up
	done
	return 1
}

# pod_field POD JQ-PATH: a field of the lab's state for POD, e.g. pod_field app .sidecarProc.pid.
pod_field() { jq -r --arg n "$1" ".pods[] | select(.name == \$n) | $2" /run/meshguard/lab/state.json; }

cpu_ticks() { # cpu_ticks PID...: sum of utime+stime (clock ticks) over the pids
	local t=0 p
	for p in "$@"; do
		t=$((t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' /proc/"$p"/stat)))
	done
	echo $t
}

ctx_switches() { # ctx_switches PID...: voluntary + involuntary context switches of all their threads
	local p t=0
	for p in "$@"; do
		t=$((t + $(cat /proc/"$p"/task/*/status 2>/dev/null | awk '/ctxt_switches:/ { t += $2 } END { print t + 0 }')))
	done
	echo $t
}
