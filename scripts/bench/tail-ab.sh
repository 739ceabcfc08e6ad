#!/usr/bin/env bash
# Two builds of Portcullis alternated on the repeated blocked workload,
# to tell what a change does to the tail: each run pins the resolver to
# CPU 0 (dnsperf on CPU 1), warms it as tail-latency.sh does (every
# benign name once, then blocked names at full speed, whose rate is
# reported as the maximum), then sends blocked names at a fixed RATE with
# dnsperf -v and prints p50, p99 and p99.9 of every answer, and the CPU
# seconds of the hit log's threads and of the whole process. Alternating
# A and B in ROUNDS rounds keeps the VM's drift out of the comparison.
#   bash scripts/bench/tail-ab.sh BIN_A BIN_B
# Variables: RATE (60000), ROUNDS (2), AB_SECONDS (10), HITLOG (on; off
# runs both without the hit log, as in peers.sh).
# Needs dnsperf, dig, python3, nsd and the workloads one peers.sh run
# leaves; about 45 s a run. Loopback only; bounded in time; stops what it
# started by its PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
[ $# -eq 2 ] || { echo "usage: $0 BIN_A BIN_B" >&2; exit 64; }
PEERS_DIR=${PORTCULLIS_PEERS_DIR:-$ROOT/../shared/tools/peers}
DATA=${PORTCULLIS_BENCH_DATA:-$ROOT/../shared/data}
WL_DIR=${WL_DIR:-${PEERS_WORK:-/tmp/peers-work}/workloads}
RATE=${RATE:-60000}
ROUNDS=${ROUNDS:-2}
SECONDS_RUN=${AB_SECONDS:-10}
case "${HITLOG:-on}" in
    on) HITLOG_ENABLED=true ;;
    off) HITLOG_ENABLED=false ;;
    *) echo "HITLOG must be on or off" >&2; exit 64 ;;
esac
for bin in "$@"; do
    [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 1; }
done
for f in benign.txt blocked.txt; do
    [ -f "$WL_DIR/$f" ] || { echo "no $WL_DIR/$f: run scripts/bench/peers.sh once first" >&2; exit 1; }
done
for tool in dnsperf dig python3; do
    command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/portcullis-tail-ab.XXXXXX)
# dnsperf -v writes a line per answer: outside the config file's folder,
# which the resolver watches, or every buffered write wakes its watcher.
OUT=$(mktemp -d /tmp/portcullis-tail-ab-out.XXXXXX)
OURS=""
cleanup() {
    [ -n "$OURS" ] && kill "$OURS" 2>/dev/null && wait "$OURS" 2>/dev/null
    bash "$PEERS_DIR/upstream.sh" stop >/dev/null 2>&1 || true
    rm -rf "$WORK" "$OUT"
}
trap cleanup EXIT
source "$ROOT/scripts/bench/peers-config.sh"
peers_workdir "$WORK" "$DATA" "$HITLOG_ENABLED"
# The benign warm-up resolves through the harness's fake upstream.
bash "$PEERS_DIR/upstream.sh" start >/dev/null

# cpu_s STATFILE: user + system CPU seconds from a /proc stat line.
cpu_s() { awk -v tk="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / tk}' "$1"; }

run_one() {
    local bin=$1
    taskset -c 0 "$bin" serve --config "$WORK/portcullis.toml" >/dev/null 2>"$WORK/serve.log" &
    OURS=$!
    local up=""
    for _ in $(seq 1 600); do
        if dig +time=1 +tries=1 @127.0.0.20 0debug.cc 2>/dev/null | grep -q NXDOMAIN; then up=1; break; fi
        sleep 0.1
    done
    [ -n "$up" ] || { echo "$bin never blocked; its log:" >&2; tail -5 "$WORK/serve.log" >&2; exit 1; }
    taskset -c 1 dnsperf -s 127.0.0.20 -d "$WL_DIR/benign.txt" -n 1 -q 200 -c 4 -l 60 >/dev/null 2>&1
    local max
    max=$(taskset -c 1 dnsperf -s 127.0.0.20 -d "$WL_DIR/blocked.txt" -q 200 -c 4 -l "$SECONDS_RUN" 2>&1 |
        awk '/Queries per second/ {printf "%d", $4}')
    taskset -c 1 dnsperf -s 127.0.0.20 -d "$WL_DIR/blocked.txt" -q 2000 -c 4 -b 4096 \
        -l "$SECONDS_RUN" -Q "$RATE" -v >"$OUT/v.txt" 2>&1 || true
    local hitlog_cpu=""
    for task in /proc/"$OURS"/task/*; do
        case $(cat "$task/comm") in
            portcullis-hitl*) hitlog_cpu="$hitlog_cpu $(cpu_s "$task/stat")" ;;
        esac
    done
    local qps p50 p99 p999 lost
    read -r qps p50 p99 p999 lost < <(python3 "$ROOT/scripts/bench/dnsperf-latency.py" "$OUT/v.txt")
    echo "$bin: maximum $max q/s; at $qps q/s p50 $p50 / p99 $p99 / p99.9 $p999 ms, lost $lost;" \
        "hit log threads' CPU${hitlog_cpu:- none} s, process $(cpu_s /proc/"$OURS"/stat) s"
    kill "$OURS" 2>/dev/null && wait "$OURS" 2>/dev/null || true
    OURS=""
}

echo "repeated blocked names at $RATE q/s, $SECONDS_RUN s a run, hit log ${HITLOG:-on}" >&2
for _ in $(seq 1 "$ROUNDS"); do
    run_one "$1"
    run_one "$2"
done
