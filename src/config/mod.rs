//! The TOML configuration: types, defaults and validation.
//!
//! Two stages (after ripgrep's low/high args): serde reads the file into
//! [`RawConfig`] (`raw.rs`) with `deny_unknown_fields` everywhere, so a
//! misspelt key is an error that names the key, its line and the file;
//! then [`Config::from_raw`] checks what serde cannot (address lists,
//! duplicate ids, hex tokens) one section at a time (`validate`) and
//! resolves relative paths against the config file's folder, giving the
//! validated types of `sections.rs`. Nothing here binds a socket or reads
//! a feed; the only look at the disk is whether each `[[feed]]`'s file is
//! in feeds_dir.
//!
//! What is suspicious but usable is a warning in [`Config::warnings`],
//! not an error: a `[[feed]]` whose file is not (yet) in an existing
//! feeds_dir (feeds arrive and leave by file drop while the resolver runs,
//! and a TAXII source's file only after its first pull, so a missing file
//! must not stop a restart), and `resolver.upstreams` in recursive mode.
//!
//! Every key in docs/architecture.md's Configuration section is accepted
//! from the start, even where the feature behind it arrives later, so
//! deployment scripts written against one version keep working.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::policy::Action;

mod raw;
mod sections;
mod validate;

#[cfg(test)]
mod tests;

pub use raw::{
    DeletedFeeds, DnssecMode, LogFormat, OverLimit, RawAdmin, RawBlockPage, RawBlocklist,
    RawConfig, RawDnstap, RawDownload, RawFeed, RawHitlog, RawLimits, RawLog, RawOrganisation,
    RawResolver, RawRpz, RawServer, RawShare, RawTaxii, ResolverMode,
};
pub use sections::{
    AdminConfig, BlockPageConfig, BlocklistConfig, DnstapConfig, DnstapTarget, DownloadConfig,
    EncryptedConfig, FeedConfig, HitlogConfig, LimitsConfig, LogConfig, Organisation,
    PostgresConfig, ResolverConfig, RpzConfig, ServerConfig, ShareConfig, StructuredErrors,
    TaxiiConfig, Tlp, TsigConfig, WhereSighted,
};

/// The rule a fetched URL keeps to (HTTPS, or HTTP to loopback), for the
/// redirects of a download too.
pub(crate) use validate::check_fetch_url;

/// A config file that cannot be used; the message names the file and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is in the message and deliberately not a `source`: a
    // printed error chain would show it twice.
    #[error("cannot read config file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("config file {path}: {cause}")]
    Parse {
        path: PathBuf,
        cause: Box<toml::de::Error>,
    },
    #[error("config file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Validated configuration with absolute paths.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub path: PathBuf,
    pub server: ServerConfig,
    pub resolver: ResolverConfig,
    pub blocklist: BlocklistConfig,
    pub actions: BTreeMap<String, Action>,
    pub feeds: Vec<FeedConfig>,
    pub organisations: Vec<Organisation>,
    pub admin: AdminConfig,
    pub block_page: BlockPageConfig,
    pub hitlog: HitlogConfig,
    pub log: LogConfig,
    pub taxii: Vec<TaxiiConfig>,
    /// HTTP(S) feed sources; their feed settings are in `feeds`.
    pub downloads: Vec<DownloadConfig>,
    /// Response Policy Zones by zone transfer; their feed settings are in
    /// `feeds`.
    pub rpz: Vec<RpzConfig>,
    pub limits: LimitsConfig,
    pub dnstap: Option<DnstapConfig>,
    pub share: ShareConfig,
    /// Keys that are valid but ignored or not yet effective, each as
    /// ``key `KEY`: MESSAGE`` (the file is [`Config::path`]). Validation
    /// runs before logging is set up, so it only collects them: whoever
    /// loads the config logs them once tracing is initialised.
    pub warnings: Vec<String>,
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::from_str(&text, path)
    }

    /// Parse config text; `path` locates relative paths and names the file in errors.
    pub fn from_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            cause: Box::new(e),
        })?;
        Self::from_raw(raw, path)
    }

    /// Validate section by section; the first error wins.
    pub fn from_raw(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
        let mut cx = validate::Checker::new(path);
        let server = validate::server(raw.server, &mut cx)?;
        let resolver = validate::resolver(raw.resolver, &mut cx)?;
        let blocklist = validate::blocklist(raw.blocklist, &cx)?;
        let (downloads, download_feeds) =
            validate::downloads(raw.downloads, &raw.feeds, &blocklist, &cx)?;
        let mut raw_feeds = raw.feeds;
        raw_feeds.extend(download_feeds);
        let (rpz, rpz_feeds) = validate::rpz(raw.rpz, &raw_feeds, &cx)?;
        raw_feeds.extend(rpz_feeds);
        validate::sinkhole(&blocklist, &raw.actions, &raw_feeds, &cx)?;
        let feeds = validate::feeds(raw_feeds, &cx)?;
        let organisations = validate::organisations(raw.organisations, &blocklist, &cx)?;
        let admin = validate::admin(raw.admin, &mut cx)?;
        validate::reporting_only(&server, &admin, &cx)?;
        let hitlog = validate::hitlog(
            raw.hitlog,
            &blocklist.state_dir,
            server.is_reporting_only(),
            &mut cx,
        )?;
        let log = validate::log(raw.log, &cx)?;
        let taxii = validate::taxii(raw.taxii, &cx)?;
        let limits = validate::limits(raw.limits, &cx)?;
        let dnstap = match raw.dnstap {
            Some(d) => Some(validate::dnstap(d, &server.node_id, &cx)?),
            None => None,
        };
        let share = validate::share(raw.share, &cx)?;
        validate::feed_files_present(
            &feeds,
            &blocklist.feeds_dir,
            &taxii,
            &downloads,
            &rpz,
            &mut cx,
        );
        Ok(Config {
            path: path.to_path_buf(),
            server,
            resolver,
            blocklist,
            actions: raw.actions,
            feeds,
            organisations,
            admin,
            block_page: validate::block_page(raw.block_page),
            hitlog,
            log,
            taxii,
            downloads,
            rpz,
            limits,
            dnstap,
            share,
            warnings: cx.into_warnings(),
        })
    }

    /// Per-file settings for a feed file name, if configured.
    pub fn feed_settings(&self, file_name: &str) -> Option<&FeedConfig> {
        self.feeds.iter().find(|f| f.file == file_name)
    }
}
