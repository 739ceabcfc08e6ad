#!/usr/bin/env bash
# Validated resolution side by side: Portcullis, PowerDNS Recursor
# (dnssec=validate) and Unbound (validator module), each recursing from the
# signed lab's root (tests/lab/signed-lab.sh, NSD on 127.0.54.x) with the
# lab root as its only trust anchor, each pinned to CPU 0, dnsperf on CPU 1
# with DO set.
#
#   cold:   every name of bench.test. once, on a freshly started resolver
#           (each answer needs the zone's keys validated on first use, then
#           one signature check per name)
#   cached: 1,000 names of bench.test. after a warm-up pass, looped
#   RSS:    once serving, and after the runs. Portcullis and PowerDNS have
#           the full threat list loaded (PowerDNS as the peers harness's
#           RPZ zone of the same names); Unbound runs without it, as its
#           RPZ load takes half a minute and a gigabyte.
#
# Needs root (port 53), the lab's tools, pdns-recursor, unbound, dnsperf and
# `cargo build --release`. Every server is started here and stopped by PID.
# Variables: DNSSEC_BENCH_NAMES (20000), DNSSEC_BENCH_SECONDS (10),
# DNSSEC_BENCH_WHO (which resolvers: "portcullis pdns unbound"),
# DNSSEC_BENCH_PROFILE (a file: `perf record` the resolver's cold run into it;
# DNSSEC_BENCH_PROFILE_ARGS, perf record's options, "-g" unless set),
# DNSSEC_BENCH_WORK (/tmp/portcullis-dnssec-bench), PORTCULLIS_BENCH_DATA,
# PORTCULLIS_PEERS_DIR (the peers harness, which generates the RPZ zone).
set -euo pipefail
cd "$(dirname "$0")/../.."

NAMES=${DNSSEC_BENCH_NAMES:-20000}
RUN_SECONDS=${DNSSEC_BENCH_SECONDS:-10}
WORK=${DNSSEC_BENCH_WORK:-/tmp/portcullis-dnssec-bench}
DATA=${PORTCULLIS_BENCH_DATA:-../shared/data}
BIN=$PWD/target/release/portcullis
LAB=$WORK/lab
OURS=127.0.54.20
PDNS=127.0.54.21
UNBOUND_PORT=5397
PEERS_DIR=${PORTCULLIS_PEERS_DIR:-$PWD/../shared/tools/peers}
RPZ=${PEERS_WORK:-/tmp/peers-work}/gen/rpz.zone

for tool in pdns_recursor unbound dnsperf taskset; do
    command -v "$tool" >/dev/null || { echo "dnssec.sh: $tool not installed" >&2; exit 1; }
done
[[ -x $BIN ]] || { echo "dnssec.sh: build first: cargo build --release" >&2; exit 1; }
[[ -f $DATA/threat-domains.tsv.gz ]] || {
    echo "dnssec.sh: no threat list in $DATA (set PORTCULLIS_BENCH_DATA)" >&2; exit 1; }

mkdir -p "$WORK"
[[ -f $RPZ ]] || python3 "$PEERS_DIR/gen-data.py" >/dev/null
[[ -f $RPZ ]] || { echo "dnssec.sh: no RPZ zone at $RPZ" >&2; exit 1; }
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    bash tests/lab/signed-lab.sh --stop "$LAB" || true
}
trap cleanup EXIT

LAB_BENCH_NAMES=$NAMES bash tests/lab/signed-lab.sh "$LAB"
awk -v n="$NAMES" 'BEGIN { for (i = 1; i <= n; i++) printf "h%d.bench.test A\n", i }' >"$WORK/cold.txt"
awk 'BEGIN { for (i = 1; i <= 1000; i++) printf "h%d.bench.test A\n", i }' >"$WORK/cached.txt"

rss_mib() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# dnsperf's "Queries per second" and lost count for one run. -b 4096: with
# dnsperf's default socket buffer, a burst of answers sent in one sendmmsg
# overflowed it (the kernel counted them in UdpRcvbufErrors) and dnsperf
# reported them lost.
perf() { # server port file extra...
    local out
    out=$(taskset -c 1 dnsperf -s "$1" -p "$2" -d "$3" -D -q 200 -b 4096 "${@:4}" 2>&1)
    echo "$out" >>"$WORK/dnsperf.log"
    printf '%s %s\n' \
        "$(awk '/Queries per second/ { printf "%.0f", $4 }' <<<"$out")" \
        "$(awk '/Queries lost/ { print $3 }' <<<"$out")"
}

wait_port() { # addr port
    for _ in $(seq 1 300); do
        dig +time=1 +tries=1 @"$1" -p "$2" . SOA >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "dnssec.sh: nothing answers on $1:$2" >&2; return 1
}

start_ours() {
    local d=$WORK/portcullis
    rm -rf "$d"; mkdir -p "$d/feeds"
    ln -s "$(realpath "$DATA/threat-domains.tsv.gz")" "$d/feeds/threat-domains.tsv.gz"
    cat >"$d/portcullis.toml" <<EOF
[server]
listen = ["$OURS:53"]
allow_unknown_clients = true
workers = 1
[resolver]
mode = "recursive"
root_hints = ["127.0.54.1"]
allow_server_networks = ["127.0.54.0/24"]
dnssec = "validate"
trust_anchors = "$LAB/root.ds"
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
[admin]
listen = "$OURS:9153"
[log]
level = "warn"
EOF
    taskset -c 0 "$BIN" serve --config "$d/portcullis.toml" 2>"$d/log" &
    PIDS+=($!); SERVER_PID=$!
    wait_port "$OURS" 53
}

start_pdns() {
    local d=$WORK/pdns ds
    rm -rf "$d"; mkdir -p "$d"
    ds=$(awk '{ print $5, $6, $7, $8 }' "$LAB/root.ds")
    cat >"$d/recursor.lua" <<EOF
clearTA()
addTA(".", "$ds")
rpzFile("$RPZ", {policyName="threat"})
EOF
    cat >"$d/recursor.conf" <<EOF
local-address=$PDNS
local-port=53
hint-file=$LAB/root.hints
dnssec=validate
lua-config-file=$d/recursor.lua
dont-query=
socket-dir=$d
threads=1
pdns-distributes-queries=no
daemon=no
quiet=yes
EOF
    taskset -c 0 pdns_recursor --config-dir="$d" 2>"$d/log" &
    PIDS+=($!); SERVER_PID=$!
    wait_port "$PDNS" 53
}

start_unbound() {
    bash tests/lab/signed-lab.sh --unbound "$LAB" "$UNBOUND_PORT"
    SERVER_PID=$(tr -dc '0-9' <"$LAB/unbound/unbound.pid")
    taskset -pc 0 "$SERVER_PID" >/dev/null
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do [[ -e /proc/$SERVER_PID ]] || break; sleep 0.1; done
}

declare -A COLD COLD_LOST CACHED CACHED_LOST RSS LOADED
for who in ${DNSSEC_BENCH_WHO:-portcullis pdns unbound}; do
    case $who in
        portcullis) start_ours; addr=$OURS port=53 ;;
        pdns) start_pdns; addr=$PDNS port=53 ;;
        unbound) start_unbound; addr=127.0.54.9 port=$UNBOUND_PORT ;;
    esac
    # A check that it validates: AD on a secure name.
    dig +dnssec @"$addr" -p "$port" www.example.test A | grep -q 'flags:.* ad' ||
        { echo "dnssec.sh: $who does not validate the lab" >&2; exit 1; }
    LOADED[$who]=$(rss_mib "$SERVER_PID")
    if [[ -n ${DNSSEC_BENCH_PROFILE:-} ]]; then
        command perf record ${DNSSEC_BENCH_PROFILE_ARGS:--g} -p "$SERVER_PID" -o "$DNSSEC_BENCH_PROFILE.$who" 2>/dev/null &
        PROFILER=$!
    fi
    read -r COLD[$who] COLD_LOST[$who] < <(perf "$addr" "$port" "$WORK/cold.txt" -n 1)
    if [[ -n ${DNSSEC_BENCH_PROFILE:-} ]]; then kill -INT "$PROFILER"; wait "$PROFILER" || true; fi
    perf "$addr" "$port" "$WORK/cached.txt" -n 1 >/dev/null
    read -r CACHED[$who] CACHED_LOST[$who] < <(perf "$addr" "$port" "$WORK/cached.txt" -l "$RUN_SECONDS")
    RSS[$who]=$(rss_mib "$SERVER_PID")
    stop_server
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
{
    echo "| | Portcullis | PowerDNS Recursor | Unbound | Portcullis / PowerDNS |"
    echo "|---|---:|---:|---:|---:|"
    echo "| cold validated q/s ($NAMES names once) | ${COLD[portcullis]:--} | ${COLD[pdns]:--} | ${COLD[unbound]:--} | $(ratio "${COLD[portcullis]:--}" "${COLD[pdns]:--}") |"
    echo "| cached validated q/s | ${CACHED[portcullis]:--} | ${CACHED[pdns]:--} | ${CACHED[unbound]:--} | $(ratio "${CACHED[portcullis]:--}" "${CACHED[pdns]:--}") |"
    echo "| lost (cold / cached) | ${COLD_LOST[portcullis]:--} / ${CACHED_LOST[portcullis]:--} | ${COLD_LOST[pdns]:--} / ${CACHED_LOST[pdns]:--} | ${COLD_LOST[unbound]:--} / ${CACHED_LOST[unbound]:--} | |"
    echo "| RSS serving, before the runs (MiB) | ${LOADED[portcullis]:--} | ${LOADED[pdns]:--} | ${LOADED[unbound]:--} (no list) | $(ratio "${LOADED[portcullis]:--}" "${LOADED[pdns]:--}") |"
    echo "| RSS after the runs (MiB) | ${RSS[portcullis]:--} | ${RSS[pdns]:--} | ${RSS[unbound]:--} (no list) | $(ratio "${RSS[portcullis]:--}" "${RSS[pdns]:--}") |"
} | tee "$WORK/results.md"
