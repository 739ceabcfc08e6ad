//! Liveness and readiness: what `/healthz` and `/readyz` report.
//!
//! Ready means all of: the DNS listeners are bound, a blocklist is loaded
//! (a protective resolver without its list must not take traffic), the
//! upstream answered within `admin.ready_upstream_secs` (60), and no
//! shutdown is under way. Queries keep the upstream time fresh; when there
//! are none, a probe (`. NS`) every `admin.upstream_probe_secs` (15) does.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use serde::Serialize;

use std::sync::Arc;

use crate::blocklist::BlocklistHandle;
use crate::hitlog::now_ms;
use crate::lifecycle::Lifecycle;
use crate::tls::CertStore;

/// Shared health state; every field is an atomic, so the query path only
/// does a relaxed load (and a store at most once a second).
pub struct Health {
    pub dns_bound: AtomicBool,
    pub lifecycle: Arc<Lifecycle>,
    pub blocklist: BlocklistHandle,
    /// ms since the epoch of the last upstream answer (0: none yet).
    upstream_ok: AtomicI64,
    upstream_error: AtomicI64,
    /// How recent an upstream answer must be to be ready.
    pub upstream_fresh: Duration,
    /// The encrypted listeners' certificate, watched for expiry.
    pub certs: Option<Arc<CertStore>>,
    /// What the reloader last did: feeds in trouble are reported.
    pub reload: Option<crate::watch::StatusHandle>,
    /// `blocklist.allow_empty`: an empty list is not a problem.
    pub allow_empty: bool,
    /// The forwarder to the fleet's hit store, if there is one: while it
    /// fails, a warning (DNS is unaffected and nothing is lost).
    pub forward: Option<Arc<crate::hitlog::forward::Status>>,
    /// The remote feed sources: an RPZ zone past its SOA expire is a
    /// warning (its data keeps serving).
    pub sources: Option<Arc<crate::sources::Registry>>,
    /// False on a reporting-only instance (`server.listen = []`): it
    /// answers no DNS, so its upstream is not its readiness.
    pub answers_dns: bool,
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub dns_listeners: bool,
    pub blocklist_generation: u64,
    pub blocklist_entries: usize,
    /// Seconds since the upstream last answered; `None`: never.
    pub upstream_last_ok_secs: Option<f64>,
    /// What is wrong, one line each; empty when ready.
    pub problems: Vec<String>,
    /// What needs attention soon but does not stop this node serving
    /// (a certificate with under a week left), one line each.
    pub warnings: Vec<String>,
}

/// A certificate with less than this left is reported.
const CERT_WARNING_SECS: i64 = 7 * 86_400;

impl Health {
    pub fn new(blocklist: BlocklistHandle, upstream_fresh: Duration) -> Health {
        Health {
            dns_bound: AtomicBool::new(false),
            lifecycle: Arc::default(),
            blocklist,
            upstream_ok: AtomicI64::new(0),
            upstream_error: AtomicI64::new(0),
            upstream_fresh,
            certs: None,
            reload: None,
            allow_empty: false,
            forward: None,
            sources: None,
            answers_dns: true,
        }
    }

    pub fn upstream_answered(&self) {
        touch(&self.upstream_ok);
    }

    pub fn upstream_failed(&self) {
        touch(&self.upstream_error);
    }

    /// Whether the upstream answered recently enough that no probe is due.
    pub fn upstream_fresh(&self, within: Duration) -> bool {
        let ok = self.upstream_ok.load(Ordering::Relaxed);
        ok > 0 && now_ms() - ok <= within.as_millis() as i64
    }

    pub fn readiness(&self) -> Readiness {
        let mut problems = Vec::new();
        let bound = self.dns_bound.load(Ordering::Relaxed);
        if !bound {
            problems.push("DNS listeners are not bound yet".to_owned());
        }
        if self.lifecycle.is_draining() {
            problems.push("shutting down: draining in-flight queries".to_owned());
        }
        let list = self.blocklist.load();
        let (generation, entries) = (list.generation(), list.entries());
        if generation == 0 {
            problems.push("no blocklist is loaded".to_owned());
        } else if entries == 0 && !self.allow_empty {
            problems.push(
                "the blocklist is empty: no feed gave any entry (blocklist.allow_empty)".to_owned(),
            );
        }
        let ok = self.upstream_ok.load(Ordering::Relaxed);
        let now = now_ms();
        let last_ok = (ok > 0).then(|| (now - ok) as f64 / 1000.0);
        if self.answers_dns && !self.upstream_fresh(self.upstream_fresh) {
            let error = self.upstream_error.load(Ordering::Relaxed);
            problems.push(match (last_ok, error > 0) {
                (None, true) => "the upstream has not answered; queries to it fail".to_owned(),
                (None, false) => "the upstream has not answered yet".to_owned(),
                (Some(s), _) => format!("the upstream last answered {s:.0} s ago"),
            });
        }
        let mut warnings = Vec::new();
        if let Some(status) = &self.reload {
            let status = status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (name, feed) in &status.feeds {
                let Some(error) = &feed.error else { continue };
                // Served from its last good copy, the feed still protects:
                // a warning. With nothing to serve, its protection is gone.
                if feed.kept_previous {
                    warnings.push(format!(
                        "feed {name}: {error}; serving its last good contents"
                    ));
                } else {
                    problems.push(format!("feed {name} is not loaded: {error}"));
                }
            }
        }
        if let Some(certs) = &self.certs {
            let left = certs.seconds_left();
            if left <= 0 {
                // Encrypted clients cannot connect; clear DNS still works,
                // but the node is not what it is configured to be.
                problems.push("the TLS certificate has expired".to_owned());
            } else if left < CERT_WARNING_SECS {
                warnings.push(format!(
                    "the TLS certificate expires in {:.1} days",
                    left as f64 / 86_400.0
                ));
            }
        }
        if let Some(warning) = self.forward.as_ref().and_then(|f| f.warning()) {
            warnings.push(warning);
        }
        if let Some(sources) = &self.sources {
            warnings.extend(sources.warnings());
        }
        Readiness {
            ready: problems.is_empty(),
            warnings,
            dns_listeners: bound,
            blocklist_generation: generation,
            blocklist_entries: entries,
            upstream_last_ok_secs: last_ok,
            problems,
        }
    }
}

/// Store now, unless the stored time is under a second old: under load
/// this keeps the shared cache line read-mostly.
fn touch(at: &AtomicI64) {
    let now = now_ms();
    if now - at.load(Ordering::Relaxed) >= 1000 {
        at.store(now, Ordering::Relaxed);
    }
}

/// Keep the readiness check's view of the upstream fresh when no query
/// does: resolve `. NS` whenever the last answer is getting old.
pub fn spawn_upstream_probe(
    upstream: Arc<crate::resolve::Upstream>,
    health: Arc<Health>,
    every: Duration,
) {
    tokio::spawn(async move {
        let root = hickory_proto::rr::LowerName::from(hickory_proto::rr::Name::root());
        loop {
            if !health.upstream_fresh(every) {
                match upstream
                    .resolve(&root, hickory_proto::rr::RecordType::NS, false)
                    .await
                {
                    Ok(_) => health.upstream_answered(),
                    Err(error) => {
                        health.upstream_failed();
                        tracing::debug!(%error, "upstream probe failed");
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    });
}
