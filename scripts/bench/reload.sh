#!/usr/bin/env bash
# Reload under load, with the full 1,062,258-name threat list:
#  1. start from the feeds, then restart from the snapshot (start-up times);
#  2. run dnsperf at a steady rate against listed names (answered from the
#     blocklist, so no upstream is needed) while 10 new feed files are
#     dropped, one every 3 s; time how long each takes to block;
#  3. report lost queries and the reload times from the log.
# Needs: a release build (cargo build --release), dnsperf and dig
# (apt-get install dnsperf dnsutils), and the shared data
# (PORTCULLIS_BENCH_DATA, default ../shared/data beside the repository).
# Loopback only; bounded in time (about a minute).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN=${BIN:-target/release/portcullis}
DATA=${PORTCULLIS_BENCH_DATA:-$ROOT/../shared/data}
PORT=${PORT:-5391}
RATE=${RATE:-20000}
RELOADS=${RELOADS:-10}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -f "$DATA/threat-domains.tsv.gz" ] || { echo "no threat-domains.tsv.gz in $DATA (set PORTCULLIS_BENCH_DATA)" >&2; exit 1; }
command -v dnsperf >/dev/null || { echo "needs dnsperf (apt-get install dnsperf)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/portcullis-reload.XXXXXX)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/feeds"
ln -s "$(realpath "$DATA/threat-domains.tsv.gz")" "$WORK/feeds/threat-domains.tsv.gz"
cat > "$WORK/portcullis.toml" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
allow_unknown_clients = true
[resolver]
# The peers run unvalidated in these workloads; so do we.
dnssec = "off"
mode = "forward"
upstreams = ["127.0.0.1:9"]
# Names not yet listed go upstream to a dead port: fail fast so the
# polling dig is not held up by its own 1 s timeout.
timeout_ms = 100
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
debounce_ms = 200
[admin]
listen = ""
TOML

start() {  # sets PID and STARTUP_MS
  taskset -c 0 "$BIN" serve --config "$WORK/portcullis.toml" >/dev/null 2>"$WORK/$1.log" &
  PID=$!
  for _ in $(seq 1 300); do grep -q "serving" "$WORK/$1.log" && break; sleep 0.05; done
  STARTUP_MS=$(grep -o 'startup_ms=[0-9]*' "$WORK/$1.log" | cut -d= -f2)
}
start feeds
FROM_FEEDS=$STARTUP_MS
for _ in $(seq 1 100); do [ -f "$WORK/state/blocklist.snapshot" ] && break; sleep 0.1; done
sleep 0.5
RSS_FEEDS=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
kill $PID; wait $PID 2>/dev/null || true
start snapshot
FROM_SNAPSHOT=$STARTUP_MS
RSS_SNAPSHOT=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)

zcat "$DATA/threat-domains.tsv.gz" | cut -f1 | grep -v '^#' | shuf -n 20000 --random-source=<(yes) | sed 's/$/ A/' > "$WORK/queries.txt"
taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$WORK/queries.txt" -l $((RELOADS * 3 + 6)) -Q $RATE -c 4 > "$WORK/dnsperf.txt" 2>&1 &
PERF=$!
sleep 2
LAT=()
for i in $(seq 1 $RELOADS); do
  for j in $(seq 1 100); do echo "reload$i-$j.portcullis-bench.example"; done > "$WORK/feeds/.drop$i.tmp"
  T0=$(date +%s%N)
  mv "$WORK/feeds/.drop$i.tmp" "$WORK/feeds/drop$i.txt"
  until dig +tries=1 +time=1 -p $PORT @127.0.0.1 "reload$i-50.portcullis-bench.example" 2>/dev/null | grep -q "EDE: 15"; do
    sleep 0.02
    [ $(( ($(date +%s%N) - T0) / 1000000 )) -lt 10000 ] || { echo "drop $i not blocked after 10 s" >&2; break; }
  done
  LAT+=($(( ($(date +%s%N) - T0) / 1000000 )))
  sleep 2
done
wait $PERF || true
kill $PID; wait $PID 2>/dev/null || true

echo "## Reload under load ($(nproc) CPUs, $(uname -m); resolver on CPU 0, dnsperf on CPU 1)"
echo
echo "| measure | value |"
echo "|---|---|"
echo "| start-up from feeds (1,062,258 names) | ${FROM_FEEDS} ms |"
echo "| start-up from the snapshot | ${FROM_SNAPSHOT} ms |"
echo "| resident memory after start from feeds / snapshot | $((RSS_FEEDS / 1024)) MiB / $((RSS_SNAPSHOT / 1024)) MiB |"
echo "| drop-to-blocked, $RELOADS drops | ${LAT[*]} ms |"
echo "| reload (parse changed feed + merge + swap), per reload | $(grep -o 'swapped in.*took_ms=[0-9]*' "$WORK/snapshot.log" | grep -o '[0-9]*$' | tr '\n' ' ')ms |"
echo "| dnsperf at $RATE q/s | $(grep -E 'Queries (sent|completed|lost)' "$WORK/dnsperf.txt" | tr -s ' ' | tr '\n' ';') |"
