//! Config reload without a restart: on SIGHUP, or when the config file
//! changes (written in place or renamed over, as editors and deployment
//! tools do), the file is read and validated again.
//!
//! A config that does not validate is refused with the message `config
//! check` gives, logged, and counted (`portcullis_config_reloads_total
//! {result="error"}`); everything keeps running as it was. A valid one
//! takes effect at once, each part swapped whole, as the blocklist is:
//!
//! * the client policy (organisations and their networks, roaming keys,
//!   allow lists and actions, block response settings, unknown clients,
//!   `log_allowed`, rate limits) for the next query;
//! * the API's tokens, for the next request;
//! * feed settings, actions, allow and protected lists: the blocklist is
//!   rebuilt with them (after SIGHUP as always; after a file change too);
//! * TAXII collections, downloads and RPZ zones: the pullers are
//!   restarted when they changed;
//! * the hit log's retention, size cap, JSON stream and coalescing: the
//!   writer takes them between batches.
//!
//! Listeners, the resolver, the hit log's database, channel and fleet
//! store, dnstap, logging, the node id, feeds_dir and state_dir need a
//! restart: a reload that changes one keeps the running value and logs
//! that it needs one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::admin::Access;
use crate::config::{Config, HitlogConfig};
use crate::server::PolicyHandle;
use crate::telemetry;
use crate::watch::Trigger;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Signal,
    FileChanged,
}

/// Everything a config reload swaps.
pub struct Reconfigurer {
    /// The config the process runs with now.
    pub config: Arc<ArcSwap<Config>>,
    pub policy: PolicyHandle,
    /// The admin API's tokens, when it runs.
    pub access: Option<Arc<ArcSwap<Access>>>,
    /// The blocklist reloader.
    pub blocklist: mpsc::Sender<Trigger>,
    /// The hit-log writer, when it runs.
    pub hitlog: Option<std::sync::mpsc::Sender<crate::hitlog::writer::Settings>>,
    /// The TAXII and download pullers, and what they last did.
    pub pullers: crate::sources::Pullers,
    pub sources: Arc<crate::sources::Registry>,
    pub notify: Arc<crate::sources::rpz::NotifyTargets>,
    /// Where an RPZ zone's increments go live.
    pub increments: Arc<crate::blocklist::increments::Increments>,
}

impl Reconfigurer {
    /// Reload on each cause that arrives, until the senders are gone.
    pub async fn run(mut self, mut causes: mpsc::Receiver<Cause>) {
        while let Some(mut cause) = causes.recv().await {
            // A file written in several steps sends several events.
            while let Ok(Some(more)) =
                tokio::time::timeout(Duration::from_millis(200), causes.recv()).await
            {
                if more == Cause::Signal {
                    cause = Cause::Signal;
                }
            }
            let changed = self.reload(cause);
            // SIGHUP reloads the blocklist whatever happened to the config
            // (as before config reload existed); a file change only when
            // the config was taken.
            let trigger = match (cause, changed) {
                (Cause::Signal, _) => Some(Trigger::Signal),
                (Cause::FileChanged, true) => Some(Trigger::Config),
                (Cause::FileChanged, false) => None,
            };
            if let Some(trigger) = trigger {
                let _ = self.blocklist.send(trigger).await;
            }
        }
    }

    /// Read, validate and apply the config file. Returns whether it was
    /// taken.
    pub fn reload(&mut self, cause: Cause) -> bool {
        let running = self.config.load_full();
        let next = match Config::load(&running.path) {
            Ok(next) => next,
            Err(error) => return self.refuse(cause, &error.to_string()),
        };
        let policy = match self.policy.load().reloaded(&next) {
            Ok(policy) => policy,
            Err(error) => return self.refuse(cause, &error.to_string()),
        };
        for warning in &next.warnings {
            tracing::warn!(file = %next.path.display(), "{warning}");
        }
        let restart = needs_restart(&running, &next);
        for section in &restart {
            tracing::warn!(
                section,
                "config reload: {section} changed and needs a restart; the running value stays"
            );
        }
        let next = Arc::new(keep_running(&running, next));
        self.policy.store(Arc::new(policy));
        if let Some(access) = &self.access {
            access.store(Arc::new(Access::from_config(&next)));
        }
        if crate::sources::Pullers::changed(&running, &next) {
            self.pullers.stop();
            self.pullers = crate::sources::Pullers::spawn(
                &next,
                &self.sources,
                &self.notify,
                &self.increments,
            );
            tracing::info!(
                taxii = next.taxii.len(),
                downloads = next.downloads.len(),
                rpz = next.rpz.len(),
                "feed source pullers restarted"
            );
        }
        if let Some(hitlog) = &self.hitlog
            && differs(&running.hitlog, &next.hitlog)
        {
            let _ = hitlog.send(crate::hitlog::writer::Settings::from_config(&next));
        }
        self.config.store(Arc::clone(&next));
        ::metrics::counter!(telemetry::CONFIG_RELOADS, "result" => "ok").increment(1);
        tracing::info!(
            ?cause,
            organisations = next.organisations.len(),
            needs_restart = restart.len(),
            "config reloaded"
        );
        true
    }

    fn refuse(&self, cause: Cause, error: &str) -> bool {
        ::metrics::counter!(telemetry::CONFIG_RELOADS, "result" => "error").increment(1);
        tracing::error!(
            ?cause,
            error,
            "config reload refused; the running config stays"
        );
        false
    }
}

/// The sections (or keys) that differ between `running` and `next` and
/// take effect only at a restart.
fn needs_restart(running: &Config, next: &Config) -> Vec<&'static str> {
    let mut server = next.server.clone();
    server.allow_unknown_clients = running.server.allow_unknown_clients;
    let mut admin = next.admin.clone();
    admin.operator_token_sha256 = running.admin.operator_token_sha256.clone();
    let mut hitlog = running.hitlog.clone();
    hitlog_restart_keys(&mut hitlog, &next.hitlog);
    let mut sections = Vec::new();
    for (name, changed) in [
        ("[server]", differs(&running.server, &server)),
        ("[resolver]", differs(&running.resolver, &next.resolver)),
        ("[admin]", differs(&running.admin, &admin)),
        (
            "[block_page]",
            differs(&running.block_page, &next.block_page),
        ),
        ("[hitlog]", differs(&running.hitlog, &hitlog)),
        ("[log]", differs(&running.log, &next.log)),
        ("[dnstap]", differs(&running.dnstap, &next.dnstap)),
        (
            "blocklist.feeds_dir",
            running.blocklist.feeds_dir != next.blocklist.feeds_dir,
        ),
        (
            "blocklist.state_dir",
            running.blocklist.state_dir != next.blocklist.state_dir,
        ),
    ] {
        if changed {
            sections.push(name);
        }
    }
    sections
}

/// Config sections compared whole (none of them is on the query path).
fn differs(a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// Copy the hit-log keys that need a restart (the store, the channel and
/// its writer's priority, the fleet store) from `from`; the writer takes the others at once.
fn hitlog_restart_keys(hitlog: &mut HitlogConfig, from: &HitlogConfig) {
    hitlog.database = from.database.clone();
    hitlog.enabled = from.enabled;
    hitlog.channel_capacity = from.channel_capacity;
    hitlog.yield_to_queries = from.yield_to_queries;
    hitlog.postgres = from.postgres.clone();
}

/// `next` with what needs a restart as it runs now.
fn keep_running(running: &Config, mut next: Config) -> Config {
    let allow_unknown_clients = next.server.allow_unknown_clients;
    next.server = running.server.clone();
    next.server.allow_unknown_clients = allow_unknown_clients;
    next.resolver = running.resolver.clone();
    let operator = next.admin.operator_token_sha256.take();
    next.admin = running.admin.clone();
    next.admin.operator_token_sha256 = operator;
    next.block_page = running.block_page.clone();
    hitlog_restart_keys(&mut next.hitlog, &running.hitlog);
    next.log = running.log.clone();
    next.dnstap = running.dnstap.clone();
    next.blocklist.feeds_dir = running.blocklist.feeds_dir.clone();
    next.blocklist.state_dir = running.blocklist.state_dir.clone();
    next
}

/// SIGHUP, and changes to the config file, as causes on `tx`. The watch
/// is on the file's folder (an editor or a deployment tool replaces the
/// file by renaming a new one over it); returns the watcher, which stops
/// when dropped.
pub fn spawn_triggers(
    path: &Path,
    tx: mpsc::Sender<Cause>,
) -> std::io::Result<Option<notify::RecommendedWatcher>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let signals = tx.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config and the blocklist");
            let _ = signals.send(Cause::Signal).await;
        }
    });
    Ok(watch_file(path, tx))
}

fn watch_file(path: &Path, tx: mpsc::Sender<Cause>) -> Option<notify::RecommendedWatcher> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return None;
    };
    let name: PathBuf = name.into();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let relevant = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) && event
            .paths
            .iter()
            .any(|p| p.file_name() == Some(name.as_os_str()));
        if relevant {
            let _ = tx.try_send(Cause::FileChanged);
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(error) => {
            tracing::warn!(%error, "cannot watch the config file; reload it with SIGHUP");
            return None;
        }
    };
    if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        tracing::warn!(%error, dir = %dir.display(), "cannot watch the config file's folder; reload it with SIGHUP");
        return None;
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::from_str(text, Path::new("/etc/portcullis/portcullis.toml")).unwrap()
    }

    #[test]
    fn what_needs_a_restart_is_named_and_kept_and_the_rest_is_taken() {
        let running = parse("[server]\nlisten = [\"127.0.0.1:5353\"]\n");
        let next = parse(
            "[server]\nlisten = [\"127.0.0.1:5354\"]\nallow_unknown_clients = true\n\
             [resolver]\nmode = \"forward\"\nupstreams = [\"192.0.2.1\"]\n\
             [hitlog]\nretention_days = 7\n\
             [[organisation]]\nid = \"a\"\nname = \"A\"\nnetworks = [\"10.0.0.0/8\"]\n",
        );
        assert_eq!(needs_restart(&running, &next), ["[server]", "[resolver]"]);
        let kept = keep_running(&running, next);
        assert_eq!(kept.server.listen, running.server.listen);
        assert!(kept.server.allow_unknown_clients, "taken at once");
        assert_eq!(kept.resolver.mode, running.resolver.mode);
        assert_eq!(kept.organisations.len(), 1);
        assert_eq!(kept.hitlog.retention_days, 7, "taken by the writer");
        assert!(needs_restart(&running, &kept).is_empty());
        let moved = parse("[hitlog]\ndatabase = \"/elsewhere/hits.sqlite\"\n");
        assert_eq!(needs_restart(&running, &moved), ["[hitlog]"]);
        assert_eq!(
            keep_running(&running, moved).hitlog.database,
            running.hitlog.database
        );
    }
}
