#!/usr/bin/env bash
# Regenerates the odd-client captures of testdata/odd (root; loopback and a throwaway netns only).
# Usage: internal/inspect/testdata/odd/make.sh [name...]   (no name: all)
# Names: websocket redis-midstream redis-pipeline openssl http10 dns-tcp ipv6 postgres fragments
#        connect ssh grpc-stream h2-tls
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
A=127.0.0.9

cap() { # cap NAME FILTER -- starts tcpdump into $work/NAME.pcap; stop with stopcap
	tcpdump -i lo --immediate-mode -s 0 -U -w "$work/$1.pcap" "$2" 2>/dev/null &
	cappid=$!
	for _ in $(seq 50); do [ -s "$work/$1.pcap" ] && break; sleep 0.1; done
	sleep 0.3
}
stopcap() { sleep 0.3; kill "$cappid"; wait "$cappid" 2>/dev/null || true; cp "$work/$1.pcap" "$here/$1.pcap"; }

want() { [ -z "$names" ] || [[ " ${names} " == *" $1 "* ]]; }
names="${*:-}"

if want websocket; then
	cap ws-18081 "host $A and tcp port 18081"
	python3 "$here/ws_peer.py" $A 18081
	stopcap ws-18081
fi

if want redis-midstream || want redis-pipeline; then
	redis-server --bind $A --port 16380 --save '' --appendonly no --daemonize no >/dev/null &
	rpid=$!
	for _ in $(seq 50); do redis-cli -h $A -p 16380 ping >/dev/null 2>&1 && break; sleep 0.1; done
	if want redis-midstream; then
		# One long-lived redis-cli session; the capture starts after its first commands.
		mkfifo "$work/in"
		redis-cli -h $A -p 16380 <"$work/in" >/dev/null &
		exec 3>"$work/in"
		printf 'SET greeting hello\nGET greeting\nLPUSH l a b c\n' >&3
		sleep 0.5
		cap redis-midstream-16380 "host $A and tcp port 16380"
		printf 'LRANGE l 0 -1\nGET greeting\nINCR counter\nHSET h f v\nHGETALL h\n' >&3
		sleep 0.5
		stopcap redis-midstream-16380
		exec 3>&-
		wait %redis-cli 2>/dev/null || true
	fi
	if want redis-pipeline; then
		cap redis-pipeline-16380 "host $A and tcp port 16380"
		redis-benchmark -h $A -p 16380 -c 1 -n 64 -P 16 -t set,get -q >/dev/null
		stopcap redis-pipeline-16380
	fi
	kill $rpid; wait $rpid 2>/dev/null || true
fi

if want openssl; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/key.pem" \
		-out "$work/cert.pem" -days 2 -subj /CN=odd.test 2>/dev/null
	openssl s_server -accept $A:14433 -cert "$work/cert.pem" -key "$work/key.pem" -www -quiet >/dev/null 2>&1 &
	spid=$!
	sleep 0.5
	cap openssl-14433 "host $A and tcp port 14433"
	echo | openssl s_client -connect $A:14433 -servername odd.test -tls1_2 -alpn http/1.1 -sess_out "$work/s12" >/dev/null 2>&1 || true
	echo | openssl s_client -connect $A:14433 -servername odd.test -tls1_2 -sess_in "$work/s12" >/dev/null 2>&1 || true
	echo | openssl s_client -connect $A:14433 -servername odd.test -tls1_3 -sess_out "$work/s13" >/dev/null 2>&1 || true
	echo | openssl s_client -connect $A:14433 -servername odd.test -tls1_3 -sess_in "$work/s13" >/dev/null 2>&1 || true
	stopcap openssl-14433
	kill $spid
fi

if want http10; then
	(cd "$work" && echo hello >index.html && python3 -m http.server --bind $A 18000 >/dev/null 2>&1) &
	hpid=$!
	for _ in $(seq 50); do curl -s -o /dev/null http://$A:18000/ && break; sleep 0.1; done
	cap http10-18000 "host $A and tcp port 18000"
	wget -q -O /dev/null http://$A:18000/index.html
	python3 - $A <<'PY'
import socket, sys
# HTTP/1.1 pipelining: three requests in one write on one connection (HTTP/1.0 server closes after one).
s = socket.create_connection((sys.argv[1], 18000))
s.sendall(b"".join(b"GET /index.html?%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3)))
while s.recv(65536): pass
import http.client
c = http.client.HTTPConnection(sys.argv[1], 18000); c.putrequest("POST", "/upload"); c.putheader("Transfer-Encoding", "chunked"); c.endheaders()
for part in (b"abc", b"defgh"): c.send(b"%x\r\n%s\r\n" % (len(part), part))
c.send(b"0\r\n\r\n"); c.getresponse().read()
PY
	stopcap http10-18000
	kill $hpid
fi

if want dns-tcp; then
	# Several queries on one TCP connection (dig +keepopen) to the testdata/gen DNS server.
	repo=$(cd "$here/../../../.." && pwd)
	(cd "$repo" && go build -o "$work/gen" ./internal/inspect/testdata/gen)
	"$work/gen" -mode dns-server -addr $A:5301 &
	gpid=$!
	for _ in $(seq 50); do dig +short +tcp @$A -p 5301 a.meshguard.test >/dev/null 2>&1 && break; sleep 0.1; done
	cap dig-tcp-keepopen-5301 "host $A and tcp port 5301"
	dig +tcp +keepopen @$A -p 5301 a.meshguard.test b.meshguard.test TXT alias.meshguard.test nx.example. MX >/dev/null
	stopcap dig-tcp-keepopen-5301
	kill $gpid
fi

if want ipv6; then
	redis-server --bind ::1 --port 16381 --save '' --appendonly no --daemonize no >/dev/null &
	rpid=$!
	(cd "$work" && echo hello >index.html && python3 -m http.server --bind ::1 18001 >/dev/null 2>&1) &
	hpid=$!
	for _ in $(seq 50); do redis-cli -h ::1 -p 16381 ping >/dev/null 2>&1 && curl -s -o /dev/null "http://[::1]:18001/" && break; sleep 0.1; done
	cap ipv6-redis-http "ip6 host ::1 and (tcp port 16381 or tcp port 18001)"
	redis-cli -h ::1 -p 16381 SET k6 v6 >/dev/null
	redis-cli -h ::1 -p 16381 GET k6 >/dev/null
	wget -q -O /dev/null "http://[::1]:18001/index.html"
	stopcap ipv6-redis-http
	kill $rpid $hpid
fi

if want postgres; then
	bin=/usr/lib/postgresql/15/bin
	chmod 755 "$work"
	mkdir -p "$work/pg" "$work/pgsock" && chown postgres "$work/pg" "$work/pgsock"
	su postgres -c "$bin/initdb -D $work/pg -A trust -U postgres" >/dev/null
	su postgres -c "$bin/pg_ctl -D $work/pg -w -l $work/pgsock/pg.log -o '-p 15432 -k $work/pgsock -c listen_addresses=$A' start" >/dev/null
	pgbench -h "$work/pgsock" -p 15432 -U postgres -i -s 1 -q postgres >/dev/null 2>&1
	conn="host=$A port=15432 user=postgres dbname=postgres sslmode=disable"
	# pgbench -S over the extended query protocol (Parse/Bind/Execute), a bounded count.
	cap pgbench-extended-15432 "host $A and tcp port 15432"
	pgbench -h $A -p 15432 -U postgres -S -M prepared -t 20 -c 1 postgres >/dev/null 2>&1
	stopcap pgbench-extended-15432
	# COPY both ways.
	cap psql-copy-15432 "host $A and tcp port 15432"
	psql "$conn" -q -c "CREATE TABLE c (a int, b text)" -c "\\copy c from stdin" -c "COPY (SELECT * FROM c) TO STDOUT" -c "DROP TABLE c" <<'DATA' >/dev/null
1	one
2	two
3	three
\.
DATA
	stopcap psql-copy-15432
	# A long psql session picked up after its startup and first queries.
	mkfifo "$work/pgin"
	psql "$conn" -q <"$work/pgin" >/dev/null &
	exec 4>"$work/pgin"
	printf 'SELECT 1;\nSELECT count(*) FROM pgbench_branches;\n' >&4
	sleep 0.5
	cap psql-midstream-15432 "host $A and tcp port 15432"
	printf 'SELECT aid, abalance FROM pgbench_accounts WHERE aid < 4;\nUPDATE pgbench_tellers SET tbalance = 0 WHERE tid = 1;\nSELECT now();\n' >&4
	sleep 0.5
	stopcap psql-midstream-15432
	exec 4>&-
	sleep 0.2
	su postgres -c "$bin/pg_ctl -D $work/pg -w -m fast stop" >/dev/null
fi

if want fragments; then
	# IP fragments need an MTU below the datagram: a veth pair at 1500 into a throwaway netns.
	ns=mgfrag$$
	ip netns add $ns
	trap 'ip link del mgf0 2>/dev/null; ip netns del '$ns' 2>/dev/null; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
	ip link add mgf0 type veth peer name mgf1
	ip link set mgf1 netns $ns
	ip addr add 10.213.0.1/24 dev mgf0; ip addr add fd77::1/64 dev mgf0 nodad; ip link set mgf0 up mtu 1500
	ip -n $ns addr add 10.213.0.2/24 dev mgf1; ip -n $ns addr add fd77::2/64 dev mgf1 nodad
	ip -n $ns link set mgf1 up; ip -n $ns link set lo up
	fcap() { # fcap FILE FILTER
		tcpdump -i mgf0 --immediate-mode -U -s 0 -w "$work/f.pcap" "$2" 2>/dev/null &
		cappid=$!; sleep 1
	}
	fstop() { sleep 0.5; kill "$cappid"; wait "$cappid" 2>/dev/null || true; cp "$work/f.pcap" "$1"; }
	fcap "" 'icmp or icmp6 or (ip[6:2] & 0x3fff != 0) or (ip6 and ip6[6]==44)'
	ping -c 2 -s 3000 -i 0.2 10.213.0.2 >/dev/null
	ping -6 -c 2 -s 3000 -i 0.2 fd77::2 >/dev/null
	fstop "$here/../icmp/ping-s3000-fragmented.pcap"
	ip netns exec $ns timeout 20 python3 "$here/bigdns_peer.py" 10.213.0.2 1 &
	ip netns exec $ns timeout 20 python3 "$here/bigdns_peer.py" fd77::2 1 &
	sleep 0.5
	fcap "" 'udp or (ip[6:2] & 0x3fff != 0) or (ip6 and ip6[6]==44)'
	dig +bufsize=4096 +ignore +tries=1 +time=3 @10.213.0.2 big.meshguard.test TXT >/dev/null
	dig +bufsize=4096 +ignore +tries=1 +time=3 @fd77::2 big.meshguard.test TXT >/dev/null
	fstop "$here/../dns/dig-edns-fragmented.pcap"
fi

if want connect; then
	# curl through an HTTP CONNECT proxy to a TLS server: the proxy flow is http (CONNECT, 200,
	# then an opaque tunnel), the proxy-to-server flow is tls.
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/key.pem" \
		-out "$work/cert.pem" -days 2 -subj /CN=odd.test 2>/dev/null
	openssl s_server -accept $A:14434 -cert "$work/cert.pem" -key "$work/key.pem" -www -quiet >/dev/null 2>&1 &
	spid=$!
	python3 "$here/connect_proxy.py" $A 13128 1 &
	ppid=$!
	sleep 0.5
	cap connect-proxy-13128 "host $A and (tcp port 13128 or tcp port 14434)"
	curl -sk -o /dev/null --proxy http://$A:13128 https://$A:14434/ || true
	stopcap connect-proxy-13128
	kill $spid $ppid 2>/dev/null || true
fi

if want ssh; then
	# scp of 48 KB, and an ssh session picked up after its key exchange (only encrypted
	# packets: must come out unknown, not as anything else).
	mkdir -p /run/sshd
	ssh-keygen -q -t ed25519 -f "$work/hk" -N ''
	ssh-keygen -q -t ed25519 -f "$work/ck" -N ''
	cp "$work/ck.pub" "$work/ak"
	/usr/sbin/sshd -D -p 12222 -o ListenAddress=$A -h "$work/hk" -o AuthorizedKeysFile="$work/ak" \
		-o PermitRootLogin=prohibit-password -o StrictModes=no -o UsePAM=no -o PidFile=none &
	sshpid=$!
	sleep 0.5
	sshopt=(-i "$work/ck" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes)
	head -c 49152 /dev/urandom >"$work/blob"
	cap scp-12222 "host $A and tcp port 12222"
	scp -q "${sshopt[@]}" -P 12222 "$work/blob" root@$A:/dev/null
	stopcap scp-12222
	ssh "${sshopt[@]}" -p 12222 root@$A 'sleep 1.5; head -c 16384 /dev/zero; sleep 0.2' >/dev/null &
	sleep 1
	cap ssh-midstream-12222 "host $A and tcp port 12222"
	wait %ssh 2>/dev/null || true
	stopcap ssh-midstream-12222
	kill $sshpid
fi

if want grpc-stream; then
	# A server-streaming gRPC call (Health.Watch, four updates, then cancelled) on a port no
	# protocol claims.
	repo=$(cd "$here/../../../.." && pwd)
	(cd "$repo" && go build -o "$work/gen" ./internal/inspect/testdata/gen)
	"$work/gen" -mode grpc-server -addr $A:15051 &
	gpid=$!
	sleep 0.5
	cap grpc-watch-15051 "host $A and tcp port 15051"
	"$work/gen" -mode grpc-watch -addr $A:15051 >/dev/null
	stopcap grpc-watch-15051
	kill $gpid
fi

if want h2-tls; then
	# curl --http2 over TLS, three requests on one connection, IPv4 and IPv6, to nginx.
	chmod 755 "$work"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/key.pem" \
		-out "$work/cert.pem" -days 2 -subj /CN=odd.test 2>/dev/null
	cat >"$work/nginx.conf" <<NGX
daemon off; pid $work/nginx.pid; error_log stderr crit;
events {}
http {
	access_log off;
	client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
	server {
		listen $A:14443 ssl http2; listen [::1]:14443 ssl http2;
		ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;
		location / { return 200 "ok\n"; }
	}
}
NGX
	nginx -c "$work/nginx.conf" &
	npid=$!
	sleep 0.5
	cap curl-h2-tls-14443 "tcp port 14443"
	curl -sk --http2 -o /dev/null -o /dev/null -o /dev/null https://$A:14443/a https://$A:14443/b https://$A:14443/c
	curl -sk --http2 -o /dev/null -o /dev/null "https://[::1]:14443/v6a" "https://[::1]:14443/v6b"
	stopcap curl-h2-tls-14443
	kill $npid
fi
