#!/usr/bin/env bash
# Install what the test suite needs beyond Rust, then nothing else:
#   * Chromium (Debian's package), for the review-page browser test;
#   * OASIS medallion and stix2 (PyPI), for the TAXII test.
# Safe to re-run; uses sudo when not root.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -z "${PORTCULLIS_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
    && ! command -v chromium-browser >/dev/null 2>&1; then
    echo "test-deps: installing chromium"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if ! python3 -c 'import medallion, stix2' >/dev/null 2>&1; then
    echo "test-deps: installing medallion and stix2"
    python3 -m pip install --quiet --disable-pip-version-check medallion stix2
fi
