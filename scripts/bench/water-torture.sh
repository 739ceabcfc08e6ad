#!/usr/bin/env bash
# A random-subdomain ("water torture") flood against one zone, beside a
# second client asking ordinary names:
#   * the resolver (release build) on CPU 0, forwarding to a relay on
#     127.0.0.3 that passes queries to the peers' fake upstream (NSD on
#     127.0.0.2) but never answers for the victim zone, as an authority
#     buried by the flood would not;
#   * dnsperf on CPU 1 sending r<random>.victim.test at FLOOD_QPS (50,000)
#     for FLOOD_SECONDS (30) from 127.0.0.1;
#   * a second client on 127.0.0.4 asking ordinary names (cached and new)
#     every 20 ms before, during and after, timing each answer.
# Prints the second client's latency idle and under the flood, the answers
# it got, resident memory before, at its peak during and 60 s after the
# flood, and what the limits counted.
# Needs root (port 53 on loopback), dnsperf, nsd, python3, and the peers
# harness (PORTCULLIS_PEERS_DIR) for upstream.sh. Loopback only; bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BIN=${BIN:-target/release/portcullis}
PEERS_DIR=${PORTCULLIS_PEERS_DIR:-$ROOT/../shared/tools/peers}
QPS=${FLOOD_QPS:-50000}
SECONDS_FLOOD=${FLOOD_SECONDS:-30}
ADDR=127.0.0.21
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
bash "$PEERS_DIR/upstream.sh" start >/dev/null
work=$(mktemp -d /tmp/portcullis-torture.XXXXXX)
mkdir -p "$work/feeds"
echo "evil.example.test" > "$work/feeds/list.txt"

# The relay: forwards to NSD, drops the victim zone's queries.
cat > "$work/relay.py" <<'PY'
import socket, select, sys, time
deadline = time.time() + float(sys.argv[1])
down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); down.bind(("127.0.0.3", 53))
up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); up.bind(("127.0.0.3", 0))
pending = {}
while time.time() < deadline:
    ready, _, _ = select.select([down, up], [], [], 0.5)
    for s in ready:
        data, addr = s.recvfrom(4096)
        if s is down:
            if b"\x06victim\x04test" in data.lower():
                continue
            pending[data[:2]] = addr
            up.sendto(data, ("127.0.0.2", 53))
        else:
            who = pending.pop(data[:2], None)
            if who:
                down.sendto(data, who)
PY
python3 "$work/relay.py" $((SECONDS_FLOOD + 150)) &
relay=$!

cat > "$work/portcullis.toml" <<TOML
[server]
listen = ["$ADDR:53"]
allow_unknown_clients = true
workers = 1
[resolver]
dnssec = "off"
mode = "forward"
upstreams = ["127.0.0.3:53"]
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
[admin]
listen = "127.0.0.1:9394"
[log]
level = "warn"
TOML
taskset -c 0 "$BIN" serve --config "$work/portcullis.toml" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do dig +time=1 +tries=1 @$ADDR www.example.com >/dev/null 2>&1 && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }

# The second client: times ordinary names, cached and new, for a while.
cat > "$work/client.py" <<'PY'
import socket, struct, sys, time, random
server, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.4", 0)); s.settimeout(2)
def q(name):
    qid = random.randrange(65536)
    wire = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for l in name.split("."): wire += bytes([len(l)]) + l.encode()
    wire += b"\0" + struct.pack(">HH", 1, 1)
    t = time.time(); s.sendto(wire, (server, 53))
    try:
        data = s.recv(2048)
        return (time.time() - t) * 1000, data[3] & 15
    except socket.timeout:
        return None, None
end = time.time() + seconds; i = 0
with open(out, "w") as f:
    while time.time() < end:
        name = "www.example.com" if i % 2 == 0 else "n%d.other.test" % i
        ms, rcode = q(name)
        f.write("%.3f %s %s\n" % (time.time(), "-" if ms is None else "%.2f" % ms, rcode))
        i += 1; time.sleep(0.02)
PY
python3 "$work/client.py" $ADDR $((SECONDS_FLOOD + 40)) "$work/client.txt" &
client=$!
sleep 10
start_rss=$(rss)
python3 -c "
import random
with open('$work/flood.txt','w') as f:
    for _ in range($QPS * $SECONDS_FLOOD):
        f.write('r%x.victim.test A\n' % random.getrandbits(48))
"
peak=0
( while kill -0 $pid 2>/dev/null; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r && echo $peak > "$work/peak"; sleep 0.5; done ) &
sampler=$!
flood_start=$(date +%s.%N)
taskset -c 1 dnsperf -s $ADDR -d "$work/flood.txt" -n 1 -l "$SECONDS_FLOOD" -Q "$QPS" -q 10000 -t 1 >"$work/dnsperf.txt" 2>&1 || true
flood_end=$(date +%s.%N)
wait $client || true
after_flood=$(rss)
sleep 60
after_60=$(rss)
kill $sampler 2>/dev/null || true
metrics=$(curl -s 127.0.0.1:9394/metrics)
kill $pid; wait $pid 2>/dev/null || true
kill $relay 2>/dev/null || true

python3 - "$work/client.txt" "$flood_start" "$flood_end" <<'PY'
import sys, statistics
path, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
idle, flood, lost = [], [], 0
for line in open(path):
    t, ms, rcode = line.split()
    if ms == "-":
        lost += start <= float(t) <= end; continue
    (flood if start <= float(t) <= end else idle).append(float(ms))
def p(xs, q): return sorted(xs)[int(len(xs) * q) - 1] if xs else float("nan")
print("| second client | answers | median ms | p99 ms |")
print("|---|---:|---:|---:|")
print("| idle | %d | %.2f | %.2f |" % (len(idle), statistics.median(idle), p(idle, 0.99)))
print("| during the flood | %d (%d unanswered) | %.2f | %.2f |" % (len(flood), lost, statistics.median(flood), p(flood, 0.99)))
PY
echo
grep -E "Queries sent|Queries completed|Queries lost|Queries per second" "$work/dnsperf.txt" | sed 's/^ */  flood: /'
peak=$(cat "$work/peak" 2>/dev/null || echo 0)
echo "  RSS KiB: before $start_rss, peak $peak, right after $after_flood, 60 s after $after_60" \
  "($(awk -v a="$after_60" -v b="$start_rss" 'BEGIN {printf "%+.1f%%", (a - b) * 100 / b}') from the start)"
echo "$metrics" | grep -E '^portcullis_limited_total|^portcullis_upstream_errors_total' | sed 's/^/  /'
rm -rf "$work"
