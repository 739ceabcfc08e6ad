#!/usr/bin/env bash
# What recording metrics costs on the query path: the same blocked-query
# load (names from the full threat list, so every query takes the block
# path: lookup, metrics, hit record) with the metrics recorder off
# (`[admin] listen = ""`: every handle is a no-op) and on, alternated
# ROUNDS times. The resolver is pinned to CPU 0 and dnsperf to CPU 1,
# unthrottled, SECONDS_RUN per run. The resident memory at the end of each
# run shows whether recorded samples are let go of when nobody scrapes
# /metrics. Needs a release build, dnsperf and the shared data
# (PORTCULLIS_BENCH_DATA, default ../shared/data beside the repository).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN=${BIN:-target/release/portcullis}
DATA=${PORTCULLIS_BENCH_DATA:-$ROOT/../shared/data}
PORT=${PORT:-5393}
ROUNDS=${ROUNDS:-3}
SECONDS_RUN=${SECONDS_RUN:-10}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -f "$DATA/threat-domains.tsv.gz" ] || { echo "no threat-domains.tsv.gz in $DATA (set PORTCULLIS_BENCH_DATA)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/portcullis-metrics.XXXXXX)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/feeds"
ln -s "$(realpath "$DATA/threat-domains.tsv.gz")" "$WORK/feeds/threat-domains.tsv.gz"
zcat "$DATA/threat-domains.tsv.gz" | cut -f1 | grep -v '^#' | shuf -n 100000 --random-source=<(yes) | sed 's/$/ A/' > "$WORK/queries.txt"

run() {  # $1 = admin listen value; prints "queries per second / MiB resident at the end"
  cat > "$WORK/portcullis.toml" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
allow_unknown_clients = true
[resolver]
# The peers run unvalidated in these workloads; so do we.
dnssec = "off"
mode = "forward"
upstreams = ["127.0.0.1:9"]
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
[admin]
listen = "$1"
[log]
level = "warn"
TOML
  taskset -c 0 "$BIN" serve --config "$WORK/portcullis.toml" >/dev/null 2>"$WORK/serve.log" &
  PID=$!
  for _ in $(seq 1 300); do dig +tries=1 +time=1 -p $PORT @127.0.0.1 x.invalid >/dev/null 2>&1 && break; sleep 0.1; done
  taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$WORK/queries.txt" -l "$SECONDS_RUN" -c 8 -q 200 2>&1 \
    | awk '/Queries per second/ {printf "%d", $4}'
  awk '/^VmRSS/ {printf " / %d MiB", $2 / 1024}' "/proc/$PID/status"
  kill $PID; wait $PID 2>/dev/null || true
  PID=
}

OFF=(); ON=()
for _ in $(seq 1 "$ROUNDS"); do
  OFF+=("$(run "")")
  ON+=("$(run "127.0.0.1:9393")")
done
echo "## Metrics cost ($(nproc) CPUs, $(uname -m); resolver on CPU 0, dnsperf on CPU 1, blocked names)"
echo
echo "| metrics | queries per second / resident MiB at the end, $ROUNDS runs of $SECONDS_RUN s |"
echo "|---|---|"
printf '| off (no recorder) | %s |\n' "$(IFS=,; echo "${OFF[*]}")"
printf '| on (Prometheus recorder) | %s |\n' "$(IFS=,; echo "${ON[*]}")"
