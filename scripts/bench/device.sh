#!/usr/bin/env bash
# Multi-core figures on a many-core x86 machine (the "device"), beside
# PowerDNS Recursor in the same run. Packs the peers harness's device kit
# (pdns_recursor, NSD, dnsperf and their libraries) into .devkit/ with our
# stripped release binary, a wrapper that writes one config per run,
# device-first-pass.py (the blocked first pass beside PowerDNS), the
# lookup bench's binary and data, and .devkit/all.sh, which runs it all on
# the device with .devkit copied there.
#
# On the device, device-bench.py pins each resolver to CPUs 0..N-1 and
# dnsperf to the rest, for N in PDNS_THREADS and CUSTOM_THREADS; see its
# docstring. Portcullis runs as an operator would: from the threat feed (so
# the load time is a compile from the feed), hit log on, metrics off,
# `workers = N` (one SO_REUSEPORT socket and one runtime thread per worker).
# PORTCULLIS_ADMIN=127.0.0.1:9153 before the device command turns the
# admin listener, and so the metrics recorder, on (nobody scrapes it);
# THREADS="1 2 4 8" BUDGET_S=400 MAX_S=420 adds 8 workers.
#
#   bash scripts/bench/device.sh        # then, there: bash .devkit/all.sh
#
# PORTCULLIS_BENCH_DATA: the folder holding the threat list and the
# popular names (default ../shared/data beside the repository);
# PORTCULLIS_PEERS_DIR: the peers harness (default ../shared/tools/peers).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PEERS_DIR=${PORTCULLIS_PEERS_DIR:-$ROOT/../shared/tools/peers}
DATA=${PORTCULLIS_BENCH_DATA:-$ROOT/../shared/data}
KIT=$ROOT/.devkit
[ -d "$PEERS_DIR" ] || { echo "no peers harness in $PEERS_DIR (set PORTCULLIS_PEERS_DIR)" >&2; exit 1; }
[ -f "$DATA/threat-domains.tsv.gz" ] || { echo "no threat-domains.tsv.gz in $DATA (set PORTCULLIS_BENCH_DATA)" >&2; exit 1; }

# .devkit is never committed: it holds binaries and a copy of the data.
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.devkit/' "$exclude" 2>/dev/null || echo '/.devkit/' >>"$exclude"

cargo build --release --quiet
bash "$PEERS_DIR/device-kit.sh" "$KIT"
# Stripped: the carried folder is limited in size, and symbols are not
# needed for throughput figures.
strip -o "$KIT/portcullis" target/release/portcullis

cat >"$KIT/portcullis-run.sh" <<'RUN'
#!/usr/bin/env bash
# portcullis-run.sh THREADS RUNDIR LISTEN UPSTREAM KIT: one Portcullis for
# device-bench.py's custom peer, in the foreground.
set -euo pipefail
threads=$1 run=$2 listen=$3 upstream=$4 kit=$5
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$run/feeds" "$run/state"
ln -sf "$kit/data/threat-domains.tsv.gz" "$run/feeds/threat-domains.tsv.gz"
cat >"$run/portcullis.toml" <<TOML
[server]
listen = ["$listen"]
allow_unknown_clients = true
workers = $threads
[resolver]
# The peers run unvalidated in these workloads; so do we.
dnssec = "off"
mode = "forward"
upstreams = ["$upstream"]
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
[admin]
listen = "${PORTCULLIS_ADMIN:-}"
[hitlog]
enabled = ${PORTCULLIS_HITLOG:-true}
[log]
level = "warn"
TOML
exec "$here/portcullis" serve --config "$run/portcullis.toml"
RUN
chmod +x "$KIT/portcullis-run.sh"

# The blocked first pass beside PowerDNS (device-bench.py measures cached
# and mixed only).
cp "$ROOT/scripts/bench/device-first-pass.py" "$KIT/"

# The lookup micro-benchmark, to run on the same machine: its binary and
# the data it reads (PORTCULLIS_BENCH_DATA).
bench=$(cargo bench --bench lookup --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p')
[ -x "$bench" ] || { echo "no lookup bench binary" >&2; exit 1; }
strip -o "$KIT/lookup-bench" "$bench"
mkdir -p "$KIT/benchdata"
cp "$DATA/threat-domains.tsv.gz" "$DATA/threat-ips.tsv.gz" \
    "$DATA/popular-fqdns.txt" "$KIT/benchdata/"

cat >"$KIT/all.sh" <<'ALL'
#!/usr/bin/env bash
# On the device: Portcullis beside PowerDNS Recursor for 1, 2 and 4
# workers (at 8 both are held by the load generator, which has the other
# CPUs), then the blocked first pass beside PowerDNS, then the lookup bench
# pinned to one CPU. Results under $OUT. About seven and a half minutes.
cd "$(dirname "$0")/.."
PDNS_THREADS="${THREADS:-1 2 4}" CUSTOM_NAME=portcullis CUSTOM_THREADS="${THREADS:-1 2 4}" CEILING=0 \
  CUSTOM_CMD='{HERE}/portcullis-run.sh {THREADS} {RUN} {LISTEN} {UPSTREAM} {KIT}' \
  BUDGET_S=${BUDGET_S:-300} MAX_S=${MAX_S:-320} bash .devkit/run-on-device.sh
out=${OUT:-$PWD/devkit-out}
mkdir -p "$out"
kit=$(pwd)/.devkit
timeout -k 10 100 python3 -u "$kit/device-first-pass.py" 2>&1 | tail -12
echo "first pass rc ${PIPESTATUS[0]}"
(cd /tmp && PORTCULLIS_BENCH_DATA="$kit/benchdata" timeout 80 taskset -c 2 \
    "$kit/lookup-bench" --bench --warm-up-time 1 --measurement-time 2 'lookup/') >"$out/lookup.txt" 2>&1
echo "lookup bench rc $?"
grep -E "time:|thrpt:|^lookup|compiled" "$out/lookup.txt"
ALL
chmod +x "$KIT/all.sh"
du -sh "$KIT"

cat <<'CMD'
On the device (carry .devkit), about seven and a half minutes:
  bash .devkit/all.sh
CMD
