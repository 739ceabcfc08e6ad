# Sourced by the fleet benches (fleet.sh, fleet-report.sh): a throwaway
# PostgreSQL cluster in $work/pg on 127.0.0.1, with the role portcullis
# (password "bench") and the database "hits". The caller sets $work and
# traps pg_stop. As root, PostgreSQL runs as the postgres user.

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1)
[[ -n $PGBIN && -x $PGBIN/initdb ]] || { echo "$(basename "$0"): install postgresql" >&2; exit 1; }

as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# pg_start PORT [SERVER OPTIONS]
pg_start() {
    mkdir "$work/pg"
    echo bench >"$work/pw"
    [[ $(id -u) == 0 ]] && chown postgres "$work/pg" "$work/pw"
    as_pg "$PGBIN/initdb" -D "$work/pg" -U portcullis --auth-host=scram-sha-256 \
        --auth-local=trust --pwfile="$work/pw" --no-sync >/dev/null
    as_pg "$PGBIN/pg_ctl" -D "$work/pg" -w -l "$work/pg/log" -o \
        "-p $1 -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
         -c synchronous_commit=off ${2:-}" start >/dev/null
    PGPASSWORD=bench "$PGBIN/createdb" -h 127.0.0.1 -p "$1" -U portcullis hits
}

pg_stop() {
    [[ -d $work/pg ]] && as_pg "$PGBIN/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1
    return 0
}
