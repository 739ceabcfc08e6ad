//! The fleet's hit store in PostgreSQL: connecting (here), the schema and
//! its migrations (`schema`), writing a batch of spooled records
//! exactly once (`insert`), and reading records and reports back for
//! the whole fleet (`read`).
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
use postgres::{Client, NoTls};

use crate::config::PostgresConfig;

mod insert;
mod read;
mod schema;

pub use insert::{ROWS_PER_INSERT, insert};
pub use read::FleetReader;
pub use schema::migrate;

/// The environment variable a password is read from when no password
/// file is configured.
pub const PASSWORD_ENV: &str = "PORTCULLIS_POSTGRES_PASSWORD";

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

#[cfg(test)]
mod tests {
    use super::*;

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
