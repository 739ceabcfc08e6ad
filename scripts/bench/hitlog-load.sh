#!/usr/bin/env bash
# Hit-log throughput: dnsperf sends blocked queries (names from the full
# 1,062,258-name threat list) at a steady rate for a fixed time; every one
# must be answered and land in the hit log, none dropped.
#   RATE (default 20000 q/s), SECONDS_RUN (default 30).
# dnsperf is pinned to CPU 1; the resolver (DNS workers and the hit-log
# writer thread) may use both CPUs. Prints dnsperf's counts, the metrics
# (written, dropped), and the rows in the database.
# Needs: a release build, dnsperf, curl, sqlite3, and the shared data
# (PORTCULLIS_BENCH_DATA, default ../shared/data beside the repository).
# Loopback only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN=${BIN:-target/release/portcullis}
DATA=${PORTCULLIS_BENCH_DATA:-$ROOT/../shared/data}
PORT=${PORT:-5392}
ADMIN=${ADMIN:-9392}
RATE=${RATE:-20000}
SECONDS_RUN=${SECONDS_RUN:-30}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -f "$DATA/threat-domains.tsv.gz" ] || { echo "no threat-domains.tsv.gz in $DATA (set PORTCULLIS_BENCH_DATA)" >&2; exit 1; }
for tool in dnsperf curl sqlite3; do
  command -v $tool >/dev/null || { echo "needs $tool (apt-get install dnsperf curl sqlite3)" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/portcullis-hitlog.XXXXXX)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/feeds"
ln -s "$(realpath "$DATA/threat-domains.tsv.gz")" "$WORK/feeds/threat-domains.tsv.gz"
cat > "$WORK/portcullis.toml" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
[resolver]
# The peers run unvalidated in these workloads; so do we.
dnssec = "off"
mode = "forward"
upstreams = ["127.0.0.1:9"]
timeout_ms = 100
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
[[organisation]]
id = "bench"
networks = ["127.0.0.0/8"]
[admin]
listen = "127.0.0.1:$ADMIN"
[log]
level = "warn"
TOML

"$BIN" serve --config "$WORK/portcullis.toml" >/dev/null 2>"$WORK/serve.log" &
PID=$!
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$ADMIN/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

zcat "$DATA/threat-domains.tsv.gz" | cut -f1 | grep -v '^#' | shuf -n 100000 --random-source=<(yes) | sed 's/$/ A/' > "$WORK/queries.txt"
taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$WORK/queries.txt" -l "$SECONDS_RUN" -Q "$RATE" -c 8 > "$WORK/dnsperf.txt" 2>&1

# Sum of a series' samples (0 when it has none yet).
metric() { curl -s "http://127.0.0.1:$ADMIN/metrics" | { grep -E "^$1" || true; } | awk '{s += $NF} END {printf "%d", s}'; }
# Let the writer finish what is queued: until every blocked query is
# written or dropped (a batch of up to 16,384 records can take a good
# part of a second, so an unchanged count alone does not mean done), for
# at most 30 s.
BLOCKED=$(metric 'portcullis_queries_total\{.*outcome="blocked"')
for _ in $(seq 1 150); do
  DONE=$(( $(metric portcullis_hitlog_written_total) + $(metric portcullis_hitlog_dropped_total) ))
  [ "$DONE" -ge "$BLOCKED" ] && break
  sleep 0.2
done
WRITTEN=$(metric portcullis_hitlog_written_total)
DROPPED=$(metric portcullis_hitlog_dropped_total)
ROWS=$(sqlite3 "$WORK/state/hits.sqlite" 'SELECT count(*) FROM hits')
kill $PID; wait $PID 2>/dev/null || true

echo "## Hit log under load ($(nproc) CPUs, $(uname -m); dnsperf on CPU 1, $RATE q/s for $SECONDS_RUN s)"
echo
echo "| measure | value |"
echo "|---|---|"
echo "| dnsperf | $(grep -E 'Queries (sent|completed|lost)' "$WORK/dnsperf.txt" | tr -s ' ' | tr '\n' ';') |"
echo "| blocked queries counted | $BLOCKED |"
echo "| hit records written / dropped | $WRITTEN / $DROPPED |"
echo "| rows in hits.sqlite | $ROWS |"
