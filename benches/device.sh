#!/usr/bin/env bash
# Multi-core figures on a many-core x86 machine (the "device"), beside
# PowerDNS Recursor in the same run. Packs ../shared/tools/peers' device kit
# (pdns_recursor, NSD, dnsperf and their libraries) into .devkit/ with our
# stripped release binary and a wrapper that writes one config per run, then
# prints the command to run on the device with .devkit copied there.
#
# On the device, device-bench.py pins each resolver to CPUs 0..N-1 and
# dnsperf to the rest, for N in PDNS_THREADS and CUSTOM_THREADS; see its
# docstring. Portcullis runs as an operator would: from the threat feed (so
# the load time is a compile from the feed), hit log on, metrics off,
# `workers = N` (one SO_REUSEPORT socket and one runtime thread per worker).
# PORTCULLIS_ADMIN=127.0.0.1:9153 in the device command turns the admin
# listener, and so the metrics recorder, on (nobody scrapes it).
#
#   bash benches/device.sh        # then run the printed command there
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/tools/peers}
KIT=$ROOT/.devkit
[ -d "$PEERS_DIR" ] || { echo "needs ../shared/tools/peers" >&2; exit 1; }

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
mode = "forward"
upstreams = ["$upstream"]
cache_size = 1048576
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
[admin]
listen = "${PORTCULLIS_ADMIN:-}"
[hitlog]
enabled = true
[log]
level = "warn"
TOML
exec "$here/portcullis" serve --config "$run/portcullis.toml"
RUN
chmod +x "$KIT/portcullis-run.sh"
du -sh "$KIT"

cat <<'CMD'
On the device (carry .devkit):
  PDNS_THREADS="1 2 4 8" CUSTOM_NAME=portcullis CUSTOM_THREADS="1 2 4 8" CEILING=0 \
  CUSTOM_CMD='{HERE}/portcullis-run.sh {THREADS} {RUN} {LISTEN} {UPSTREAM} {KIT}' \
  BUDGET_S=420 MAX_S=440 bash .devkit/run-on-device.sh
CMD
