#!/usr/bin/env bash
# Send 1,000,000 malformed DNS messages (UDP and TCP) to the running
# resolver and check that it answers correctly after every batch, logs no
# panic and keeps its memory: the `packet_fuzz` integration test, scaled
# up. PORTCULLIS_PACKET_FUZZ sets the count, PORTCULLIS_PACKET_FUZZ_SEED
# (hex) replays a run.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PORTCULLIS_PACKET_FUZZ=${PORTCULLIS_PACKET_FUZZ:-1000000}
cargo test --test integration packet_fuzz -- --nocapture
