#!/usr/bin/env bash
# Portcullis side by side with the resolvers it replaces, in one run:
# the peers harness's bench.sh (PORTCULLIS_PEERS_DIR) drives Unbound,
# PowerDNS Recursor and Knot Resolver (hickory-dns too with
# PEERS="... hickory", once its install.sh has built it) and Portcullis
# as its `custom` peer through the same workloads: the same fake upstream
# (NSD on 127.0.0.2), the same 1,062,258-name threat list (theirs as RPZ,
# ours as the TSV feed it was made from), each resolver pinned to CPU 0
# with one worker, dnsperf on CPU 1. Prints the peers' table and the
# Portcullis/PowerDNS ratios.
#
# Portcullis runs as an operator would: hit log on (every blocked query is
# written to SQLite by a writer thread on the same pinned core), metrics
# off (no admin listener), one worker.
#
# Needs root (apt-get for the peers, port 53 on loopback) and about ten
# minutes. Loopback only; every daemon is stopped by its PID at the end.
#   bash scripts/bench/peers.sh            # unbound pdns knot + portcullis
#   PEERS="pdns" bash scripts/bench/peers.sh
#   PEERS="pdns" HITLOG=off bash scripts/bench/peers.sh   # without the hit log
#
# PORTCULLIS_BENCH_DATA: the folder holding threat-domains.tsv.gz
# (default ../shared/data beside the repository); PORTCULLIS_PEERS_DIR:
# the peers harness (default ../shared/tools/peers).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PEERS_DIR=${PORTCULLIS_PEERS_DIR:-$ROOT/../shared/tools/peers}
DATA=${PORTCULLIS_BENCH_DATA:-$ROOT/../shared/data}
read -r -a PEERS <<<"${PEERS:-unbound pdns knot}"
[ -d "$PEERS_DIR" ] || { echo "no peers harness in $PEERS_DIR (set PORTCULLIS_PEERS_DIR)" >&2; exit 1; }
[ -f "$DATA/threat-domains.tsv.gz" ] || { echo "no threat-domains.tsv.gz in $DATA (set PORTCULLIS_BENCH_DATA)" >&2; exit 1; }

need=()
for p in nsd unbound pdns-recursor knot-resolver dnsperf dnsutils; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    # Debian must not start the packaged daemons: the scripts run them.
    [ -x /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

# HITLOG=off runs Portcullis without its hit log (what recording costs).
case "${HITLOG:-on}" in
    on) HITLOG_ENABLED=true ;;
    off) HITLOG_ENABLED=false ;;
    *) echo "HITLOG must be on or off" >&2; exit 1 ;;
esac

cargo build --release --quiet
WORK=$(mktemp -d /tmp/portcullis-peers.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
source "$ROOT/scripts/bench/peers-config.sh"
peers_workdir "$WORK" "$DATA" "$HITLOG_ENABLED"

OUT_DIR=${OUT_DIR:-$WORK/results}
# verify.py finds the workloads through WL_DIR (where gen-data.py wrote them).
export WL_DIR=${WL_DIR:-${PEERS_WORK:-/tmp/peers-work}/workloads}
export OUT_DIR RESULTS_MD="$WORK/RESULTS.md"
export CUSTOM_CMD="$ROOT/target/release/portcullis serve --config $WORK/portcullis.toml"
export CUSTOM_IP=127.0.0.20 CUSTOM_BLOCK=nxdomain
export CUSTOM_VERSION="portcullis $(git describe --always --dirty 2>/dev/null || echo 0.1.0)"
bash "$PEERS_DIR/bench.sh" "${PEERS[@]}" custom

# Ratios against PowerDNS Recursor (the fastest peer) from the same run.
python3 - "$OUT_DIR/results.tsv" <<'PY'
import csv, sys
rows = {r["peer"]: r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t")}
ours, pdns = rows.get("custom"), rows.get("pdns")
if not ours or not pdns:
    sys.exit("no pdns or custom row to compare")
def ratio(key, invert=False):
    try:
        a, b = float(ours[key]), float(pdns[key])
        return f"{(b / a if invert else a / b):.2f}x"
    except (ValueError, ZeroDivisionError, KeyError):
        return "n/a"
print("\nPortcullis / PowerDNS Recursor, same run (goal: the ratio it must reach):")
for label, key, invert, goal in [
    ("cached benign q/s", "benign_qps", False, 2.0),
    ("blocked, first pass q/s (hit log on unless HITLOG=off)", "b1_qps", False, 3.5),
    ("blocked, repeated q/s", "blocked_qps", False, 1.0),
    ("mixed q/s", "mixed_qps", False, 2.0),
    ("resident memory after load (lower is better)", "rss_load_mib", True, 10.0),
    ("start-up to serving (lower is better)", "load_s", True, 2.0),
]:
    r = ratio(key, invert)
    try:
        status = "met" if float(r.rstrip("x")) >= goal else "missed"
    except ValueError:
        status = "n/a"
    print(f"  {label}: {r} (ours {ours.get(key)}, pdns {pdns.get(key)}); goal {goal}x: {status}")
PY
# The evidence: every blocked query of the run in the hit log (a record,
# or counted in one's repeats), none lost (the resolver warns at shutdown
# if any was).
if [ "$HITLOG_ENABLED" = true ] && [ -f "$WORK/state/hits.sqlite" ]; then
    read -r records queries < <(sqlite3 -separator ' ' "$WORK/state/hits.sqlite" \
        "SELECT count(*), coalesce(sum(repeats), 0) FROM hits")
    echo "  hit log: $records records counting $queries blocked queries"
    grep 'records were lost' "${RUN_DIR:-/tmp/peers-run}/custom/stdout.log" || echo "  hit log: none lost"
fi
cp "$OUT_DIR/results.tsv" "$ROOT/target/peers-results.tsv" 2>/dev/null || true
cp "$RESULTS_MD" "$ROOT/target/peers-RESULTS.md" 2>/dev/null || true
