#!/usr/bin/env bash
# RPZ by zone transfer at national-feed size. NSD on loopback serves the
# 1,062,258 threat names as one RPZ zone with TSIG and notify: towards
# Portcullis (release build), which keeps it by [[rpz]]:
#  1. the first AXFR, from a primary that has loaded and settled, asked
#     by Portcullis at start-up: the request to the zone written, to the
#     blocklist serving it;
#  2. an IXFR of 1,000 changes (500 names deleted, 500 added) under a
#     steady dnsperf load of listed names: NOTIFY to the increment live
#     (blocking), to the zone file written, to the zone's compile
#     swapped in, and the queries lost meanwhile;
#  3. resident memory before and after.
# Needs: a release build (cargo build --release), nsd, dnsperf, dig, and
# the shared data (PORTCULLIS_BENCH_DATA, default ../shared/data beside
# the repository). Loopback only; bounded (about two minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN=${BIN:-target/release/portcullis}
DATA=${PORTCULLIS_BENCH_DATA:-$ROOT/../shared/data}
PORT=${PORT:-5392}
NSD_PORT=${NSD_PORT:-5393}
RATE=${RATE:-20000}
CHANGES=${CHANGES:-1000}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -x /usr/sbin/nsd ] || { echo "needs nsd (apt-get install nsd)" >&2; exit 1; }
[ -f "$DATA/threat-domains.tsv.gz" ] || { echo "no threat-domains.tsv.gz in $DATA (set PORTCULLIS_BENCH_DATA)" >&2; exit 1; }
command -v dnsperf >/dev/null || { echo "needs dnsperf (apt-get install dnsperf)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/portcullis-rpz-xfr.XXXXXX)
PID="" NSD_PID="" PERF=""
trap 'for p in $PERF $PID $NSD_PID; do kill $p 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/feeds" "$WORK/nsd"
SECRET=$(head -c 32 /dev/urandom | base64)
echo "$SECRET" > "$WORK/xfr.key"

# The zone: every threat name as a QNAME trigger answering NXDOMAIN.
zone() {  # serial, name file
  { echo "\$ORIGIN rpz.bench."
    echo "\$TTL 300"
    echo "@ IN SOA ns.rpz.bench. admin.rpz.bench. $1 3600 1 86400 300"
    echo "@ IN NS ns.rpz.bench."
    sed 's/$/ CNAME ./' "$2"
  } > "$WORK/nsd/rpz.bench.zone"
}
zcat "$DATA/threat-domains.tsv.gz" | cut -f1 | grep -v '^#' | grep -v '[^a-z0-9.-]' > "$WORK/names.txt"
NAMES=$(wc -l < "$WORK/names.txt")
zone 1 "$WORK/names.txt"

cat > "$WORK/portcullis.toml" <<TOML
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
debounce_ms = 200
[admin]
listen = ""
[[rpz]]
zone = "rpz.bench"
primaries = ["127.0.0.1:$NSD_PORT"]
tsig_name = "bench-key"
tsig_secret_file = "xfr.key"
refresh_floor_secs = 1
timeout_secs = 30
category = "malware"
TOML
cat > "$WORK/nsd/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@$NSD_PORT
  port: $NSD_PORT
  zonesdir: "$WORK/nsd"
  pidfile: "$WORK/nsd/nsd.pid"
  database: ""
  xfrdfile: "$WORK/nsd/xfrd.state"
  zonelistfile: "$WORK/nsd/zone.list"
  xfrdir: "$WORK/nsd"
  username: ""
  chroot: ""
  logfile: "$WORK/nsd/nsd.log"
  verbosity: 2
  server-count: 1
remote-control:
  control-enable: no
key:
  name: "bench-key"
  algorithm: hmac-sha256
  secret: "$SECRET"
zone:
  name: "rpz.bench"
  zonefile: "rpz.bench.zone"
  provide-xfr: 127.0.0.1 bench-key
  notify: 127.0.0.1@$PORT NOKEY
  store-ixfr: yes
  create-ixfr: yes
CONF

start() {  # Portcullis, pinned, until it serves
  taskset -c 0 "$BIN" serve --config "$WORK/portcullis.toml" >/dev/null 2>"$WORK/portcullis.log" &
  PID=$!
  for _ in $(seq 1 200); do grep -q "serving" "$WORK/portcullis.log" && break; sleep 0.05; done
}
# Memory with nothing transferred yet (no primary running).
start
RSS_EMPTY=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
kill $PID; wait $PID 2>/dev/null || true
# The primary, serving and settled before Portcullis asks (a primary in
# service has loaded its zone long before; NSD's first seconds after
# loading a million records are its own start-up, not the transfer).
taskset -c 1 /usr/sbin/nsd -d -c "$WORK/nsd/nsd.conf" >/dev/null 2>&1 &
NSD_PID=$!
until dig +tries=1 +time=1 -p $NSD_PORT @127.0.0.1 rpz.bench SOA 2>/dev/null | grep -q "status: NOERROR"; do sleep 0.2; done
sleep 5
rm -rf "$WORK/state"
start

ms() { date -d "$1" +%s%3N; }  # an RFC 3339 log time in epoch ms
# The n-th log line matching a pattern, as epoch ms (waits up to 120 s).
at() {  # pattern n
  for _ in $(seq 1 1200); do
    local line
    line=$(grep -E "$1" "$WORK/portcullis.log" | sed -n "$2p")
    [ -n "$line" ] && { ms "$(echo "$line" | cut -d' ' -f1)"; return; }
    sleep 0.1
  done
  echo "timed out waiting for '$1' #$2" >&2; exit 1
}
swapped_with() {  # the first swap to at least N entries, epoch ms
  for _ in $(seq 1 1200); do
    local line
    line=$(grep "blocklist swapped in" "$WORK/portcullis.log" | awk -v n="$1" '{for(i=1;i<=NF;i++) if ($i ~ /^entries=/) {split($i,a,"="); if (a[2]+0 >= n) {print; exit}}}')
    [ -n "$line" ] && { ms "$(echo "$line" | cut -d' ' -f1)"; return; }
    sleep 0.1
  done
  echo "timed out waiting for a list of $1" >&2; exit 1
}

# 1. The first AXFR, at start-up, from the transfer's first byte asked.
T_RECEIVED=$(at "rpz: AXFR received" 1)
T_ASKED=$((T_RECEIVED - $(grep "rpz: AXFR received" "$WORK/portcullis.log" | head -1 | grep -o 'transfer_ms=[0-9]*' | cut -d= -f2)))
T_UPDATED=$(at "rpz: zone updated" 1)
T_SERVING=$(swapped_with $((NAMES * 9 / 10)))
AXFR_LINE=$(grep "rpz: zone updated" "$WORK/portcullis.log" | head -1 | grep -o 'result="[^"]*"')
sleep 2
RSS_LOADED=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)

# 2. An IXFR of $CHANGES changes under load.
tail -n 20000 "$WORK/names.txt" | sed 's/$/ A/' > "$WORK/queries.txt"
head -n $((NAMES - CHANGES / 2)) "$WORK/names.txt" > "$WORK/names2.txt"
for i in $(seq 1 $((CHANGES / 2))); do echo "ixfr-added-$i.bench.example"; done >> "$WORK/names2.txt"
zone 2 "$WORK/names2.txt"
taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$WORK/queries.txt" -l 20 -Q $RATE -c 4 > "$WORK/dnsperf.txt" 2>&1 &
PERF=$!
sleep 3
SWAPS=$(grep -c "blocklist swapped in" "$WORK/portcullis.log" || true)
kill -HUP $NSD_PID
# Poll from the start: the increment blocks before the zone file is written.
until taskset -c 1 dig +tries=1 +time=1 -p $PORT @127.0.0.1 "ixfr-added-7.bench.example" 2>/dev/null | grep -q "EDE: 15"; do sleep 0.01; done
T2_SERVING=$(date +%s%3N)
T2_NOTIFY=$(at "rpz: NOTIFY received" 2)
T2_LIVE=$(at "rpz: increment live" 1)
T2_UPDATED=$(at "rpz: zone updated" 2)
T2_COMPILED=$(at "blocklist swapped in" $((SWAPS + 1)))
IXFR_LINE=$(grep "rpz: zone updated" "$WORK/portcullis.log" | sed -n 2p | grep -o 'result="[^"]*"')
wait $PERF || true
PERF=""
RSS_AFTER=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)

echo "names in the zone: $NAMES; machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
AXFR_MS=$(grep "rpz: zone updated" "$WORK/portcullis.log" | head -1 | grep -o 'took_ms=[0-9]*' | cut -d= -f2)
echo "first AXFR: $AXFR_LINE"
echo "  transfer and write:       $AXFR_MS ms (of which writing the file: $((T_UPDATED - T_RECEIVED)) ms)"
echo "  zone written to serving:  $((T_SERVING - T_UPDATED)) ms (debounce 200 ms, then the compile)"
echo "  transfer to serving:      $((T_SERVING - T_ASKED)) ms (from the AXFR request)"
echo "IXFR of $CHANGES changes: $IXFR_LINE"
echo "  NOTIFY to increment live: $((T2_LIVE - T2_NOTIFY)) ms (log times, whole ms)"
echo "  NOTIFY to blocking:       $((T2_SERVING - T2_NOTIFY)) ms (an added name answered blocked, dig polling every 10 ms)"
echo "  NOTIFY to zone written:   $((T2_UPDATED - T2_NOTIFY)) ms"
echo "  NOTIFY to zone compiled:  $((T2_COMPILED - T2_NOTIFY)) ms (the increment folded into the zone's layers)"
echo "dnsperf during the IXFR ($RATE q/s of listed names):"
grep -E "Queries sent|Queries completed|Queries lost|Queries per second" "$WORK/dnsperf.txt" | sed 's/^/  /'
echo "resident memory: empty $((RSS_EMPTY / 1024)) MiB, zone loaded $((RSS_LOADED / 1024)) MiB, after the IXFR $((RSS_AFTER / 1024)) MiB"
