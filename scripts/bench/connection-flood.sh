#!/usr/bin/env bash
# 20,000 idle TCP connections from addresses in no organisation, held
# open while a member keeps asking:
#   * the resolver (release build, default connection caps: 20,000 in all,
#     256 per client, a quarter kept for members), forwarding to an
#     in-script UDP authority that answers every A query with 192.0.2.1;
#   * FLOOD_CONNECTIONS (20,000) connections from 80 loopback addresses in
#     no organisation (127.10.0.1-80, 250 each), opened and held silent;
#   * a member on 127.0.0.1 timing UDP queries, TCP queries (a new
#     connection each) and GET /healthz before the flood and while it holds.
# Prints how many flood connections were admitted and refused (and why,
# from /metrics), the member's answers and latencies in both phases, and
# resident memory. Needs root (the open-files limit is raised to 65,536),
# python3. Loopback only; bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/portcullis}
CONNECTIONS=${FLOOD_CONNECTIONS:-20000}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
# As many open files as the machine allows (65,536 where it can).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open-files limit: $(ulimit -n)"
work=$(mktemp -d /tmp/portcullis-connflood.XXXXXX)
mkdir -p "$work/feeds"
echo "evil.example.test" > "$work/feeds/list.txt"

# The upstream: every A query answered with 192.0.2.1 (no cache misses
# to wait on; this measures the listeners, not resolution).
cat > "$work/upstream.py" <<'PY'
import socket, sys, time
deadline = time.time() + float(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.31", 5300)); s.settimeout(0.5)
while time.time() < deadline:
    try:
        q, addr = s.recvfrom(4096)
    except socket.timeout:
        continue
    end = 12
    while q[end] != 0:
        end += q[end] + 1
    question = q[12:end + 5]
    flags = b"\x81\x80"
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"
    s.sendto(q[:2] + flags + b"\x00\x01\x00\x01\x00\x00\x00\x00" + question + answer, addr)
PY
python3 "$work/upstream.py" 600 &
upstream=$!

cat > "$work/portcullis.toml" <<TOML
[server]
listen = ["127.0.0.30:53"]
allow_unknown_clients = false
# A patient attacker: idle connections are held a minute, not 10 s.
tcp_timeout_secs = 60
[resolver]
dnssec = "off"
mode = "forward"
upstreams = ["127.0.0.31:5300"]
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
[admin]
listen = "127.0.0.1:9395"
[hitlog]
enabled = false
[log]
level = "warn"
[[organisation]]
id = "member"
name = "Member"
networks = ["127.0.0.1/32"]
TOML
"$BIN" serve --config "$work/portcullis.toml" >"$work/serve.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" "$upstream" ${holders[@]+"${holders[@]}"} 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -sf http://127.0.0.1:9395/healthz >/dev/null 2>&1 && break; sleep 0.1
done

cat > "$work/member.py" <<'PY'
import socket, struct, sys, time, urllib.request

server = ("127.0.0.30", 53)

def query(name, n):
    q = struct.pack(">HHHHHH", n & 0xffff, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00\x00\x01\x00\x01"

out = {"udp": [], "tcp": [], "healthz": []}
failed = 0
for i in range(50):
    name = f"m{i}-{time.time_ns()}.example.test"
    t = time.perf_counter()
    try:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); u.settimeout(2)
        u.sendto(query(name, i), server); r = u.recv(4096); u.close()
        assert r[3] & 0x0f == 0
        out["udp"].append(time.perf_counter() - t)
    except Exception:
        failed += 1
    t = time.perf_counter()
    try:
        c = socket.socket(); c.bind(("127.0.0.1", 0)); c.settimeout(2); c.connect(server)
        q = query("t" + name, i); c.sendall(struct.pack(">H", len(q)) + q)
        n = struct.unpack(">H", c.recv(2))[0]; r = b""
        while len(r) < n:
            r += c.recv(n - len(r))
        c.close()
        assert r[3] & 0x0f == 0
        out["tcp"].append(time.perf_counter() - t)
    except Exception:
        failed += 1
    t = time.perf_counter()
    try:
        urllib.request.urlopen("http://127.0.0.1:9395/healthz", timeout=2).read()
        out["healthz"].append(time.perf_counter() - t)
    except Exception:
        failed += 1

def ms(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000 if xs else float("nan")

parts = [f"{k} {len(v)}/50 median {ms(v, .5):.2f} ms p99 {ms(v, .99):.2f} ms" for k, v in out.items()]
print(f"member, {sys.argv[1]}: " + "; ".join(parts) + f"; failed {failed}")
PY

# One holder process per 10,000 connections (the open-files limit is per
# process): opens them from its 40 addresses without blocking, waits, says
# how many the server closed at once, and holds the rest until killed.
cat > "$work/hold.py" <<'PY'
import socket, sys, time
count, first = int(sys.argv[1]), int(sys.argv[2])
held = []
for i in range(count):
    s = socket.socket(); s.setblocking(False)
    s.bind((f"127.10.0.{first + i % 40}", 0))
    try:
        s.connect(("127.0.0.30", 53))
    except BlockingIOError:
        pass
    held.append(s)
time.sleep(4)
closed = 0
for s in held:
    try:
        if s.recv(1) == b"":
            closed += 1
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print(f"holder {first}: {count} opened, {closed} closed by the server, {count - closed} held", flush=True)
time.sleep(120)
PY
rss() { awk '/VmRSS/ {print int($2/1024)}' /proc/$pid/status; }
echo "max_connections in force: $(grep -o 'max_connections lowered[^"]*' "$work/serve.log" || echo 20000 default)"
echo "rss before: $(rss) MiB"
python3 "$work/member.py" idle
holders=()
per=$((CONNECTIONS / 2))
python3 "$work/hold.py" "$per" 1 &
holders+=($!)
python3 "$work/hold.py" "$((CONNECTIONS - per))" 41 &
holders+=($!)
sleep 6
python3 "$work/member.py" "under the flood"
echo "rss with the flood held: $(rss) MiB"
curl -s http://127.0.0.1:9395/metrics | grep -E '^portcullis_connections(_refused_total)?\{transport="tcp"' || true
kill "${holders[@]}" 2>/dev/null || true
sleep 2
echo "rss after: $(rss) MiB"
rm -rf "$work"
