#!/usr/bin/env bash
# Reports from the fleet's PostgreSQL store at scale: ten million records
# over 30 days, then `portcullis report` (the CLI of a reporting-only
# instance, release build) for one organisation and for all of them.
#
# The data set mirrors `cargo bench --bench hitlog`: 100 organisations
# with 80 clients each, every client beaconing to 1-3 of 2,000 malware
# names 20 times a day (9.6 million records), and 500,000 one-off lookups
# of 200,000 phishing names, spread over three nodes. It is generated in
# SQL (loading it through the forwarder would take most of an hour on a
# small machine) and rolled up into hits_daily and hits_daily_feeds as
# the forwarder's insert does. Prints the load time and each report's
# wall time (REPORT_RUNS, 3, of each).
# Needs Debian's postgresql; run as root (PostgreSQL then runs as the
# postgres user). Loopback only; bounded in size.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release/portcullis}
RUNS=${REPORT_RUNS:-3}
[[ -x $BIN ]] || { echo "build first: cargo build --release" >&2; exit 1; }
source scripts/bench/pg-cluster.sh

work=$(mktemp -d /tmp/portcullis-fleet-report.XXXXXX)
chmod 755 "$work"
PORT=55433
cleanup() {
    pg_stop
    rm -rf "$work"
}
trap cleanup EXIT
pg_start $PORT "-c shared_buffers=1GB -c work_mem=64MB -c maintenance_work_mem=512MB \
    -c max_wal_size=4GB"
psql() { PGPASSWORD=bench "$PGBIN/psql" -h 127.0.0.1 -p $PORT -U portcullis -d hits -Atq -v ON_ERROR_STOP=1 "$@"; }

echo bench >"$work/pg-password"
cat >"$work/portcullis.toml" <<TOML
[server]
listen = []
[admin]
listen = "127.0.0.1:0"
[blocklist]
feeds_dir = "feeds"
state_dir = "state"
allow_empty = true
[hitlog]
enabled = false
postgres = "host=127.0.0.1 port=$PORT user=portcullis dbname=hits sslmode=disable"
postgres_password_file = "pg-password"
TOML
for o in $(seq 0 99); do
    printf '[[organisation]]\nid = "org-%03d"\nname = "Org %d"\nnetworks = ["10.%d.0.0/16"]\n' \
        "$o" "$o" "$o" >>"$work/portcullis.toml"
done
mkdir -p "$work/feeds"
# The binary makes the schema (an empty report).
"$BIN" report --config "$work/portcullis.toml" --format json >/dev/null

start=$(date +%s.%N)
psql <<'SQL'
-- Whole UTC days, the last of them today.
CREATE TEMP TABLE bench AS SELECT (current_date - 29)::timestamptz AS t0;
-- Load without indexes, in time order (as the forwarders would have
-- inserted it, so ids rise with time), then index.
ALTER TABLE hits ALTER COLUMN id DROP IDENTITY;
DROP INDEX hits_org_ts; DROP INDEX hits_ts; DROP INDEX hits_id;
ALTER TABLE hits DROP CONSTRAINT hits_pkey;
CREATE SEQUENCE bench_seq;
INSERT INTO hits (id, node, epoch, seq, ts, org, client, transport, qname, qtype,
                  stage, matched, feed, category, indicator, action, repeats, last_ts)
SELECT s, node, 1, s, ts, org, client, 'udp', qname, 'A', 'qname', matched, feed,
       category, NULL, 'nxdomain', 1, NULL
FROM (SELECT nextval('bench_seq') AS s, q.*
      FROM (
        -- Beacons: each client to 1-3 names, 20 times a day, for 30 days.
        SELECT 'node-' || (c % 3) AS node,
               b.t0 + d * interval '1 day' + random() * interval '1 day' * 0.999 AS ts,
               format('org-%s', lpad(o::text, 3, '0')) AS org,
               format('10.%s.%s.%s', o, c / 250, c % 250 + 1) AS client,
               format('www.c2-%s.example', n) AS qname,
               format('c2-%s.example', n) AS matched,
               (ARRAY['urlhaus.txt', 'threatfox.tsv', 'partner-stix.json'])[1 + n % 3] AS feed,
               'malware' AS category
        FROM bench b,
             generate_series(0, 99) o, generate_series(0, 79) c,
             LATERAL (SELECT (abs(hashint4(o * 1000 + c * 10 + j)) % 2000) AS n
                      FROM generate_series(1, 1 + (o + c) % 3) j) names,
             generate_series(0, 29) d, generate_series(1, 20) k
        UNION ALL
        -- One-offs: 500,000 lookups of 200,000 phishing names.
        SELECT 'node-' || (i % 3),
               b.t0 + random() * interval '30 days' * 0.999,
               format('org-%s', lpad((i % 100)::text, 3, '0')),
               format('10.%s.0.%s', i % 100, (i / 100) % 80 + 1),
               format('login.phish-%s.example', i % 200000),
               format('phish-%s.example', i % 200000), 'phishing.txt', 'phishing'
        FROM bench b, generate_series(1, 500000) i
        ORDER BY ts) q) numbered;
ALTER TABLE hits ADD PRIMARY KEY (node, epoch, seq);
ALTER TABLE hits ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('hits', 'id'), (SELECT max(id) FROM hits));
CREATE UNIQUE INDEX hits_id ON hits (id);
CREATE INDEX hits_org_ts ON hits (org, ts, id);
CREATE INDEX hits_ts ON hits (ts, id);
-- The roll-ups, as the forwarder's insert folds them.
INSERT INTO hits_daily (day, org, matched, client, category, n, first_ts, last_ts)
SELECT (ts AT TIME ZONE 'UTC')::date, org, matched, client, min(category), sum(repeats),
       min(ts), max(coalesce(last_ts, ts))
FROM hits GROUP BY 1, 2, 3, 4;
INSERT INTO hits_daily_feeds (day, org, category, feed, action, n)
SELECT (ts AT TIME ZONE 'UTC')::date, org, category, feed, action, sum(repeats)
FROM hits GROUP BY 1, 2, 3, 4, 5;
VACUUM ANALYZE;
SQL
end=$(date +%s.%N)
printf 'loaded %s records (%s roll-up rows) in %.0f s\n' \
    "$(psql -c 'SELECT count(*) FROM hits')" \
    "$(psql -c 'SELECT count(*) FROM hits_daily')" "$(echo "$end - $start" | bc)"

timed() {
    local what=$1
    shift
    for _ in $(seq 1 "$RUNS"); do
        local t0 t1 out
        t0=$(date +%s.%N)
        out=$("$BIN" report --config "$work/portcullis.toml" --format json "$@")
        t1=$(date +%s.%N)
        printf '%-40s %6.2f s  (total %s)\n' "$what" "$(echo "$t1 - $t0" | bc)" \
            "$(echo "$out" | grep -m1 '"total"' | tr -dc 0-9)"
    done
}
timed "one organisation, 30 days" --org org-042
timed "every organisation, 30 days"
timed "every organisation, last 24 h" --since 24h
