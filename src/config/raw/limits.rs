//! `[limits]` as serde reads it, with the defaults and why.

use serde::Deserialize;

/// What a query over its client's rate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OverLimit {
    /// REFUSED: the client moves on to its next resolver.
    #[default]
    Refused,
    /// An empty answer with TC set: a real client retries over TCP.
    Truncate,
    /// Nothing.
    Drop,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Queries per second from one client block; 0 = no limit.
    #[serde(default)]
    pub client_qps: u32,
    #[serde(default = "default_client_prefix_v4")]
    pub client_prefix_v4: u8,
    #[serde(default = "default_client_prefix_v6")]
    pub client_prefix_v6: u8,
    #[serde(default)]
    pub over_limit: OverLimit,
    /// Bucket depth, in seconds of the rate.
    #[serde(default = "default_burst_factor")]
    pub burst_factor: u32,
    /// UDP responses per second per block and kind; 0 = off.
    #[serde(default)]
    pub rrl_responses_per_second: u32,
    #[serde(default = "default_rrl_slip")]
    pub rrl_slip: u32,
    #[serde(default = "default_rrl_prefix_v4")]
    pub rrl_prefix_v4: u8,
    #[serde(default = "default_client_prefix_v6")]
    pub rrl_prefix_v6: u8,
    #[serde(default = "default_max_upstream")]
    pub max_upstream_queries: u32,
    #[serde(default = "default_max_upstream_client")]
    pub max_upstream_per_client: u32,
    #[serde(default = "default_max_upstream_zone")]
    pub max_upstream_per_zone: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            client_qps: 0,
            client_prefix_v4: default_client_prefix_v4(),
            client_prefix_v6: default_client_prefix_v6(),
            over_limit: OverLimit::default(),
            burst_factor: default_burst_factor(),
            rrl_responses_per_second: 0,
            rrl_slip: default_rrl_slip(),
            rrl_prefix_v4: default_rrl_prefix_v4(),
            rrl_prefix_v6: default_client_prefix_v6(),
            max_upstream_queries: default_max_upstream(),
            max_upstream_per_client: default_max_upstream_client(),
            max_upstream_per_zone: default_max_upstream_zone(),
        }
    }
}

fn default_client_prefix_v4() -> u8 {
    32
}

fn default_client_prefix_v6() -> u8 {
    // A home or small site gets a /56 (RIPE-690).
    56
}

fn default_burst_factor() -> u32 {
    2
}

fn default_rrl_slip() -> u32 {
    // BIND's default.
    2
}

fn default_rrl_prefix_v4() -> u8 {
    // BIND's ipv4-prefix-length.
    24
}

fn default_max_upstream() -> u32 {
    // Unbound's num-queries-per-thread (1024 on 64-bit) for a few threads.
    4096
}

fn default_max_upstream_client() -> u32 {
    // Far above one host's honest need, well under the total: one client
    // cannot take the upstream for everyone.
    256
}

fn default_max_upstream_zone() -> u32 {
    512
}
