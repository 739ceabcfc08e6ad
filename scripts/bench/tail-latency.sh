#!/usr/bin/env bash
# Tail latency beside PowerDNS Recursor: each resolver pinned to CPU 0
# with one worker, dnsperf on CPU 1. PowerDNS's own maximum rate is
# measured first for each workload (benign cached, blocked repeated), and
# ours too, so that both go into the fixed-rate runs equally warm;
# then both resolvers get dnsperf at 50% and 90% of that rate, and the
# latency of every answer (dnsperf -v) gives p50, p99 and p99.9. dnsperf
# gets a 4 MiB socket buffer: writing a line per answer, it would
# otherwise drop answers it did not read in time and count them lost.
# Uses the peers harness (its PowerDNS config, the RPZ zone and
# workloads a `peers.sh` run generated, the fake upstream); run
# `bash scripts/bench/peers.sh` once first. Needs root (binds port 53 on
# loopback), pdns-recursor, nsd, dnsperf, dig, python3; about three
# minutes. TAIL_SECONDS (10) sets each run's length.
# Loopback only; bounded in time; stops what it started by its PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PEERS_DIR=${PORTCULLIS_PEERS_DIR:-$ROOT/../shared/tools/peers}
DATA=${PORTCULLIS_BENCH_DATA:-$ROOT/../shared/data}
export WL_DIR=${WL_DIR:-${PEERS_WORK:-/tmp/peers-work}/workloads}
SECONDS_RUN=${TAIL_SECONDS:-10}
BIN=${BIN:-target/release/portcullis}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
for f in benign.txt blocked.txt; do
    [ -f "$WL_DIR/$f" ] || { echo "no $WL_DIR/$f: run scripts/bench/peers.sh once first" >&2; exit 1; }
done
for tool in pdns_recursor dnsperf dig python3; do
    command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/portcullis-tail.XXXXXX)
# dnsperf -v writes a line per answer: outside the config file's folder,
# which the resolver watches, or every buffered write wakes its watcher.
OUT=$(mktemp -d /tmp/portcullis-tail-out.XXXXXX)
OURS=""
cleanup() {
    [ -n "$OURS" ] && kill "$OURS" 2>/dev/null && wait "$OURS" 2>/dev/null
    bash "$PEERS_DIR/peers.sh" stop pdns >/dev/null 2>&1 || true
    bash "$PEERS_DIR/upstream.sh" stop >/dev/null 2>&1 || true
    rm -rf "$WORK" "$OUT"
}
trap cleanup EXIT
# The same resolver as peers.sh runs.
source "$ROOT/scripts/bench/peers-config.sh"
peers_workdir "$WORK" "$DATA" true

bash "$PEERS_DIR/upstream.sh" start >/dev/null

# wait_blocked IP: until a listed name gets NXDOMAIN (60 s at most).
wait_blocked() {
    for _ in $(seq 1 600); do
        dig +time=1 +tries=1 @"$1" 0debug.cc 2>/dev/null | grep -q NXDOMAIN && return 0
        sleep 0.1
    done
    echo "$1 never blocked" >&2
    return 1
}

# perf IP FILE [dnsperf args]: q/s of a run.
perf() {
    local ip=$1 file=$2
    shift 2
    taskset -c 1 dnsperf -s "$ip" -d "$file" -q 200 -c 4 -l "$SECONDS_RUN" "$@" 2>&1 |
        awk '/Queries per second/ {printf "%d", $4}'
}

# latency IP FILE RATE: "q/s p50 p99 p99.9 lost" (ms) at a fixed rate.
latency() {
    local ip=$1 file=$2 rate=$3
    taskset -c 1 dnsperf -s "$ip" -d "$file" -q 2000 -c 4 -b 4096 -l "$SECONDS_RUN" -Q "$rate" -v \
        >"$OUT/v.txt" 2>&1 || true
    python3 "$ROOT/scripts/bench/dnsperf-latency.py" "$OUT/v.txt"
}

declare -A MAX
RESULTS="$OUT/results.tsv"
: >"$RESULTS"

measure() {
    local who=$1 ip=$2
    # A warm cache: every benign name answered once.
    taskset -c 1 dnsperf -s "$ip" -d "$WL_DIR/benign.txt" -n 1 -q 200 -c 4 >/dev/null 2>&1
    for wl in benign blocked; do
        # Both get the same warm-up, a run at full speed on the workload:
        # PowerDNS's sets the rates, ours is reported. Without it our
        # first run met the blocked names for the first time (every one a
        # list walk and a new hit record) while PowerDNS's packet cache
        # already held them from its maximum run.
        local max
        max=$(perf "$ip" "$WL_DIR/$wl.txt")
        echo "$who $wl: maximum $max q/s" >&2
        if [ "$who" = pdns ]; then MAX[$wl]=$max; fi
        for pct in 50 90; do
            local rate=$(( MAX[$wl] * pct / 100 ))
            read -r qps p50 p99 p999 lost < <(latency "$ip" "$WL_DIR/$wl.txt" "$rate")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$who" "$wl" "$pct" "$rate" "$qps" "$p50" "$p99 $p999" "$lost" >>"$RESULTS"
            echo "$who $wl at $pct% ($rate q/s): $qps q/s, p50 $p50 ms, p99 $p99 ms, p99.9 $p999 ms, lost $lost" >&2
        done
    done
}

PDNS=$(bash "$PEERS_DIR/peers.sh" start pdns)
wait_blocked 127.0.0.11
measure pdns 127.0.0.11
bash "$PEERS_DIR/peers.sh" stop pdns >/dev/null

taskset -c 0 "$BIN" serve --config "$WORK/portcullis.toml" >/dev/null 2>"$WORK/serve.log" &
OURS=$!
wait_blocked 127.0.0.20
measure portcullis 127.0.0.20

python3 - "$RESULTS" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    who, wl, pct, rate, qps, p50, tail, lost = line.rstrip("\n").split("\t")
    p99, p999 = tail.split()
    rows[(who, wl, pct)] = (rate, qps, p50, p99, p999, lost)
print("\n| workload | load (% of PowerDNS's maximum) | rate (q/s) | PowerDNS p50 / p99 / p99.9 (ms) | Portcullis p50 / p99 / p99.9 (ms) | lost (PowerDNS / Portcullis) | goal: our p99 at most PowerDNS's |")
print("|---|---:|---:|---|---|---|---|")
for wl in ("benign", "blocked"):
    for pct in ("50", "90"):
        a, b = rows.get(("pdns", wl, pct)), rows.get(("portcullis", wl, pct))
        if not a or not b:
            continue
        try:
            met = "met" if float(b[3]) <= float(a[3]) else "missed"
        except ValueError:
            met = "n/a"
        print(f"| {wl} | {pct}% | {a[0]} | {a[2]} / {a[3]} / {a[4]} | {b[2]} / {b[3]} / {b[4]} | {a[5]} / {b[5]} | {met} |")
PY
