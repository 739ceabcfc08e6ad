#!/usr/bin/env bash
# Three writer nodes into one PostgreSQL: each node (release build, one
# worker, hit log on with one record per query) gets blocked queries for
# new names at FLEET_QPS (20,000) for FLEET_SECONDS (15) from its own
# dnsperf, all at once, and forwards its records to a PostgreSQL cluster
# made here (initdb/pg_ctl in a temp dir, on 127.0.0.1).
# Prints, per node: queries answered, records written and dropped at the
# channel, rows in PostgreSQL, how long after the load the last row
# arrived, and the CPU seconds each process used (where the time goes).
# Needs dnsperf and Debian's postgresql; run as root (PostgreSQL then runs
# as the postgres user). Loopback only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release/portcullis}
QPS=${FLEET_QPS:-20000}
SECONDS_RUN=${FLEET_SECONDS:-15}
NODES=${FLEET_NODES:-3}
[[ -x $BIN ]] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v dnsperf >/dev/null || { echo "fleet.sh: install dnsperf" >&2; exit 1; }
source scripts/bench/pg-cluster.sh

work=$(mktemp -d /tmp/portcullis-fleet.XXXXXX)
chmod 755 "$work"
PORT=55432
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    pg_stop
    rm -rf "$work"
}
trap cleanup EXIT
pg_start $PORT
psql() { PGPASSWORD=bench "$PGBIN/psql" -h 127.0.0.1 -p $PORT -U portcullis -d hits -At -c "$1"; }
cpu() { awk '{ printf "%.1f", ($14 + $15) / 100 }' "/proc/$1/stat"; }

for n in $(seq 1 "$NODES"); do
    d=$work/node$n
    mkdir -p "$d/feeds"
    echo "evil.example.test" >"$d/feeds/list.txt"
    echo bench >"$d/pw"
    cat >"$d/portcullis.toml" <<TOML
[server]
listen = ["127.0.0.$((40 + n)):5300"]
allow_unknown_clients = true
workers = 1
node_id = "bench-node-$n"
[resolver]
mode = "forward"
upstreams = ["127.0.0.1:9"]
dnssec = "off"
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
[admin]
listen = "127.0.0.$((40 + n)):9153"
[hitlog]
coalesce_after = 0
postgres = "postgres://portcullis@127.0.0.1:$PORT/hits?sslmode=disable"
postgres_password_file = "pw"
[log]
level = "warn"
TOML
    "$BIN" serve --config "$d/portcullis.toml" 2>"$d/log" &
    pids+=($!)
    echo $! >"$d/pid"
    awk -v n="$n" -v total=$((QPS * SECONDS_RUN)) \
        'BEGIN { for (i = 0; i < total; i++) printf "n%d-%d.evil.example.test A\n", n, i }' >"$d/queries.txt"
done
for n in $(seq 1 "$NODES"); do
    for _ in $(seq 1 100); do
        dig +time=1 +tries=1 -p 5300 @127.0.0.$((40 + n)) evil.example.test >/dev/null 2>&1 && break
        sleep 0.1
    done
done

start=$(date +%s.%N)
perfs=()
for n in $(seq 1 "$NODES"); do
    dnsperf -s 127.0.0.$((40 + n)) -p 5300 -d "$work/node$n/queries.txt" -n 1 \
        -l "$SECONDS_RUN" -Q "$QPS" -q 500 >"$work/node$n/dnsperf.txt" 2>&1 &
    perfs+=($!)
done
for p in "${perfs[@]}"; do wait "$p" || true; done
load_end=$(date +%s.%N)

# Wait (at most 120 s) until every node's spool is empty.
for _ in $(seq 1 600); do
    left=0
    for n in $(seq 1 "$NODES"); do
        s=$(curl -s 127.0.0.$((40 + n)):9153/metrics | awk '/^portcullis_hitlog_spooled_records/ { print $2 }')
        w=$(curl -s 127.0.0.$((40 + n)):9153/metrics | awk '/^portcullis_hitlog_written_total/ { print $2 }')
        r=$(psql "SELECT count(*) FROM hits WHERE node = 'bench-node-$n'" 2>/dev/null || echo 0)
        [[ ${w:-0} == "${r:-0}" && ${s:-1} == 0 ]] || left=1
    done
    [[ $left == 0 ]] && break
    sleep 0.2
done
drained=$(date +%s.%N)

echo "| node | sent | answered q/s | written | dropped | rows in PostgreSQL | node CPU s |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for n in $(seq 1 "$NODES"); do
    d=$work/node$n
    m=$(curl -s 127.0.0.$((40 + n)):9153/metrics)
    written=$(awk '/^portcullis_hitlog_written_total/ { print $2 }' <<<"$m")
    dropped=$(awk '/^portcullis_hitlog_dropped_total/ { s += $2 } END { print s + 0 }' <<<"$m")
    sent=$(awk '/Queries sent/ { print $3 }' "$d/dnsperf.txt")
    qps=$(awk '/Queries per second/ { printf "%.0f", $4 }' "$d/dnsperf.txt")
    rows=$(psql "SELECT count(*) FROM hits WHERE node = 'bench-node-$n'")
    echo "| bench-node-$n | $sent | $qps | $written | $dropped | $rows | $(cpu "$(cat "$d/pid")") |"
done
pg_cpu=0
for p in $(pgrep -u "$( [[ $(id -u) == 0 ]] && echo postgres || id -un)" -f "postgres" || true); do
    pg_cpu=$(awk -v a="$pg_cpu" '{ printf "%.1f", a + ($14 + $15) / 100 }' "/proc/$p/stat" 2>/dev/null || echo "$pg_cpu")
done
echo
echo "load ${SECONDS_RUN} s at ${QPS} q/s per node; last row in PostgreSQL $(awk -v a="$drained" -v b="$load_end" 'BEGIN { printf "%.1f", a - b }') s after the load ended"
echo "PostgreSQL CPU s (all its processes): $pg_cpu; daily roll-up total: $(psql 'SELECT sum(n) FROM hits_daily')"
