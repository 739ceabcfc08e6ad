#!/usr/bin/env bash
# What the mixed workload of scripts/bench/peers.sh measures besides
# itself: the hit-log roll-up of the blocked workloads run just before
# it. Runs the resolver pinned to CPU 0 (dnsperf on CPU 1, as bench.sh
# does) twice:
#   quiet: 15 s benign, then 15 s mixed;
#   flood: 15 s benign, a first pass of blocked names, 15 s of repeated
#          blocked names, then 15 s mixed;
# and prints mixed q/s and the hit-log writer's CPU during the mixed run.
# Needs: a release build, dnsperf, dig, the shared data
# (PORTCULLIS_BENCH_DATA, default ../shared/data beside the repository),
# and what one run of scripts/bench/peers.sh leaves: the workloads in
# /tmp/peers-work/workloads (WORKLOADS) and the fake upstream (upstream.sh
# start in the peers harness, PORTCULLIS_PEERS_DIR).
# Loopback only; every load is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN=${BIN:-target/release/portcullis}
DATA=${PORTCULLIS_BENCH_DATA:-$ROOT/../shared/data}
PEERS_DIR=${PORTCULLIS_PEERS_DIR:-$ROOT/../shared/tools/peers}
W=${WORKLOADS:-/tmp/peers-work/workloads}
ADDR=127.0.0.20
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -f "$DATA/threat-domains.tsv.gz" ] || { echo "no threat-domains.tsv.gz in $DATA (set PORTCULLIS_BENCH_DATA)" >&2; exit 1; }
[ -f "$W/mixed.txt" ] || { echo "no workloads in $W: run scripts/bench/peers.sh once" >&2; exit 1; }
dig +time=1 +tries=1 @127.0.0.2 example.com >/dev/null 2>&1 \
  || { echo "no upstream on 127.0.0.2: bash $PEERS_DIR/upstream.sh start" >&2; exit 1; }

run() {
  local flood=$1 work pid a b
  work=$(mktemp -d /tmp/portcullis-mixed.XXXXXX)
  mkdir -p "$work/feeds"
  ln -s "$(realpath "$DATA/threat-domains.tsv.gz")" "$work/feeds/threat-domains.tsv.gz"
  cat > "$work/portcullis.toml" <<TOML
[server]
listen = ["$ADDR:53"]
allow_unknown_clients = true
workers = 1
[resolver]
# The peers run unvalidated in these workloads; so do we.
dnssec = "off"
mode = "forward"
upstreams = ["127.0.0.2:53"]
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
[admin]
listen = ""
[log]
level = "warn"
TOML
  taskset -c 0 "$BIN" serve --config "$work/portcullis.toml" >"$work/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do dig +time=1 +tries=1 @$ADDR example.com >/dev/null 2>&1 && break; sleep 0.1; done
  load() { taskset -c 1 dnsperf -s $ADDR -q 200 -c 4 "$@" 2>&1 | awk '/Queries per second/ {printf "%.0f", $4}'; }
  writer_ticks() {
    for t in /proc/$pid/task/*; do
      if [ "$(cat "$t/comm")" = portcullis-hitl ]; then awk '{print $14 + $15}' "$t/stat"; fi
    done
  }
  load -d "$W/benign.txt" -l 15 >/dev/null
  if [ "$flood" = flood ]; then
    load -d "$W/blocked.txt" -n 1 -l 60 >/dev/null
    load -d "$W/blocked.txt" -l 15 >/dev/null
  fi
  a=$(writer_ticks)
  q=$(load -d "$W/mixed.txt" -l 15)
  b=$(writer_ticks)
  echo "| $flood | $q | $(( (b - a) * 1000 / $(getconf CLK_TCK) )) |"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}

echo "## Mixed 99:1, quiet and after the blocked workloads ($(nproc) CPUs; resolver on CPU 0, dnsperf on CPU 1)"
echo
echo "| before the mixed run | mixed q/s | hit-log writer CPU during it (ms) |"
echo "|---|---:|---:|"
run quiet
run flood
