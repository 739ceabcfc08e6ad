#!/usr/bin/env bash
# Lists that grow: the shared threat list grown to 1 M, 5 M and 10 M names
# by scripts/bench/grow-list.py (real names first, then realistic
# subdomains and registrable names), each:
#  * compiled by `portcullis compile`, pinned to CPU 0: wall time and peak
#    resident memory;
#  * served from the feeds: resident memory, and bytes per name above an
#    empty list's;
#  * a blocked first pass: dnsperf (CPU 1) sends 200,000 distinct listed
#    names once each, as fast as it is answered, hit log on.
# Needs: a release build (cargo build --release), python3, dnsperf, and
# the shared data (PORTCULLIS_BENCH_DATA, default ../shared/data beside the
# repository). Loopback only; bounded (about five minutes). SIZES overrides
# the sizes (e.g. SIZES="1000000 2000000").
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN=${BIN:-target/release/portcullis}
DATA=${PORTCULLIS_BENCH_DATA:-$ROOT/../shared/data}
PORT=${PORT:-5394}
SIZES=${SIZES:-"1000000 5000000 10000000"}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -f "$DATA/threat-domains.tsv.gz" ] || { echo "no threat-domains.tsv.gz in $DATA (set PORTCULLIS_BENCH_DATA)" >&2; exit 1; }
command -v dnsperf >/dev/null || { echo "needs dnsperf (apt-get install dnsperf)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/portcullis-growth.XXXXXX)
PID=""
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

config() {  # folder
  mkdir -p "$1/feeds"
  cat > "$1/portcullis.toml" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
allow_unknown_clients = true
[resolver]
dnssec = "off"
mode = "forward"
upstreams = ["127.0.0.1:9"]
timeout_ms = 100
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
max_feed_entries = 20000000
max_feed_mib = 2048
allow_empty = true
[admin]
listen = ""
TOML
}
serve_rss() {  # folder -> sets PID, RSS (KiB) once serving
  taskset -c 0 "$BIN" serve --config "$1/portcullis.toml" >/dev/null 2>"$1/serve.log" &
  PID=$!
  for _ in $(seq 1 1200); do grep -q " serving " "$1/serve.log" && break; sleep 0.1; done
  sleep 1
  RSS=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
}

config "$WORK/empty"
serve_rss "$WORK/empty"
EMPTY=$RSS
kill $PID; wait $PID 2>/dev/null || true

printf "%-10s %10s %12s %12s %14s %12s\n" names compile_s compile_MiB serving_MiB bytes_per_name first_pass_qps
for N in $SIZES; do
  D="$WORK/n$N"
  config "$D"
  python3 scripts/bench/grow-list.py "$N" "$DATA" > "$D/feeds/grown.tsv"
  cut -f1 "$D/feeds/grown.tsv" | shuf -n 200000 --random-source=<(yes) | sed 's/$/ A/' > "$D/queries.txt"
  /usr/bin/time -f "%e %M" -o "$D/time.txt" taskset -c 0 "$BIN" compile --config "$D/portcullis.toml" > "$D/compile.txt" 2>/dev/null
  read -r SECS PEAK < "$D/time.txt"
  serve_rss "$D"
  QPS=$(taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$D/queries.txt" -n 1 -c 8 -q 500 2>/dev/null | awk '/Queries per second/ {print $4}')
  kill $PID; wait $PID 2>/dev/null || true
  rm -f "$D/feeds/grown.tsv"
  printf "%-10s %10s %12s %12s %14s %12s\n" "$N" "$SECS" "$((PEAK / 1024))" "$((RSS / 1024))" \
    "$(( (RSS - EMPTY) * 1024 / N ))" "${QPS%.*}"
done
echo "empty list serving: $((EMPTY / 1024)) MiB; machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
