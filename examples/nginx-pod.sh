#!/bin/sh
# nginx as a meshguard lab pod's command, unprivileged: config, temp dirs and pid file live in
# the pod's own dir; it answers every request on port ${PORT:-8080} with the pod's hostname.
set -eu
dir="${MESHGUARD_POD_DIR:?run me as the command of a meshguard lab pod}"
port="${1:-8080}"
mkdir -p "$dir/nginx"
cat >"$dir/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log stderr notice;
events { worker_connections 512; }
http {
	access_log /dev/stdout;
	client_body_temp_path $dir/nginx/body;
	proxy_temp_path $dir/nginx/proxy;
	fastcgi_temp_path $dir/nginx/fastcgi;
	uwsgi_temp_path $dir/nginx/uwsgi;
	scgi_temp_path $dir/nginx/scgi;
	server {
		listen $port;
		location / {
			default_type text/plain;
			return 200 "hello from $(hostname)\n";
		}
	}
}
CONF
exec nginx -e stderr -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -g 'daemon off;'
