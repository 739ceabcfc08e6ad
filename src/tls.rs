//! The certificate the encrypted listeners (DoT, DoH, DoQ) present: read
//! from PEM files, swapped in when the files change, and watched for
//! expiry.
//!
//! A renewal by certbot or any ACME client is a file drop, like a feed:
//! the files are checked every [`POLL`] (their size and modification
//! time, following symlinks, so certbot's `live/` links work) and a
//! changed pair is loaded and checked (the key must match the leaf
//! certificate) before it replaces the one in use. A handshake takes the
//! current certificate from an `ArcSwap`, so open connections keep the
//! one they started with and new ones get the new one. A pair that does
//! not load keeps the old certificate and logs why.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::telemetry;

/// How often the files are checked for a change.
pub const POLL: Duration = Duration::from_secs(2);

/// A certificate pair that cannot be used, with the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

fn invalid(path: &Path, what: impl Into<String>) -> CertError {
    CertError::Invalid {
        path: path.to_owned(),
        what: what.into(),
    }
}

/// A loaded pair and when its leaf certificate expires.
struct Loaded {
    key: Arc<CertifiedKey>,
    /// Unix seconds.
    not_after: i64,
}

/// Load and check the pair: a chain of one or more certificates (leaf
/// first) and the leaf's private key (PKCS#8, PKCS#1 or SEC1).
fn load(cert_path: &Path, key_path: &Path) -> Result<Loaded, CertError> {
    let read = |path: &Path| {
        fs::read(path).map_err(|source| CertError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(cert_path, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(cert_path, "holds no certificate"));
    };
    let not_after = not_after(leaf).map_err(|e| invalid(cert_path, e))?;
    let key_pem = read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid(key_path, format!("not a PEM private key: {e}")))?;
    let signer = any_supported_type(&key)
        .map_err(|e| invalid(key_path, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        invalid(
            key_path,
            format!(
                "does not belong to the certificate in {}: {e}",
                cert_path.display()
            ),
        )
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        not_after,
    })
}

/// The leaf's notAfter, in Unix seconds.
fn not_after(leaf: &CertificateDer<'_>) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the first certificate does not parse: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// What identifies a version of a file on disk.
type Stamp = Option<(u64, SystemTime)>;

fn stamp(path: &Path) -> Stamp {
    let meta = fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// The certificate in use, and where it comes from.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    not_after: AtomicI64,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Load the pair; at start a pair that does not load is an error (there
    /// is no old certificate to keep).
    pub fn open(cert_path: &Path, key_path: &Path) -> Result<CertStore, CertError> {
        let loaded = load(cert_path, key_path)?;
        let store = CertStore {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: ArcSwap::new(loaded.key),
            not_after: AtomicI64::new(loaded.not_after),
        };
        store.publish_expiry();
        Ok(store)
    }

    /// Load the files again; on success the new pair serves new
    /// handshakes, on failure the old one stays.
    pub fn reload(&self) -> Result<(), CertError> {
        let loaded = load(&self.cert_path, &self.key_path)?;
        self.current.store(loaded.key);
        self.not_after.store(loaded.not_after, Ordering::Relaxed);
        self.publish_expiry();
        Ok(())
    }

    /// Unix seconds at which the certificate in use expires.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    /// Seconds until the certificate in use expires (negative: expired).
    pub fn seconds_left(&self) -> i64 {
        self.not_after() - crate::clock::unix_now()
    }

    fn publish_expiry(&self) {
        ::metrics::gauge!(telemetry::TLS_CERT_EXPIRY).set(self.seconds_left() as f64);
    }

    /// Check the files every [`POLL`] and reload on a change, until the
    /// runtime stops. A failed reload is retried at the next change only,
    /// so a broken file is logged once, not every poll.
    pub fn spawn_watch(self: &Arc<CertStore>) -> tokio::task::JoinHandle<()> {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            let mut seen = (stamp(&store.cert_path), stamp(&store.key_path));
            let mut ticks = tokio::time::interval(POLL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                store.publish_expiry();
                let now = (stamp(&store.cert_path), stamp(&store.key_path));
                if now == seen {
                    continue;
                }
                seen = now;
                match store.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %store.cert_path.display(), expires_in_days = store.seconds_left() / 86_400, "TLS certificate reloaded");
                        ::metrics::counter!(telemetry::TLS_CERT_RELOADS, "result" => "ok")
                            .increment(1);
                    }
                    Err(error) => {
                        tracing::error!(%error, "keeping the TLS certificate in use; the new files do not load");
                        ::metrics::counter!(telemetry::TLS_CERT_RELOADS, "result" => "error")
                            .increment(1);
                    }
                }
            }
        })
    }

    /// A rustls server config for one protocol (its ALPN ids), presenting
    /// this store's current certificate. TLS 1.2 and 1.3 only (rustls has
    /// nothing older).
    pub fn server_config(self: &Arc<CertStore>, alpn: &[&[u8]]) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(self))));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

impl CertStore {
    /// The config for QUIC, which is TLS 1.3 only.
    pub fn quic_server_config(self: &Arc<CertStore>, alpn: &[&[u8]]) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("ring supports TLS 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(self))));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

/// Hands rustls the certificate in use at each handshake.
#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A self-signed pair made by openssl, in `dir` as `name.crt`/`.key`.
    fn openssl_pair(dir: &Path, name: &str, days: u32) -> Option<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-days",
                &days.to_string(),
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some((cert, key))
    }

    #[test]
    fn a_pair_loads_with_its_expiry_and_a_mismatched_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = openssl_pair(dir.path(), "a", 30).expect("openssl");
        let (_, key_b) = openssl_pair(dir.path(), "b", 30).expect("openssl");
        let store = CertStore::open(&cert_a, &key_a).unwrap();
        let days = store.seconds_left() / 86_400;
        assert!((29..=30).contains(&days), "{days}");

        let err = CertStore::open(&cert_a, &key_b).unwrap_err().to_string();
        assert!(
            err.contains("b.key") && err.contains("does not belong"),
            "{err}"
        );
    }

    #[test]
    fn a_broken_file_keeps_the_certificate_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = openssl_pair(dir.path(), "a", 30).expect("openssl");
        let store = CertStore::open(&cert, &key).unwrap();
        let before = store.current.load_full();
        let good = fs::read(&cert).unwrap();
        fs::write(&cert, "not a certificate\n").unwrap();
        let err = store.reload().unwrap_err().to_string();
        assert!(err.contains("a.crt"), "{err}");
        assert!(Arc::ptr_eq(&before, &store.current.load_full()));

        fs::write(&cert, good).unwrap();
        fs::remove_file(&key).unwrap();
        let err = store.reload().unwrap_err().to_string();
        assert!(
            err.contains("cannot read") && err.contains("a.key"),
            "{err}"
        );
    }

    #[test]
    fn a_new_pair_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = openssl_pair(dir.path(), "a", 30).expect("openssl");
        let store = CertStore::open(&cert, &key).unwrap();
        let (cert2, key2) = openssl_pair(dir.path(), "b", 90).expect("openssl");
        fs::rename(cert2, &cert).unwrap();
        fs::rename(key2, &key).unwrap();
        store.reload().unwrap();
        assert!(store.seconds_left() / 86_400 >= 89);
    }
}
