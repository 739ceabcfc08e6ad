#!/usr/bin/env bash
# A signed DNSSEC lab hierarchy built with the real tools (BIND's
# dnssec-keygen / dnssec-signzone / dnssec-dsfromkey) and served by NSD on
# loopback port 53. See tests/lab/README.md for what each zone is for.
#
#   signed-lab.sh DIR               build (or rebuild) the lab in DIR, start NSD
#   signed-lab.sh --unbound DIR PORT start a validating Unbound on 127.0.54.9:PORT
#   signed-lab.sh --unbound-plain DIR PORT  a non-validating one (an upstream
#                                    for a forwarder that validates itself)
#   signed-lab.sh --stop DIR        stop everything started for DIR (by PID file)
#
# Prints nothing on success; on failure prints why to stderr and exits non-zero.
set -euo pipefail

readonly ROOT_ADDR=127.0.54.1     # "."
readonly TLD_ADDR=127.0.54.2      # "test."
readonly ZONE_ADDR=127.0.54.3     # every second-level zone
readonly UNBOUND_ADDR=127.0.54.9
readonly TTL=300
# Second-level zones, all served from ZONE_ADDR.
readonly SLDS=(example nsec3 bogus expired future nokey insecure ed448 unknownalg ntabroken nosig nonsec)

# Set once processes may have been started; die() then stops them again.
CLEANUP=""

die() {
    echo "signed-lab: $*" >&2
    case $CLEANUP in
        all) stop_all "$DIR" ;;
        unbound) stop_unbound "$DIR" ;;
    esac
    exit 1
}

# Any unexpected failing command (set -e) ends up here too.
trap 'die "command failed (line $LINENO, status $?): $BASH_COMMAND"' ERR
set -E

usage() {
    cat >&2 <<'EOF'
usage: signed-lab.sh DIR                 build the lab in DIR and start NSD on 127.0.54.{1,2,3}:53
       signed-lab.sh --unbound DIR PORT  start a validating Unbound on 127.0.54.9:PORT
       signed-lab.sh --unbound-plain DIR PORT  a non-validating Unbound there
       signed-lab.sh --stop DIR          stop the NSD and Unbound processes started for DIR
EOF
    exit 2
}

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "required tool '$tool' not found in PATH"
    done
}

# ---------------------------------------------------------------- processes

# stop PIDFILE CONF [PIDFILE CONF ...]: asks every process named by a PID
# file to stop, if it is still the one we started (its command line mentions
# CONF), then waits for all of them (NSD takes over a second to shut down,
# hence in parallel) and removes the PID files.
stop() {
    local pids=() pid i alive
    while (($# >= 2)); do
        if [[ -f $1 ]]; then
            pid=$(tr -dc '0-9' <"$1")
            if [[ -n $pid ]] && [[ -r /proc/$pid/cmdline ]] &&
                tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"; then
                kill -TERM "$pid" 2>/dev/null || true
                pids+=("$pid")
            fi
            rm -f "$1"
        fi
        shift 2
    done
    for ((i = 0; i < 100; i++)); do
        alive=0
        for pid in "${pids[@]}"; do
            [[ -e /proc/$pid ]] && alive=1
        done
        ((alive)) || return 0
        sleep 0.05
    done
    for pid in "${pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    sleep 0.1
}

stop_unbound() {
    stop "$1/${UNBOUND_DIR:-unbound}/unbound.pid" "$1/${UNBOUND_DIR:-unbound}/unbound.conf"
}

stop_all() {
    local dir=$1
    stop "$dir/unbound/unbound.pid" "$dir/unbound/unbound.conf" \
        "$dir/unbound-plain/unbound.pid" "$dir/unbound-plain/unbound.conf" \
        "$dir/nsd/root/nsd.pid" "$dir/nsd/root/nsd.conf" \
        "$dir/nsd/tld/nsd.pid" "$dir/nsd/tld/nsd.conf" \
        "$dir/nsd/zone/nsd.pid" "$dir/nsd/zone/nsd.conf"
}

# Waits until SERVER:PORT answers an SOA query for ZONE with NOERROR, up to
# about five seconds. MODE "auth": no recursion, answer must be authoritative;
# MODE "recursive": recursion desired.
wait_answer() {
    local server=$1 port=$2 zone=$3 mode=$4 i out rd=+norec
    [[ $mode == recursive ]] && rd=+rec
    for ((i = 0; i < 50; i++)); do
        if out=$(dig "$rd" +time=1 +tries=1 -p "$port" "@$server" "$zone" SOA 2>/dev/null) &&
            grep -q 'status: NOERROR' <<<"$out" &&
            { [[ $mode != auth ]] || grep -q 'flags: qr aa' <<<"$out"; }; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- keys

# keygen ORIGIN ALG → sets KSK and ZSK to the key file paths (without suffix).
keygen() {
    local origin=$1 alg=$2 kdir="$DIR/keys/${1%.}"
    [[ $origin == . ]] && kdir="$DIR/keys/root"
    mkdir -p "$kdir"
    KSK="$kdir/$(dnssec-keygen -q -K "$kdir" -a "$alg" -L "$TTL" -f KSK "$origin")"
    ZSK="$kdir/$(dnssec-keygen -q -K "$kdir" -a "$alg" -L "$TTL" "$origin")"
}

# ds KEYFILE → the SHA-256 DS line for a key file.
ds() {
    dnssec-dsfromkey -2 -T "$TTL" "$1.key"
}

# dnskey_line KEYFILE → the key's DNSKEY record on one line, base64 unbroken.
dnskey_line() {
    awk '!/^;/ && $4 == "DNSKEY" {
        printf "%s %s %s %s %s %s %s ", $1, $2, $3, $4, $5, $6, $7
        for (i = 8; i <= NF; i++) printf "%s", $i
        printf "\n"
    }' "$1.key"
}

# manual_ds OWNER FLAGS ALG BASE64 → DS line (SHA-256) computed by hand, for
# algorithm numbers dnssec-dsfromkey does not know (RFC 4034 5.1.4, App. B).
manual_ds() {
    local owner=$1 flags=$2 alg=$3 key=$4 wire="" label labels=() rdata tag=0 i byte digest
    [[ $owner == . ]] || IFS=. read -ra labels <<<"${owner%.}"
    for label in "${labels[@]}"; do
        label=${label,,}
        wire+=$(printf '%02x' "${#label}")$(printf '%s' "$label" | xxd -p | tr -d '\n')
    done
    wire+=00
    rdata=$(printf '%04x03%02x' "$flags" "$alg")$(printf '%s' "$key" | base64 -d | xxd -p | tr -d '\n')
    for ((i = 0; i < ${#rdata} / 2; i++)); do
        byte=$((16#${rdata:i*2:2}))
        if ((i % 2)); then tag=$((tag + byte)); else tag=$((tag + (byte << 8))); fi
    done
    tag=$(((tag + ((tag >> 16) & 0xffff)) & 0xffff))
    digest=$(printf '%s' "$wire$rdata" | xxd -r -p | sha256sum | cut -d' ' -f1)
    printf '%s %s IN DS %s %s 2 %s\n' "$owner" "$TTL" "$tag" "$alg" "${digest^^}"
}

# ---------------------------------------------------------------- zones

soa() {
    printf '$TTL %s\n%s IN SOA a.root-servers. hostmaster.root-servers. %s 3600 600 86400 %s\n' \
        "$TTL" "$1" "$SERIAL" "$TTL"
}

# sign ORIGIN IN OUT [dnssec-signzone options...] with the current KSK/ZSK.
sign() {
    local origin=$1 in=$2 out=$3
    shift 3
    dnssec-signzone -q -O full -o "$origin" -d "$DIR/keys" -s "$START" -e "$END" "$@" \
        -k "$KSK" -f "$out" "$in" "$ZSK" >/dev/null ||
        die "dnssec-signzone failed for $origin"
}

# corrupt_rrsig SIGNEDFILE OWNER TYPE: alters one base64 character of the
# signature of OWNER's RRSIG covering TYPE (still valid base64, wrong bytes).
corrupt_rrsig() {
    local file=$1 owner=$2 type=$3 n
    awk -v owner="$owner" -v type="$type" '
        $1 == owner && $4 == "RRSIG" && $5 == type {
            c = substr($13, 6, 1)
            $13 = substr($13, 1, 5) (c == "A" ? "B" : "A") substr($13, 7)
            edited++
        }
        { print }
        END { print "; edited " edited + 0 > "/dev/stderr" }
    ' "$file" >"$file.tmp" 2>"$file.edits"
    n=$(grep -o '[0-9]*' "$file.edits")
    rm -f "$file.edits"
    [[ $n == 1 ]] || die "expected to corrupt exactly one RRSIG $type at $owner, did $n"
    mv "$file.tmp" "$file"
}

# Removes the records of FILE that the awk condition COND selects; at least
# one must go.
drop_records() {
    local file=$1 cond=$2 before after
    before=$(wc -l <"$file")
    awk "!($cond)" "$file" >"$file.tmp"
    after=$(wc -l <"$file.tmp")
    ((after < before)) || die "nothing matched '$cond' in $file"
    mv "$file.tmp" "$file"
}

build_sld() {
    local name=$1 zone="$1.test" z="$DIR/zones/$1.test.zone" alg=13 extra=()
    local ip
    case $name in
        example) ip=192.0.2.10 ;;
        nsec3) ip=192.0.2.20 ;;
        bogus) ip=192.0.2.30 ;;
        expired) ip=192.0.2.40 ;;
        future) ip=192.0.2.50 ;;
        nokey) ip=192.0.2.60 ;;
        insecure) ip=192.0.2.70 ;;
        ed448) ip=192.0.2.80 ;;
        ntabroken) ip=192.0.2.90 ;;
        unknownalg) ip=192.0.2.100 ;;
        nosig) ip=192.0.2.110 ;;
        nonsec) ip=192.0.2.115 ;;
        bench) ip=192.0.2.120 ;;
    esac
    {
        soa "$zone."
        printf '%s. IN NS zone.root-servers.\n' "$zone"
        printf 'www IN A %s\n' "$ip"
        if [[ $name == example ]]; then
            printf 'mail IN A 192.0.2.11\nalias IN CNAME www\ntxt IN TXT "hello"\nevil IN A 192.0.2.66\n'
        fi
        if [[ $name == bench ]]; then
            # h1 .. hN for the validated benchmark (scripts/bench/dnssec.sh).
            awk -v n="$LAB_BENCH_NAMES" 'BEGIN { for (i = 1; i <= n; i++) printf "h%d IN A 192.0.2.%d\n", i, i % 250 + 1 }'
        fi
    } >"$z"
    ZONEFILES+=("$zone.:$1.test.zone.signed")
    if [[ $name == insecure ]]; then
        cp "$z" "$z.signed"
        printf '%s. IN NS zone.root-servers.\n' "$zone" >>"$DIR/zones/test.delegations"
        return
    fi
    [[ $name == ed448 ]] && alg=16
    keygen "$zone." "$alg"
    printf '$INCLUDE %s.key\n$INCLUDE %s.key\n' "$KSK" "$ZSK" >>"$z"
    case $name in
        nsec3) extra=(-3 - -H 0) ;;
        expired) extra=(-P); START=now-2592000 END=now-864000 ;;  # -30d .. -10d
        future) extra=(-P); START=now+864000 END=now+3456000 ;;   # +10d .. +40d
    esac
    sign "$zone." "$z" "$z.signed" "${extra[@]}"
    START=$NORMAL_START END=$NORMAL_END
    {
        printf '%s. IN NS zone.root-servers.\n' "$zone"
        case $name in
            nokey)
                # The parent's DS names a KSK that never appears in the zone.
                local kdir="$DIR/keys/$zone-absent" stray
                mkdir -p "$kdir"
                stray="$kdir/$(dnssec-keygen -q -K "$kdir" -a 13 -L "$TTL" -f KSK "$zone.")"
                ds "$stray"
                ;;
            unknownalg)
                # Rewrite the DNSKEY algorithm to 100 (unassigned) after signing;
                # the DS follows the rewritten key, so every validator should
                # treat the zone as insecure (RFC 4035 5.2).
                awk '$4 == "DNSKEY" && $7 == "13" { $7 = "100" } { print }' "$z.signed" >"$z.tmp"
                mv "$z.tmp" "$z.signed"
                local line
                line=$(awk -v o="$zone." '$1 == o && $4 == "DNSKEY" && $5 == "257" {
                    k = ""; for (i = 8; i <= NF; i++) k = k $i; print $5, $7, k }' "$z.signed")
                # shellcheck disable=SC2086
                manual_ds "$zone." $line
                ;;
            *) ds "$KSK" ;;
        esac
    } >>"$DIR/zones/test.delegations"
    case $name in
        bogus | ntabroken) corrupt_rrsig "$z.signed" "www.$zone." A ;;
        # The signature over www's A removed: RRSIGs Missing.
        nosig) drop_records "$z.signed" "\$1 == \"www.$zone.\" && \$4 == \"RRSIG\" && \$5 == \"A\"" ;;
        # Every NSEC (and its RRSIG) removed: a denial without proof.
        nonsec) drop_records "$z.signed" '$4 == "NSEC" || ($4 == "RRSIG" && $5 == "NSEC")' ;;
    esac
}

write_nsd_conf() {
    local name=$1 addr=$2 d="$DIR/nsd/$1" entry
    shift 2
    mkdir -p "$d"
    {
        cat <<EOF
server:
    ip-address: $addr
    port: 53
    do-ip4: yes
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "$DIR/zones"
    database: ""
    zonelistfile: "$d/zone.list"
    xfrdfile: "$d/xfrd.state"
    xfrdir: "$d"
    xfrd-reload-timeout: 1
    zonefiles-write: 0
    cookie-secret-file: "$d/cookiesecrets.txt"
    pidfile: "$d/nsd.pid"
    logfile: "$d/nsd.log"
    verbosity: 1
    server-count: 1
    hide-version: yes
    # No response rate limiting: one client (the resolver under test) asks
    # for many names, and RRL would drop its NODATA answers.
    rrl-ratelimit: 0
    reuseport: no
remote-control:
    control-enable: no
EOF
        for entry in "$@"; do
            printf 'zone:\n    name: "%s"\n    zonefile: "%s/zones/%s"\n' "${entry%%:*}" "$DIR" "${entry#*:}"
        done
    } >"$d/nsd.conf"
    nsd-checkconf "$d/nsd.conf" || die "nsd-checkconf rejected $d/nsd.conf"
}

start_nsd() {
    local name=$1 addr=$2 zone=$3 d="$DIR/nsd/$1" pid
    : >"$d/nsd.log"
    if ! nsd -c "$d/nsd.conf" 2>>"$d/nsd.log"; then
        die "nsd ($name) failed to start on $addr:53: $(tail -n 5 "$d/nsd.log" | tr '\n' ' ')"
    fi
    for ((i = 0; i < 50; i++)); do
        [[ -s $d/nsd.pid ]] && break
        sleep 0.1
    done
    pid=$(tr -dc '0-9' <"$d/nsd.pid" 2>/dev/null || true)
    [[ -n $pid && -e /proc/$pid ]] ||
        die "nsd ($name) exited right after start: $(tail -n 5 "$d/nsd.log" | tr '\n' ' ')"
    wait_answer "$addr" 53 "$zone" auth ||
        die "nsd ($name) on $addr:53 does not answer for '$zone': $(tail -n 5 "$d/nsd.log" | tr '\n' ' ')"
}

build() {
    need dnssec-keygen dnssec-signzone dnssec-dsfromkey nsd nsd-checkconf dig xxd sha256sum base64 awk
    [[ $(id -u) == 0 ]] || die "must run as root (NSD binds port 53)"
    stop_all "$DIR"
    CLEANUP=all
    rm -rf "$DIR/keys" "$DIR/zones" "$DIR/nsd" "$DIR/unbound" \
        "$DIR/root.anchor" "$DIR/root.ds" "$DIR/root.hints"
    mkdir -p "$DIR/keys" "$DIR/zones"

    SERIAL=$(date -u +%s)
    NORMAL_START=now-3600 NORMAL_END=now+2592000 # -1h .. +30d
    START=$NORMAL_START END=$NORMAL_END
    ZONEFILES=()
    : >"$DIR/zones/test.delegations"

    local name
    local slds=("${SLDS[@]}")
    # LAB_BENCH_NAMES=N adds bench.test. with N names (for benchmarks).
    [[ -n ${LAB_BENCH_NAMES:-} ]] && slds+=(bench)
    for name in "${slds[@]}"; do
        build_sld "$name"
    done
    local sld_zones=("${ZONEFILES[@]}")

    # test.
    local z="$DIR/zones/test.zone"
    {
        soa test.
        printf 'test. IN NS tld.root-servers.\n'
        cat "$DIR/zones/test.delegations"
    } >"$z"
    keygen test. 13
    printf '$INCLUDE %s.key\n$INCLUDE %s.key\n' "$KSK" "$ZSK" >>"$z"
    sign test. "$z" "$z.signed"
    local test_ds
    test_ds=$(ds "$KSK")

    # .
    z="$DIR/zones/root.zone"
    {
        soa .
        printf '. IN NS a.root-servers.\n'
        printf 'a.root-servers. IN A %s\n' "$ROOT_ADDR"
        printf 'tld.root-servers. IN A %s\n' "$TLD_ADDR"
        printf 'zone.root-servers. IN A %s\n' "$ZONE_ADDR"
        printf 'test. IN NS tld.root-servers.\n'
        printf '%s\n' "$test_ds"
    } >"$z"
    keygen . 13
    printf '$INCLUDE %s.key\n$INCLUDE %s.key\n' "$KSK" "$ZSK" >>"$z"
    sign . "$z" "$z.signed"

    dnskey_line "$KSK" >"$DIR/root.anchor"
    ds "$KSK" >"$DIR/root.ds"
    printf '. %s IN NS a.root-servers.\na.root-servers. %s IN A %s\n' "$TTL" "$TTL" "$ROOT_ADDR" \
        >"$DIR/root.hints"

    write_nsd_conf root "$ROOT_ADDR" ".:root.zone.signed"
    write_nsd_conf tld "$TLD_ADDR" "test.:test.zone.signed"
    write_nsd_conf zone "$ZONE_ADDR" "${sld_zones[@]}"
    start_nsd root "$ROOT_ADDR" .
    start_nsd tld "$TLD_ADDR" test.
    start_nsd zone "$ZONE_ADDR" example.test.
}

start_unbound() {
    local port=$1 d="$DIR/${UNBOUND_DIR:-unbound}" pid
    need unbound unbound-checkconf dig
    [[ -s $DIR/root.anchor && -s $DIR/root.hints ]] ||
        die "no lab in $DIR (run 'signed-lab.sh $DIR' first)"
    stop_unbound "$DIR"
    mkdir -p "$d"
    cat >"$d/unbound.conf" <<EOF
server:
    interface: $UNBOUND_ADDR
    port: $port
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    username: ""
    chroot: ""
    directory: "$d"
    use-syslog: no
    logfile: "$d/unbound.log"
    pidfile: "$d/unbound.pid"
    verbosity: 1
    val-log-level: 2
    log-servfail: yes
    ede: yes
    num-threads: 1
    so-reuseport: no
    module-config: "${UNBOUND_MODULES:-validator iterator}"
    root-hints: "$DIR/root.hints"
    trust-anchor-file: "$DIR/root.anchor"
    trust-anchor-signaling: no
    root-key-sentinel: no
    harden-dnssec-stripped: yes
    # Unbound serves "test." as an empty local zone by default (RFC 6761).
    local-zone: "test." nodefault
remote-control:
    control-enable: no
EOF
    unbound-checkconf "$d/unbound.conf" >/dev/null || die "unbound-checkconf rejected $d/unbound.conf"
    : >"$d/unbound.log"
    CLEANUP=unbound
    unbound -c "$d/unbound.conf" 2>>"$d/unbound.log" || die "unbound failed to start: $(tail -n 5 "$d/unbound.log" | tr '\n' ' ')"
    for ((i = 0; i < 50; i++)); do
        [[ -s $d/unbound.pid ]] && break
        sleep 0.1
    done
    pid=$(tr -dc '0-9' <"$d/unbound.pid" 2>/dev/null || true)
    [[ -n $pid && -e /proc/$pid ]] ||
        die "unbound exited right after start: $(tail -n 5 "$d/unbound.log" | tr '\n' ' ')"
    # Resolving ". SOA" needs the lab root to be up and the anchor to work.
    wait_answer "$UNBOUND_ADDR" "$port" . recursive ||
        die "unbound on $UNBOUND_ADDR:$port does not answer: $(tail -n 5 "$d/unbound.log" | tr '\n' ' ')"
}

abs_dir() {
    mkdir -p "$1" || die "cannot create $1"
    (cd "$1" && pwd -P)
}

case ${1:-} in
    --stop)
        [[ $# == 2 ]] || usage
        [[ -d $2 ]] || exit 0
        DIR=$(abs_dir "$2")
        stop_all "$DIR"
        ;;
    --unbound)
        [[ $# == 3 && $3 =~ ^[0-9]+$ ]] || usage
        DIR=$(abs_dir "$2")
        start_unbound "$3"
        ;;
    --unbound-plain)
        [[ $# == 3 && $3 =~ ^[0-9]+$ ]] || usage
        DIR=$(abs_dir "$2")
        UNBOUND_DIR=unbound-plain UNBOUND_MODULES=iterator start_unbound "$3"
        ;;
    -h | --help | "" | -*) usage ;;
    *)
        [[ $# == 1 ]] || usage
        DIR=$(abs_dir "$1")
        build
        ;;
esac
