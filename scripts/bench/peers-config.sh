# Sourced by peers.sh and tail-latency.sh: Portcullis as the peers
# harness runs it beside the other resolvers.
# peers_workdir WORK DATA HITLOG_ENABLED: the full threat list as the one
# feed in WORK/feeds and WORK/portcullis.toml: one worker on 127.0.0.20:53,
# forwarding to the harness's fake upstream, metrics off.
peers_workdir() {
    local work=$1 data=$2 hitlog=$3
    mkdir -p "$work/feeds"
    ln -s "$(realpath "$data/threat-domains.tsv.gz")" "$work/feeds/threat-domains.tsv.gz"
    cat >"$work/portcullis.toml" <<TOML
[server]
listen = ["127.0.0.20:53"]
allow_unknown_clients = true
workers = 1
[resolver]
# The peers run unvalidated in these workloads; so do we.
dnssec = "off"
mode = "forward"
upstreams = ["127.0.0.2:53"]
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
[admin]
listen = ""
[hitlog]
enabled = ${hitlog}
[log]
level = "warn"
TOML
}
