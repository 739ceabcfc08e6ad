#!/usr/bin/env bash
# Run every cargo-fuzz target for a while (600 s each by default), from
# corpora seeded with real queries, and report the crashes. Needs the
# nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
#   bash scripts/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET ...]
#
# Crashes land in fuzz/artifacts/TARGET/; each one found becomes a
# regression test (see fuzz/README.md). Exit 1 when any target crashed.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-600}
shift || true
data=${PORTCULLIS_BENCH_DATA:-../shared/data}
# Absolute, before moving into fuzz/.
data=$(cd "$data" 2>/dev/null && pwd || echo "$data")
cd fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build -O
if [ -f "$data/popular-fqdns.txt" ]; then
    python3 ../scripts/fuzz/seed-corpus.py "$data" corpus 2000
else
    echo "no $data/popular-fqdns.txt: the DNS targets start from an empty corpus"
fi
crashed=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    before=$(find "artifacts/$target" -type f | wc -l)
    echo "== $target: ${seconds} s"
    cargo +nightly fuzz run -O "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 2>&1 |
        grep -E "^(stat::number_of_executed_units|==[0-9]+==|SUMMARY|artifact_prefix|thread '.*' panicked)|^  (left|right):" | tail -n 8 || true
    after=$(find "artifacts/$target" -type f | wc -l)
    if [ "$after" -gt "$before" ]; then
        echo "!! $target: $((after - before)) crash(es) in fuzz/artifacts/$target"
        crashed=$((crashed + after - before))
    fi
done
echo "${#targets[@]} targets, $crashed crashes"
[ "$crashed" -eq 0 ]
