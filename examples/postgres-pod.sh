#!/bin/sh
# PostgreSQL as a meshguard lab pod's command (run as the postgres user): on first start initdb
# into the pod's own dir, then serve on every address of the pod with trust authentication.
# A lab fixture, not a production setup.
set -eu
dir="${MESHGUARD_POD_DIR:?run me as the command of a meshguard lab pod}"
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
data="$dir/pgdata"
if [ ! -s "$data/PG_VERSION" ]; then
	"$bin/initdb" --pgdata="$data" --username=postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
	echo "host all all 0.0.0.0/0 trust" >>"$data/pg_hba.conf"
fi
exec "$bin/postgres" -D "$data" -c listen_addresses='*' -c unix_socket_directories="$dir" -p "${PGPORT:-5432}"
