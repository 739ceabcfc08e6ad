#!/usr/bin/env bash
# Install what the test suite needs beyond Rust, then nothing else:
#   * Chromium (Debian's package), for the review-page and block-page
#     browser tests;
#   * Unbound (Debian's package), for the RPZ differential test; the
#     package's own service is kept from starting (policy-rc.d), the test
#     runs its own Unbound on loopback;
#   * OASIS medallion and stix2 (PyPI), for the TAXII test, and
#     stix2-validator and taxii2-client (PyPI), for the sharing test;
#   * bind9-utils (dnssec-keygen, dnssec-signzone), NSD, dig and xxd, for
#     the signed DNSSEC lab (tests/lab/signed-lab.sh); NSD's own service is
#     kept from starting like Unbound's;
#   * kdig (knot-dnsutils), curl and openssl, and aioquic (PyPI), for the
#     encrypted DNS tests (DoT, DoH, DoQ clients and a test CA);
#   * PostgreSQL (Debian's package), for the fleet hit-store test;
#   * fstrm-bin (fstrm_capture), for the dnstap test.
# Safe to re-run; uses sudo when not root.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -z "${PORTCULLIS_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
    && ! command -v chromium-browser >/dev/null 2>&1; then
    echo "test-deps: installing chromium"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# Installs Debian packages without starting their services (the tests run
# their own servers on loopback; a packaged NSD or Unbound on port 53 would
# take the addresses they need).
apt_install_quiet() {
    local created_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod +x /usr/sbin/policy-rc.d
        created_policy=1
    fi
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    if [ -n "$created_policy" ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
}

if ! [ -x /usr/sbin/unbound ]; then
    echo "test-deps: installing unbound"
    apt_install_quiet unbound
fi

if ! command -v dnssec-signzone >/dev/null 2>&1 || ! [ -x /usr/sbin/nsd ] \
    || ! command -v dig >/dev/null 2>&1 || ! command -v xxd >/dev/null 2>&1; then
    echo "test-deps: installing bind9-utils, nsd, bind9-dnsutils and xxd"
    apt_install_quiet bind9-utils bind9-dnsutils nsd xxd
fi

if ! command -v kdig >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 \
    || ! command -v openssl >/dev/null 2>&1; then
    echo "test-deps: installing knot-dnsutils, curl and openssl"
    apt_install_quiet knot-dnsutils curl openssl
fi

# The dnstap test's collector (fstrm_capture); dnstap-read comes with
# bind9-dnsutils above.
if ! command -v fstrm_capture >/dev/null 2>&1; then
    echo "test-deps: installing fstrm-bin"
    apt_install_quiet fstrm-bin
fi

# The fleet test runs its own PostgreSQL cluster (initdb, pg_ctl) on
# loopback; the package's own cluster is kept from starting like NSD's.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "test-deps: installing postgresql"
    apt_install_quiet postgresql
fi

if ! python3 -c 'import aioquic' >/dev/null 2>&1; then
    echo "test-deps: installing aioquic"
    python3 -m pip install --quiet --disable-pip-version-check aioquic
fi

if ! python3 -c 'import medallion, stix2' >/dev/null 2>&1; then
    echo "test-deps: installing medallion and stix2"
    python3 -m pip install --quiet --disable-pip-version-check medallion stix2
fi

if ! python3 -c 'import stix2validator, taxii2client' >/dev/null 2>&1; then
    echo "test-deps: installing stix2-validator and taxii2-client"
    python3 -m pip install --quiet --disable-pip-version-check stix2-validator taxii2-client
fi
