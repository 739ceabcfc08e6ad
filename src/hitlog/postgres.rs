//! The fleet's hit store in PostgreSQL: connecting, the schema and its
//! migrations, and writing a batch of spooled records exactly once.
//!
//! Every node keeps writing its own SQLite database, which is also its
//! spool ([`super::forward`] sends what PostgreSQL does not have yet).
//! A record's key in PostgreSQL is (node, epoch, seq): the node id, the
//! local database's epoch (drawn when it was made, so a database made
//! again does not reuse the old one's keys) and the local id. A batch is
//! inserted with `ON CONFLICT DO NOTHING`, so sending it again after a
//! crash between PostgreSQL's commit and the local cursor's update adds
//! nothing: each record lands once. The daily roll-ups are updated in the
//! same statement, from the rows that were really inserted.
//!
//! The schema is created and upgraded by the binary: `MIGRATIONS` in
//! order, each in its own transaction under an advisory lock, so nodes
//! starting together do not race, and recorded in
//! `portcullis_migrations`. A database migrated by a newer Portcullis is
//! refused rather than written in a shape this build does not know.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use postgres::config::SslMode;
use postgres::types::ToSql;
use postgres::{Client, NoTls};

use super::store::SpoolRow;
use crate::config::PostgresConfig;

/// The environment variable a password is read from when no password
/// file is configured.
pub const PASSWORD_ENV: &str = "PORTCULLIS_POSTGRES_PASSWORD";

/// Arbitrary, fixed: the advisory lock migrations take.
const MIGRATION_LOCK: i64 = 0x706f_7274_6375_6c6c;

/// Columns a record is sent with; a multi-row insert of [`ROWS_PER_INSERT`]
/// stays well under PostgreSQL's 65,535 parameters.
const COLUMNS: usize = 17;
pub const ROWS_PER_INSERT: usize = 1_000;

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
];

/// A fleet-store failure, saying what was being done.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("reading the PostgreSQL password from {path}: {source}")]
    Password {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS to PostgreSQL: {0}")]
    Tls(String),
    #[error("PostgreSQL {what}: {}", detail(source))]
    Db {
        what: &'static str,
        source: postgres::Error,
    },
    #[error(
        "the PostgreSQL hit store has schema version {found}; this portcullis knows up to {known}"
    )]
    TooNew { found: i64, known: i64 },
}

/// The driver's error with its causes: its own text is often only
/// "db error" or "error connecting to server".
fn detail(error: &postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn db(what: &'static str) -> impl FnOnce(postgres::Error) -> PgError {
    move |source| PgError::Db { what, source }
}

/// Connect as `config` says: the password from its file or
/// [`PASSWORD_ENV`], TLS unless the URL says `sslmode=disable`.
pub fn connect(config: &PostgresConfig) -> Result<Client, PgError> {
    let mut pg: postgres::Config = config.url.parse().map_err(db("connection string"))?;
    if let Some(password) = password(config.password_file.as_deref())? {
        pg.password(password);
    }
    pg.application_name("portcullis");
    pg.connect_timeout(Duration::from_secs(5));
    let mut client = if pg.get_ssl_mode() == SslMode::Disable {
        pg.connect(NoTls).map_err(db("connect"))?
    } else {
        let tls = tls(config.ca_file.as_deref())?;
        pg.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
            .map_err(db("connect"))?
    };
    // A wedged server must not hold the forwarder for ever.
    client
        .batch_execute("SET statement_timeout = '60s'")
        .map_err(db("session settings"))?;
    Ok(client)
}

fn password(file: Option<&Path>) -> Result<Option<String>, PgError> {
    match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
            .map_err(|source| PgError::Password {
                path: path.to_path_buf(),
                source,
            }),
        None => Ok(std::env::var(PASSWORD_ENV).ok()),
    }
}

fn tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, PgError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect)
                .map_err(|e| PgError::Tls(format!("{}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(PgError::Tls(format!(
                    "{}: no certificate in it",
                    path.display()
                )));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| PgError::Tls(format!("{}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

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

/// Insert `rows` (in id order) for `node`/`epoch` and fold the ones that
/// were new into the roll-ups, in one transaction. Returns how many were
/// new (fewer than sent when a batch is sent again).
pub fn insert(
    client: &mut Client,
    node: &str,
    epoch: i64,
    rows: &[SpoolRow],
) -> Result<u64, PgError> {
    let mut tx = client.transaction().map_err(db("transaction"))?;
    let mut inserted = 0;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = insert_sql(chunk.len());
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * COLUMNS);
        for row in chunk {
            params.extend_from_slice(&[
                &node as &(dyn ToSql + Sync),
                &epoch,
                &row.id,
                &row.ts,
                &row.org,
                &row.client,
                &row.transport,
                &row.qname,
                &row.qtype,
                &row.stage,
                &row.matched,
                &row.feed,
                &row.category,
                &row.indicator,
                &row.action,
                &row.repeats,
                &row.last_ts,
            ]);
        }
        let n: i64 = tx.query_one(&sql, &params).map_err(db("insert"))?.get(0);
        inserted += u64::try_from(n).unwrap_or(0);
    }
    tx.commit().map_err(db("commit"))?;
    Ok(inserted)
}

/// The statement for `rows` records: insert what is new, then fold those
/// rows (and only those) into both roll-ups, grouped and sorted by key so
/// that nodes upserting the same rows take their locks in one order.
/// Times travel as ms since the epoch, as SQLite keeps them.
fn insert_sql(rows: usize) -> String {
    use std::fmt::Write as _;
    let mut values = String::with_capacity(rows * 120);
    for r in 0..rows {
        let p = |c: usize| r * COLUMNS + c + 1;
        let _ = write!(
            values,
            "{}(${}, ${}, ${}, to_timestamp(${}::bigint / 1000.0::float8), ${}, ${}, ${}, ${}, ${}, ${}, \
             ${}, ${}, ${}, ${}, ${}, ${}, to_timestamp(${}::bigint / 1000.0::float8))",
            if r == 0 { "" } else { ", " },
            p(0),
            p(1),
            p(2),
            p(3),
            p(4),
            p(5),
            p(6),
            p(7),
            p(8),
            p(9),
            p(10),
            p(11),
            p(12),
            p(13),
            p(14),
            p(15),
            p(16),
        );
    }
    format!(
        "WITH new AS (
            INSERT INTO hits (node, epoch, seq, ts, org, client, transport, qname, qtype, stage,
                matched, feed, category, indicator, action, repeats, last_ts)
            VALUES {values}
            ON CONFLICT (node, epoch, seq) DO NOTHING
            RETURNING seq, ts, org, client, matched, feed, category, action, repeats, last_ts
        ), daily AS (
            INSERT INTO hits_daily (day, org, matched, client, category, n, first_ts, last_ts)
            SELECT (ts AT TIME ZONE 'UTC')::date, org, matched, client,
                (array_agg(category ORDER BY seq DESC))[1], sum(repeats), min(ts),
                max(coalesce(last_ts, ts))
            FROM new GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
            ON CONFLICT (day, org, matched, client) DO UPDATE SET
                category = excluded.category, n = hits_daily.n + excluded.n,
                first_ts = least(hits_daily.first_ts, excluded.first_ts),
                last_ts = greatest(hits_daily.last_ts, excluded.last_ts)
        ), feeds AS (
            INSERT INTO hits_daily_feeds (day, org, category, feed, action, n)
            SELECT (ts AT TIME ZONE 'UTC')::date, org, category, feed, action, sum(repeats)
            FROM new GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (day, org, category, feed, action) DO UPDATE SET
                n = hits_daily_feeds.n + excluded.n
        )
        SELECT count(*) FROM new"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_numbers_every_parameter_once() {
        let sql = insert_sql(3);
        for p in 1..=3 * COLUMNS {
            assert!(
                sql.contains(&format!("${p},"))
                    || sql.contains(&format!("${p})"))
                    || sql.contains(&format!("${p}::")),
                "${p} missing"
            );
        }
        assert!(!sql.contains(&format!("${}", 3 * COLUMNS + 1)));
    }

    #[test]
    fn a_password_file_loses_its_line_end_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(password(Some(&file)).unwrap().as_deref(), Some("s3cret"));
        let missing = dir.path().join("nope");
        let error = password(Some(&missing)).unwrap_err().to_string();
        assert!(error.contains("nope"), "{error}");
    }
}
