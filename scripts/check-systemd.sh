#!/usr/bin/env bash
# Check systemd/portcullis.service: `systemd-analyze verify` must pass and
# `systemd-analyze security` must rate it 2.0 ("OK") or better. The unit
# names /usr/local/bin/portcullis; the check points it at our build.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null || true
    fi
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-systemd: systemd-analyze is not available here; skipping the unit check"
    exit 0
fi

bin="$(pwd)/target/debug/portcullis"
[ -x "$bin" ] || cargo build --quiet
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed "s#/usr/local/bin/portcullis#$bin#g" systemd/portcullis.service >"$tmp/portcullis.service"

systemd-analyze verify "$tmp/portcullis.service"
# --threshold fails the command when the exposure is above 2.0 (20/100).
systemd-analyze security --offline=yes --threshold=20 "$tmp/portcullis.service" | tail -n 1
echo "check-systemd: unit verified"
