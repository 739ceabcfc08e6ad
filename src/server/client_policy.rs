//! What the config says about clients and their answers, as one value
//! that a config reload swaps whole: the organisations (networks, roaming
//! keys, allow lists, action overrides), the block responses' settings,
//! whether unknown clients are answered, whether allowed queries are
//! recorded, and the rate limits.
//!
//! The query path reads it through an `ArcSwap`, as it reads the
//! blocklist: a reload never waits for a query, nor a query for a reload.
//! Organisation ids stay valid across reloads ([`OrgMap::reloaded`]), so
//! a query that looked its organisation up just before a swap is judged
//! as that organisation just after it.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::limits::Limits;
use super::response::BlockSettings;
use crate::config::Config;
use crate::orgs::{OrgMap, OrgMapError};

pub struct ClientPolicy {
    pub orgs: Arc<OrgMap>,
    pub block: BlockSettings,
    pub allow_unknown_clients: bool,
    /// Record queries an allow entry let through.
    pub log_allowed: bool,
    /// Query rates, response rates and upstream queries waiting. Kept
    /// across a reload that changes neither `[limits]` nor an
    /// organisation's rate, so the buckets' state carries on.
    pub limits: Arc<Limits>,
    /// What `limits` was built from, to tell whether a reload changes it.
    limits_key: String,
}

impl std::fmt::Debug for ClientPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPolicy")
            .field("organisations", &self.orgs.policies().len())
            .field("allow_unknown_clients", &self.allow_unknown_clients)
            .finish_non_exhaustive()
    }
}

/// The serving policy, shared by the handler and the listeners.
pub type PolicyHandle = Arc<ArcSwap<ClientPolicy>>;

impl ClientPolicy {
    /// The policy at start, with `orgs` built from `config`.
    pub fn new(config: &Config, orgs: Arc<OrgMap>) -> ClientPolicy {
        let limits_key = limits_key(config, &config.organisations);
        ClientPolicy {
            orgs,
            block: block_settings(config),
            allow_unknown_clients: config.server.allow_unknown_clients,
            log_allowed: config.hitlog.log_allowed,
            limits: Arc::new(Limits::new(&config.limits, &config.organisations)),
            limits_key,
        }
    }

    /// The policy for a reloaded `config`, keeping every organisation id
    /// that `self` handed out.
    pub fn reloaded(&self, config: &Config) -> Result<ClientPolicy, OrgMapError> {
        let (orgs, ordered) = self.orgs.reloaded(&config.organisations)?;
        let key = limits_key(config, &ordered);
        let limits = if key == self.limits_key {
            Arc::clone(&self.limits)
        } else {
            Arc::new(Limits::new(&config.limits, &ordered))
        };
        Ok(ClientPolicy {
            orgs: Arc::new(orgs),
            block: block_settings(config),
            allow_unknown_clients: config.server.allow_unknown_clients,
            log_allowed: config.hitlog.log_allowed,
            limits,
            limits_key: key,
        })
    }

    /// A default config's policy over `orgs`, for tests.
    #[cfg(test)]
    pub fn for_orgs(orgs: OrgMap) -> PolicyHandle {
        let config = Config::from_str("", std::path::Path::new("/test.toml"))
            .expect("the empty config is valid");
        ClientPolicy::new(&config, Arc::new(orgs)).handle()
    }

    pub fn handle(self) -> PolicyHandle {
        Arc::new(ArcSwap::from_pointee(self))
    }
}

fn block_settings(config: &Config) -> BlockSettings {
    BlockSettings {
        policy_ttl: config.blocklist.policy_ttl,
        sinkhole_ipv4: config.blocklist.sinkhole_ipv4,
        sinkhole_ipv6: config.blocklist.sinkhole_ipv6,
        ede_names_feed: config.blocklist.ede_names_feed,
        structured: config
            .blocklist
            .structured_errors
            .as_ref()
            .map(super::response::StructuredText::new),
    }
}

/// `[limits]` and each organisation's rate, in id order.
fn limits_key(config: &Config, ordered: &[crate::config::Organisation]) -> String {
    let rates: Vec<(&str, Option<u32>)> = ordered
        .iter()
        .map(|o| (o.id.as_str(), o.client_qps))
        .collect();
    format!("{:?} {rates:?}", config.limits)
}
