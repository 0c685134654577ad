#!/usr/bin/env bash
# Threat detection latency through the mesh: fortio load against fortio server in the lab
# (bench/threats-topology.yaml), side by side in one run, for three requests (a GET with a
# query, a 1 KB form POST, a 100 KB JSON POST):
#   direct     client -> app (no mesh)
#   off        client -> sidecar -> mTLS -> sidecar (--threat-detection=false) -> app
#   built-in   the same with the built-in detectors (the default)
#   waf        the same, the server's group with the WAF sensor (action alert)
# The sidecar flag is per lab, so "off" runs in a second lab (mesh: {threatDetection: false});
# each lab measures its own direct path and added latency is against it.
# Root. Installs what it needs (scripts/lib.sh). Usage: bench/threats.sh [--smoke]
#   --smoke: 2 s per cell, to check the harness end to end.
#   MESHGUARD_BIN=path: use that meshguard binary instead of building ./cmd/meshguard.
#   QPS=N (default 50), CONNS=N (default 4), DUR=20s: the fixed-rate load of each cell.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# 50 qps, not more: the WAF costs ~12 ms of CPU per request in process, so 200 qps would
# measure a saturated 2-core machine, not the latency a request gains.
QPS=${QPS:-50} CONNS=${CONNS:-4} DUR=${DUR:-20s}
case "${1:-}" in
--smoke) DUR=2s ;;
"") ;;
*) echo "usage: bench/threats.sh [--smoke]" >&2; exit 2 ;;
esac
source bench/lib.sh
bench_tools bench/threats.sh
"$MG" sidecar --help 2>/dev/null | grep -q -- --threat-detection || {
	echo "bench/threats.sh: $MG has no 'sidecar --threat-detection' flag (build the working tree)" >&2
	exit 1
}
bench_lab_begin bench/threats.sh 900

# The request bodies: a 1 KB sign-up/contact form and a 100 KB page of an orders API, both
# ordinary traffic (deterministic, so runs compare).
python3 - "$WORK" <<'PY'
import json, random, sys, urllib.parse
work = sys.argv[1]
rnd = random.Random(7)
form = [("csrf_token", "%032x" % rnd.getrandbits(128)), ("first_name", "Marie"), ("last_name", "Dubois-Laurent"),
        ("email", "marie.dubois@example.com"), ("phone", "+33 6 12 34 56 78"), ("company", "Atelier Lumière SARL"),
        ("street", "12 rue des Lilas, bât. B"), ("city", "Lyon"), ("zip", "69003"), ("country", "FR"),
        ("topic", "order-exchange"), ("order_id", "48213"), ("newsletter", "on"), ("consent", "yes")]
msg = ("Hello, the blue wool jacket from order 48213 arrived last Tuesday in size L; I'd like to exchange it "
       "for a medium, same colour if you still have it (otherwise navy is fine). The parcel is unopened apart "
       "from the try-on. Could you send a prepaid return label to the address above? I am at home weekdays "
       "after 6 pm, or the concierge can take it. Thanks a lot & have a nice day, Marie. ")
body = urllib.parse.urlencode(form + [("message", "")])
room = 1024 - len(body)
while len(urllib.parse.quote_plus(msg)) < room:
    msg += msg
m = msg
while len(urllib.parse.quote_plus(m)) > room:
    m = m[:-1]
body = urllib.parse.urlencode(form + [("message", m)])
body += "x" * (1024 - len(body))  # pad the last character if quoting overshot by one
open(f"{work}/form.txt", "w").write(body[:1024])

first = ["Anna", "Luca", "Sofia", "Noah", "Emma", "Mateo", "Chloé", "Jonas", "Aiko", "Omar", "Lena", "Ravi"]
last = ["Schmidt", "Rossi", "García", "Novak", "Dubois", "Tanaka", "Haddad", "Jensen", "Kowalski", "Silva"]
cities = [("Berlin", "10115", "DE"), ("Milano", "20121", "IT"), ("Madrid", "28001", "ES"), ("Praha", "11000", "CZ"),
          ("Osaka", "530-0001", "JP"), ("Lisboa", "1100-148", "PT")]
products = [("TS-1042", "Organic cotton T-shirt"), ("JK-2201", "Wool jacket, slim fit"), ("SN-0815", "Trail running shoes"),
            ("BG-3300", "Canvas backpack 22 l"), ("SC-0101", "Merino scarf"), ("MG-7777", "Ceramic mug, 350 ml")]
orders = []
doc = {"object": "list", "page": {"size": 0, "next": "/api/v2/orders?cursor=b3JkXzEwMDA&limit=50"}, "data": orders}
i = 0
while True:
    f, l = rnd.choice(first), rnd.choice(last)
    c = rnd.choice(cities)
    items = []
    for _ in range(rnd.randint(1, 4)):
        sku, name = rnd.choice(products)
        items.append({"sku": sku, "name": name, "quantity": rnd.randint(1, 3), "unitPrice": {"amount": rnd.randint(500, 19900), "currency": "EUR"},
                      "options": {"size": rnd.choice(["S", "M", "L", "XL"]), "color": rnd.choice(["navy", "black", "sand", "forest green"])}})
    orders.append({"id": f"ord_{100000 + i}", "status": rnd.choice(["paid", "shipped", "delivered", "refunded"]),
                   "createdAt": f"2026-11-{1 + i % 24:02d}T{8 + i % 12:02d}:{i % 60:02d}:{(7 * i) % 60:02d}Z",
                   "customer": {"id": f"cus_{rnd.getrandbits(40):010x}", "name": f"{f} {l}", "email": f"{f.lower()}.{l.lower()}@example.org",
                                "address": {"line1": f"{rnd.randint(1, 200)} Main Street", "city": c[0], "postalCode": c[1], "country": c[2]}},
                   "items": items, "total": {"amount": sum(x["quantity"] * x["unitPrice"]["amount"] for x in items), "currency": "EUR"},
                   "shipping": {"carrier": rnd.choice(["DHL", "UPS", "La Poste"]), "tracking": f"JJD{rnd.getrandbits(48):014d}"},
                   "notes": rnd.choice(["", "Leave at the front desk, please.", "Gift wrap (birthday)", "Call before delivery: +49 30 1234567"]),
                   "metadata": {"channel": rnd.choice(["web", "ios", "android"]), "campaign": rnd.choice([None, "black-friday-2026", "newsletter-11"])}})
    doc["page"]["size"] = len(orders)
    s = json.dumps(doc, ensure_ascii=False, indent=1)
    if len(s.encode()) >= 100 * 1024:
        orders.pop()
        doc["page"]["size"] = len(orders)
        break
    i += 1
open(f"{work}/orders.json", "w").write(json.dumps(doc, ensure_ascii=False, indent=1))
PY
FORM_BYTES=$(stat -c %s "$WORK/form.txt") JSON_BYTES=$(stat -c %s "$WORK/orders.json")

# REQ: name -> fortio arguments and path.
REQS=(get form json)
declare -A REQ_ARGS=([get]="" [form]="-payload-file $WORK/form.txt -content-type application/x-www-form-urlencoded"
	[json]="-payload-file $WORK/orders.json -content-type application/json")
declare -A REQ_PATH=([get]="/echo?size=1024&q=trail+running+shoes&page=2&sort=price" [form]="/echo?size=1024" [json]="/echo?size=1024")
declare -A REQ_DESC=([get]="GET, 1 KB response" [form]="POST form $FORM_BYTES B" [json]="POST JSON $JSON_BYTES B")

topology() { # topology off|on
	if [ "$1" = off ]; then
		sed -e "s|@FORTIO@|$FORTIO|g" -e 's|^@MESH@$|mesh: {threatDetection: false}|' -e '/# waf:begin/,/# waf:end/d' bench/threats-topology.yaml
	else
		sed -e "s|@FORTIO@|$FORTIO|g" -e 's|^@MESH@$||' bench/threats-topology.yaml
	fi >"$WORK/topology-$1.yaml"
}

# need_ok POD URL: wait_ok (bench/lib.sh), or stop the run saying which path does not answer.
need_ok() {
	wait_ok "$1" "$2" || { echo "bench/threats.sh: $2 not answering from $1 within 30 s" >&2; return 1; }
}

# events_of NAME DEST: how many stored threat events NAME (any name: "") have DEST as destination.
events_of() {
	"$MG" get events --kind threat --since 1h --limit 0 -o json 2>/dev/null |
		jq --arg n "$1" --arg d "$2" '[.[]? | select(($n == "" or .name == $n) and .destination.workload == $d)] | length' 2>/dev/null || echo 0
}
# wait_event NAME DEST URL: sends a request to URL from mesh-client until a NAME event for
# DEST is stored (up to 60 s): the detector (or sensor) is live on DEST's sidecar.
wait_event() {
	local i
	for i in $(seq 30); do
		"$MG" lab exec mesh-client -- curl -s -o /dev/null --max-time 2 "$3" 2>/dev/null || true
		[ "$(events_of "$1" "$2")" -gt 0 ] && return 0
		sleep 2 # poll interval of a bounded wait for config and event delivery
	done
	echo "bench/threats.sh: no $1 event for $2 within 60 s" >&2
	return 1
}

load() { # load POD URL OUT.json FORTIO-ARGS...; one retry if fortio dies while the lab is still ours
	local pod=$1 url=$2 out=$3 try
	shift 3
	for try in 1 2; do
		# shellcheck disable=SC2068 # the request's fortio arguments are words
		if "$MG" lab exec "$pod" -- "$FORTIO" load -quiet -qps "$QPS" -uniform -c "$CONNS" -t "$DUR" -json "$out" $@ "$url" >"$WORK/fortio.log" 2>&1; then
			return 0
		fi
		cat "$WORK/fortio.log" >&2
		if ! lab_daemon_alive; then
			echo "bench/threats.sh: the lab was stopped under us (by a process not holding /run/meshguard/e2e-lab.lock?)" >&2
			exit 1
		fi
		[ $try = 1 ] && echo "bench/threats.sh: fortio load in $pod failed with the lab still up; retrying once" >&2
	done
	exit 1
}

# cell SETUP POD HOST SERVER-POD: the three requests against HOST, with the server sidecar's CPU.
cell() {
	local setup=$1 pod=$2 host=$3 server=$4 r pid t0 t1
	pid=0
	[ "$server" != - ] && pid=$(pod_field "$server" .sidecarProc.pid)
	for r in "${REQS[@]}"; do
		t0=0
		[ "$pid" != 0 ] && t0=$(cpu_ticks "$pid")
		# shellcheck disable=SC2086
		load "$pod" "http://$host:8080${REQ_PATH[$r]}" "$WORK/$setup.$r.json" ${REQ_ARGS[$r]}
		t1=0
		[ "$pid" != 0 ] && t1=$(cpu_ticks "$pid")
		echo "$((t1 - t0))" >"$WORK/$setup.$r.cpu"
		cut -d' ' -f1 /proc/loadavg >"$WORK/$setup.$r.load"
		printf '%s %s: done\n' "$setup" "$r" >&2
	done
}

APP_MESH=app-mesh.bench.svc.cluster.local APP_WAF=app-waf.bench.svc.cluster.local APP_DIRECT=app-direct.bench.svc.cluster.local
echo "machine: $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg) before the runs; $("$FORTIO" version | head -1 | sed 's/^/fortio /'); meshguard ${MESHGUARD_BIN:-working tree at $(git rev-parse --short HEAD 2>/dev/null || echo '?')}"

# Lab 1: detection on (the default): direct, built-in, waf.
topology on
LAB_UP=1
"$MG" lab up -f "$WORK/topology-on.yaml"
need_ok client "http://$APP_DIRECT:8080/echo?size=16"
need_ok mesh-client "http://$APP_MESH:8080/echo?size=16"
need_ok mesh-client "http://$APP_WAF:8080/echo?size=16"
# The built-in detectors are live on app-mesh (an SQL injection is reported; the auto group
# is in discover mode, so nothing is blocked).
wait_event sqli bench/app-mesh "http://$APP_MESH:8080/echo?size=16&id=1%27%20OR%20%271%27%3D%271"
"$MG" sensor enable bench/app-waf waf --action alert
wait_event waf bench/app-waf "http://$APP_WAF:8080/echo?size=16&q=%3Cscript%3Ealert(document.cookie)%3C/script%3E"
declare -A EV0=([builtin]=$(events_of "" bench/app-mesh) [waf]=$(events_of "" bench/app-waf))
cell direct1 client "$APP_DIRECT" -
cell builtin mesh-client "$APP_MESH" app-mesh
cell waf mesh-client "$APP_WAF" app-waf
declare -A EV=([builtin]=$(($(events_of "" bench/app-mesh) - EV0[builtin])) [waf]=$(($(events_of "" bench/app-waf) - EV0[waf])))
# What fired (the probes above included), for the record: count, name, request, reason.
"$MG" get events --kind threat --since 1h --limit 0 -o json 2>/dev/null |
	jq -r '[.[]? | select(.destination.workload | test("^bench/app-(mesh|waf)$")) | "\(.destination.workload) \(.name) \(.action) \(.l7 // "" | .[:60]) \(.reason // "" | .[:140]) evidence \(.evidence // "" | @base64d | .[:80] | @json)"] | group_by(.) | map("\(length)x \(.[0])") | .[]' >&2 || true
timeout 120 "$MG" lab down >/dev/null
LAB_UP=0

# Lab 2: --threat-detection=false on every sidecar: direct, off.
topology off
LAB_UP=1
"$MG" lab up -f "$WORK/topology-off.yaml"
tr '\0' ' ' </proc/"$(pod_field app-mesh .sidecarProc.pid)"/cmdline | grep -q -- '--threat-detection=false' || {
	echo "bench/threats.sh: the app-mesh sidecar was not started with --threat-detection=false" >&2
	exit 1
}
need_ok client "http://$APP_DIRECT:8080/echo?size=16"
need_ok mesh-client "http://$APP_MESH:8080/echo?size=16"
EV0[off]=$(events_of "" bench/app-mesh)
"$MG" lab exec mesh-client -- curl -s -o /dev/null --max-time 2 "http://$APP_MESH:8080/echo?size=16&id=1%27%20OR%20%271%27%3D%271" || true
cell direct2 client "$APP_DIRECT" -
cell off mesh-client "$APP_MESH" app-mesh
EV[off]=$(($(events_of "" bench/app-mesh) - EV0[off])) # the SQL injection probe included: 0 when nothing inspects

echo "threat events stored during the runs: off ${EV[off]} (incl. one SQL injection probe), built-in ${EV[builtin]}, waf ${EV[waf]}" >&2
python3 - "$WORK" "$(getconf CLK_TCK)" "$QPS" "$CONNS" "$DUR" "${EV[off]}" "${EV[builtin]}" "${EV[waf]}" "${REQ_DESC[get]}" "${REQ_DESC[form]}" "${REQ_DESC[json]}" <<'PY'
import json, sys
work, hz, qps, conns, dur = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ev = dict(off=sys.argv[6], builtin=sys.argv[7], waf=sys.argv[8])
desc = dict(get=sys.argv[9], form=sys.argv[10], json=sys.argv[11])
def row(setup, r):
    d = json.load(open(f"{work}/{setup}.{r}.json"))
    p = {x["Percentile"]: x["Value"] * 1e3 for x in d["DurationHistogram"]["Percentiles"]}
    n = d["DurationHistogram"]["Count"]
    cpu = int(open(f"{work}/{setup}.{r}.cpu").read())
    return dict(p50=p[50], p90=p[90], p99=p[99], n=n, ok=d["RetCodes"].get("200", 0), qps=d["ActualQPS"],
                cpu=cpu / hz * 1e3 / n if n and cpu else None, load=open(f"{work}/{setup}.{r}.load").read().strip())
print(f"\nfortio load -qps {qps} -uniform -c {conns} -t {dur} per cell; added = setup minus the direct run of the same lab\n")
print("| request | setup | 200s | p50 ms | p90 ms | p99 ms | added p50 | added p90 | added p99 | server sidecar CPU ms/req | load |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in ("get", "form", "json"):
    base = {"direct1": row("direct1", r), "direct2": row("direct2", r)}
    for setup, lab, name in (("direct2", "direct2", "direct (lab 2)"), ("off", "direct2", "no detectors"),
                             ("direct1", "direct1", "direct (lab 1)"), ("builtin", "direct1", "built-in"), ("waf", "direct1", "WAF sensor")):
        x, b = row(setup, r), base[lab]
        add = "| - | - | -" if setup.startswith("direct") else f"| {x['p50']-b['p50']:+.3f} | {x['p90']-b['p90']:+.3f} | {x['p99']-b['p99']:+.3f}"
        cpu = "-" if x["cpu"] is None else f"{x['cpu']:.2f}"
        print(f"| {desc[r]} | {name} | {x['ok']}/{x['n']} | {x['p50']:.3f} | {x['p90']:.3f} | {x['p99']:.3f} {add} | {cpu} | {x['load']} |")
print(f"\nthreat events stored during the runs: no detectors {ev['off']} (an SQL injection probe sent first: 0 = nothing "
      f"inspected), built-in {ev['builtin']}, WAF sensor {ev['waf']} (benign requests only: 0 = no false positive)")
PY
echo "load after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
