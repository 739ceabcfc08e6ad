#!/usr/bin/env bash
# DNS over TLS and over HTTPS, Portcullis beside Unbound in one run, each
# pinned to CPU 0 (dnsperf on CPU 1), both forwarding to the peers'
# fake upstream (NSD with a wildcard root on 127.0.0.2:53):
#   * cached q/s over DoT (dnsperf -m dot: 1,000 names asked over and
#     over on 20 long-lived connections) and over DoH (h2load: one cached
#     name, GET, 20 connections with 20 streams each; dnsperf 2.10's DoH
#     mode stalls against hyper's HTTP/2, see docs/performance.md);
#   * new TLS handshakes per second on the DoT port (openssl s_time -new);
#   * resident memory with 10,000 idle DoT connections open (Unbound opens
#     what its fd budget allows under the hard open-files limit).
# Needs root (NSD on port 53), unbound, nsd, dnsperf, h2load
# (nghttp2-client), openssl, python3 and a release build. Bounded: about
# three minutes. Stops what it started.
#
#   sudo bash scripts/bench/encrypted.sh
#
# Variables: ENC_BENCH_SECONDS (10), ENC_BENCH_IDLE (10000).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PEERS=${PORTCULLIS_PEERS_DIR:-$ROOT/../shared/tools/peers}
SECONDS_RUN=${ENC_BENCH_SECONDS:-10}
IDLE=${ENC_BENCH_IDLE:-10000}
BIN=$ROOT/target/release/portcullis
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
for tool in unbound nsd dnsperf h2load openssl python3; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/portcullis-enc-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    bash "$PEERS/upstream.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

# A test CA and a certificate for 127.0.0.1.
(
    cd "$WORK"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
        -out ca.crt -days 2 -subj "/CN=bench CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
        -out server.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out server.crt -days 2 -extfile ext 2>/dev/null
    chmod 644 server.key
)
bash "$PEERS/upstream.sh" start

for i in $(seq 1000); do echo "w$i.bench.test A"; done > "$WORK/cached.txt"

mkdir -p "$WORK/p/feeds"
echo "blocked.bench.test" > "$WORK/p/feeds/list.txt"
cat > "$WORK/p/portcullis.toml" <<EOF
[server]
listen = ["127.0.0.1:5390"]
allow_unknown_clients = true
tls_listen = ["127.0.0.1:8530"]
https_listen = ["127.0.0.1:4430"]
tls_cert = "$WORK/server.crt"
tls_key = "$WORK/server.key"
workers = 1
tcp_timeout_secs = 120
max_connections = 30000
max_connections_per_client = 30000
[resolver]
mode = "forward"
upstreams = ["127.0.0.2:53"]
dnssec = "off"
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
[hitlog]
enabled = false
[admin]
listen = ""
[log]
level = "warn"
EOF

mkdir -p "$WORK/u"
cat > "$WORK/u/unbound.conf" <<EOF
server:
  interface: 127.0.0.1@5391
  interface: 127.0.0.1@8531
  interface: 127.0.0.1@4431
  tls-port: 8531
  https-port: 4431
  tls-service-key: "$WORK/server.key"
  tls-service-pem: "$WORK/server.crt"
  num-threads: 1
  username: ""
  chroot: ""
  directory: "$WORK/u"
  pidfile: "$WORK/u/unbound.pid"
  logfile: "$WORK/u/unbound.log"
  use-syslog: no
  verbosity: 0
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "iterator"
  incoming-num-tcp: 5000
  tcp-idle-timeout: 120000
  msg-cache-size: 64m
  rrset-cache-size: 64m
forward-zone:
  name: "."
  forward-addr: 127.0.0.2@53
remote-control:
  control-enable: no
EOF
unbound-checkconf "$WORK/u/unbound.conf" >/dev/null

# h2load's requests per second and failed requests.
h2_rps() { awk '/^finished in/ {gsub(",", "", $4); print int($4)}' "$1"; }
h2_failed() { awk '/^requests:/ {print $10}' "$1"; }
# openssl s_time: "N connections in T real seconds".
handshakes() { awk '/connections in .* real seconds/ {print int($1 / $4); exit}' "$1"; }

# The DoH query: w1.bench.test A, ID 0, base64url without padding.
DOH_QUERY=$(python3 -c "
import base64, struct
q = struct.pack('>HHHHHH', 0, 0x0100, 1, 0, 0, 0) + b'\x02w1\x05bench\x04test\x00' + struct.pack('>HH', 1, 1)
print(base64.urlsafe_b64encode(q).decode().rstrip('='))")

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# dnsperf's q/s, or 0.
qps() { awk '/Queries per second/ {print int($4)}' "$1"; }
lost() { awk '/Queries lost/ {print $3}' "$1"; }

# run_one NAME PID UDP_PORT DOT_PORT DOH_PORT
run_one() {
    local name=$1 pid=$2 udp=$3 dot=$4 doh=$5 out=$WORK/$1
    # Warm the cache over UDP.
    taskset -c 1 dnsperf -s 127.0.0.1 -p "$udp" -d "$WORK/cached.txt" -n 2 >/dev/null 2>&1
    taskset -c 1 dnsperf -m dot -s 127.0.0.1 -p "$dot" -d "$WORK/cached.txt" \
        -l "$SECONDS_RUN" -c 20 -q 400 > "$out.dot" 2>&1 || true
    taskset -c 1 h2load -D "$SECONDS_RUN" -c 20 -m 20 \
        "https://127.0.0.1:$doh/dns-query?dns=$DOH_QUERY" > "$out.doh" 2>&1 || true
    taskset -c 1 openssl s_time -connect "127.0.0.1:$dot" -new -time "$SECONDS_RUN" \
        > "$out.hs" 2>&1 || true
    local before after
    before=$(rss_kib "$pid")
    taskset -c 1 python3 - "$dot" "$IDLE" "$pid" > "$out.idle" <<'PY'
import asyncio, ssl, sys
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
async def main():
    conns, sem = [], asyncio.Semaphore(200)
    async def one():
        async with sem:
            try:
                conns.append(await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 10))
            except Exception:
                pass
    await asyncio.gather(*(one() for _ in range(n)))
    await asyncio.sleep(2)
    rss = [l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0]
    print(len(conns), rss)
asyncio.run(main())
PY
    read -r opened after < "$out.idle"
    printf '%-10s %10s %6s %10s %6s %12s %10s %12s\n' "$name" \
        "$(qps "$out.dot")" "$(lost "$out.dot")" "$(h2_rps "$out.doh")" "$(h2_failed "$out.doh")" \
        "$(handshakes "$out.hs")" "$((before / 1024))" "$opened:$((after / 1024))"
}

printf '%-10s %10s %6s %10s %6s %12s %10s %12s\n' resolver "DoT q/s" lost "DoH q/s" failed \
    "handshakes/s" "RSS MiB" "idle:RSS MiB"
(cd "$WORK/p" && exec taskset -c 0 "$BIN" serve --config portcullis.toml) 2>"$WORK/p.log" &
PPID_=$!; PIDS+=("$PPID_")
for _ in $(seq 100); do
    dig +short +time=1 +tries=1 @127.0.0.1 -p 5390 w1.bench.test >/dev/null 2>&1 && break
    sleep 0.2
done
run_one portcullis "$PPID_" 5390 8530 4430
kill "$PPID_"; wait "$PPID_" 2>/dev/null || true

taskset -c 0 unbound -d -c "$WORK/u/unbound.conf" >"$WORK/u/stdout" 2>&1 &
UPID=$!; PIDS+=("$UPID")
for _ in $(seq 100); do
    dig +short +time=1 +tries=1 @127.0.0.1 -p 5391 w1.bench.test >/dev/null 2>&1 && break
    sleep 0.2
done
run_one unbound "$UPID" 5391 8531 4431
kill "$UPID"; wait "$UPID" 2>/dev/null || true
echo "raw dnsperf output in $WORK"
