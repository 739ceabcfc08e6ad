#!/usr/bin/env bash
# A full rebuild of the 1,062,258-name list under load: the resolver
# (one worker, hit log on) pinned to CPU 0 with its compile thread, dnsperf
# on CPU 1 asking listed names. First the maximum rate (10 s unthrottled),
# then REBUILD_LOAD percent (80) of it for 40 s; 10 s in, the feed is
# replaced by a copy with one more name, so the whole list is compiled
# again and swapped in while the load runs. Prints the answered q/s of
# each second (dnsperf -S 1), the dip over the rebuild against the seconds
# before it, the rebuild's time from the log, and the queries lost. The
# hit log's roll-ups of the first run are let finish before the load.
# Needs: a release build, dnsperf, dig, python3 and the shared data
# (PORTCULLIS_BENCH_DATA). Loopback only; about two minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN=${BIN:-target/release/portcullis}
DATA=${PORTCULLIS_BENCH_DATA:-$ROOT/../shared/data}
PORT=${PORT:-5394}
LOAD=${REBUILD_LOAD:-80}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -f "$DATA/threat-domains.tsv.gz" ] || { echo "no threat-domains.tsv.gz in $DATA (set PORTCULLIS_BENCH_DATA)" >&2; exit 1; }
for tool in dnsperf dig python3; do
    command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/portcullis-rebuild.XXXXXX)
PID=""
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/feeds"
cp "$DATA/threat-domains.tsv.gz" "$WORK/feeds/threat-domains.tsv.gz"
# The replacement: the same list and one name more, made before the load.
{ zcat "$DATA/threat-domains.tsv.gz"; printf 'rebuilt.portcullis-bench.example\tmalware\tbench\n'; } |
    gzip -1 >"$WORK/replacement.tsv.gz"
cat >"$WORK/portcullis.toml" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
allow_unknown_clients = true
workers = 1
[resolver]
dnssec = "off"
mode = "forward"
upstreams = ["127.0.0.1:9"]
timeout_ms = 100
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
[admin]
listen = ""
[log]
level = "info"
TOML
zcat "$DATA/threat-domains.tsv.gz" | cut -f1 | grep -v '^#' | shuf -n 100000 --random-source=<(yes) |
    sed 's/$/ A/' >"$WORK/queries.txt"

taskset -c 0 "$BIN" serve --config "$WORK/portcullis.toml" >/dev/null 2>"$WORK/serve.log" &
PID=$!
blocked() { dig +time=1 +tries=1 -p "$PORT" @127.0.0.1 "$1" 2>/dev/null | grep -q NXDOMAIN; }
for _ in $(seq 1 600); do blocked 0debug.cc && break; sleep 0.1; done
blocked 0debug.cc || { echo "never blocked; see $WORK/serve.log" >&2; exit 1; }

perf() { taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" -q 500 -c 4 "$@" 2>&1; }
MAX=$(perf -l 10 | awk '/Queries per second/ {printf "%d", $4}')
RATE=$(( MAX * LOAD / 100 ))
echo "maximum ${MAX} q/s; the load: ${RATE} q/s (${LOAD}%)" >&2
# The hit log's roll-ups of the records the maximum run wrote wait for a
# quiet moment: let them run now, not under the measured load.
sleep 15

perf -l 40 -Q "$RATE" -S 1 >"$WORK/load.txt" &
LOADER=$!
sleep 10
SWAP_AT=$(date +%s.%N)
mv "$WORK/replacement.tsv.gz" "$WORK/feeds/threat-domains.tsv.gz"
for _ in $(seq 1 600); do blocked rebuilt.portcullis-bench.example && break; sleep 0.05; done
LIVE_AT=$(date +%s.%N)
wait "$LOADER"
kill "$PID"
wait "$PID" 2>/dev/null || true
PID=""

python3 - "$WORK/load.txt" "$WORK/serve.log" "$RATE" "$SWAP_AT" "$LIVE_AT" "$MAX" "$LOAD" <<'PY'
import re, sys
load, log, rate, swap_at, live_at, top, pct = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6], sys.argv[7]
text = open(load).read()
# dnsperf -S 1: one "<unix time>: ... <q/s>" status line a second.
seconds = []
for m in re.finditer(r"^(\d+\.\d+): (\d+(?:\.\d+)?)", text, re.M):
    seconds.append((float(m.group(1)), float(m.group(2))))
def g(rx):
    m = re.search(rx, text)
    return m.group(1) if m else "NA"
before = [q for t, q in seconds if t < swap_at - 1]
during = [q for t, q in seconds if swap_at <= t <= live_at + 1]
took = re.findall(r"took_ms[=:]\s*\"?(\d+)", open(log).read())
print(f"\n## A full rebuild under {pct}% load ({rate} q/s; the maximum {top} q/s)\n")
print("| measure | value |")
print("|---|---|")
print(f"| file dropped to the new list answering | {live_at - swap_at:.2f} s |")
print(f"| compile time (log) | {took[-1] if took else 'NA'} ms |")
if before and during:
    base = sum(before) / len(before)
    low = min(during)
    print(f"| answered q/s before (mean of {len(before)} s) | {base:.0f} |")
    print(f"| lowest second over the rebuild ({len(during)} s) | {low:.0f} ({(base - low) / base * 100:.1f}% dip) |")
    print(f"| mean over the rebuild | {sum(during) / len(during):.0f} ({(base - sum(during) / len(during)) / base * 100:.1f}% dip) |")
sent, lost = g(r"Queries sent:\s+(\d+)"), g(r"Queries lost:\s+(\d+)")
print(f"| queries sent / lost | {sent} / {lost} |")
if not seconds:
    print("no per-second lines in dnsperf's output:", text[:600])
print("\nper second:", " ".join(f"{q:.0f}" for _, q in seconds))
PY
