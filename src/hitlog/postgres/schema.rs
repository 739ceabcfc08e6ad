//! The fleet store's schema: versioned migrations, applied in order by
//! whichever node (or reader) connects first.

use postgres::Client;

use super::{PgError, db};

/// Arbitrary, fixed: the advisory lock migrations take.
const MIGRATION_LOCK: i64 = 0x706f_7274_6375_6c6c;

/// Version n is `MIGRATIONS[n - 1]`. Append only: a released migration is
/// never edited.
const MIGRATIONS: &[&str] = &[
    // 1: the records and the daily roll-ups, as in SQLite.
    "CREATE TABLE hits (
        node      text        NOT NULL,
        epoch     bigint      NOT NULL,
        seq       bigint      NOT NULL,
        ts        timestamptz NOT NULL,
        org       text        NOT NULL,  -- '' for a client in no organisation
        client    text        NOT NULL,
        transport text        NOT NULL,
        qname     text        NOT NULL,
        qtype     text        NOT NULL,
        stage     text        NOT NULL,
        matched   text        NOT NULL,
        feed      text        NOT NULL,
        category  text        NOT NULL,
        indicator text,
        action    text        NOT NULL,
        repeats   bigint      NOT NULL DEFAULT 1,
        last_ts   timestamptz,
        PRIMARY KEY (node, epoch, seq)
    );
    CREATE INDEX hits_org_ts ON hits (org, ts);
    CREATE INDEX hits_ts ON hits USING brin (ts);
    CREATE TABLE hits_daily (
        day      date        NOT NULL,
        org      text        NOT NULL,
        matched  text        NOT NULL,
        client   text        NOT NULL,
        category text        NOT NULL,
        n        bigint      NOT NULL,
        first_ts timestamptz NOT NULL,
        last_ts  timestamptz NOT NULL,
        PRIMARY KEY (day, org, matched, client)
    );
    CREATE INDEX hits_daily_org ON hits_daily (org, day);
    CREATE TABLE hits_daily_feeds (
        day      date   NOT NULL,
        org      text   NOT NULL,
        category text   NOT NULL,
        feed     text   NOT NULL,
        action   text   NOT NULL,
        n        bigint NOT NULL,
        PRIMARY KEY (day, org, category, feed, action)
    );",
    // 2: a fleet-wide reference number on every record (the id that
    // `logs`, the API and the page show and page by), and indexes that
    // the readers walk newest first: by organisation, and across them.
    "ALTER TABLE hits ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
    CREATE UNIQUE INDEX hits_id ON hits (id);
    DROP INDEX hits_org_ts;
    CREATE INDEX hits_org_ts ON hits (org, ts, id);
    DROP INDEX hits_ts;
    CREATE INDEX hits_ts ON hits (ts, id);",
    // The sightings roll-up (as SQLite's `hits_daily_sightings`), built
    // from the records already there.
    "CREATE TABLE hits_daily_sightings (
        day       date        NOT NULL,
        feed      text        NOT NULL,
        matched   text        NOT NULL,
        indicator text        NOT NULL,  -- the STIX indicator id, or ''
        org       text        NOT NULL,
        category  text        NOT NULL,
        n         bigint      NOT NULL,
        first_ts  timestamptz NOT NULL,
        last_ts   timestamptz NOT NULL,
        PRIMARY KEY (day, feed, matched, indicator, org)
    );
    CREATE INDEX hits_daily_sightings_last
        ON hits_daily_sightings (last_ts, day, feed, matched, indicator, org);
    CREATE INDEX hits_daily_sightings_org
        ON hits_daily_sightings (org, last_ts, day, feed, matched, indicator);
    INSERT INTO hits_daily_sightings
        SELECT (ts AT TIME ZONE 'UTC')::date, feed, matched,
            CASE WHEN indicator LIKE 'indicator--%' THEN indicator ELSE '' END, org,
            (array_agg(category ORDER BY ts DESC))[1], sum(repeats), min(ts),
            max(coalesce(last_ts, ts))
        FROM hits WHERE stage <> 'client_ip' GROUP BY 1, 2, 3, 4, 5;",
];

/// Bring the schema up to this build's version. Returns the version the
/// database had.
pub fn migrate(client: &mut Client) -> Result<i64, PgError> {
    let known = MIGRATIONS.len() as i64;
    let mut tx = client.transaction().map_err(db("migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db("migration lock"))?;
    // Checked, not `IF NOT EXISTS`, which has the server send a notice
    // that the driver logs for every node's start.
    let exists: bool = tx
        .query_one(
            "SELECT to_regclass('portcullis_migrations') IS NOT NULL",
            &[],
        )
        .map_err(db("migration table"))?
        .get(0);
    if !exists {
        tx.batch_execute(
            "CREATE TABLE portcullis_migrations (
                version    integer     PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .map_err(db("migration table"))?;
    }
    let found: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM portcullis_migrations",
            &[],
        )
        .map_err(db("schema version"))?
        .get(0);
    if found > known {
        return Err(PgError::TooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(sql).map_err(db("migration"))?;
        tx.execute(
            "INSERT INTO portcullis_migrations (version) VALUES ($1)",
            &[&version],
        )
        .map_err(db("migration record"))?;
        tracing::info!(version, "PostgreSQL hit store schema migrated");
    }
    tx.commit().map_err(db("migration commit"))?;
    Ok(found)
}
