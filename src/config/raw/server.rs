//! `[server]` as serde reads it, with the defaults and why.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::default_true;

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Closed by default: an open resolver is an amplification weapon.
    #[serde(default)]
    pub allow_unknown_clients: bool,
    #[serde(default = "default_tcp_timeout")]
    pub tcp_timeout_secs: u64,
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    /// 0 = one per CPU.
    #[serde(default)]
    pub workers: usize,
    /// DNS over TLS; off (empty) by default.
    #[serde(default)]
    pub tls_listen: Vec<SocketAddr>,
    /// DNS over HTTPS; off (empty) by default.
    #[serde(default)]
    pub https_listen: Vec<SocketAddr>,
    /// DNS over QUIC; off (empty) by default.
    #[serde(default)]
    pub quic_listen: Vec<SocketAddr>,
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The name in the certificate.
    #[serde(default)]
    pub tls_name: Option<String>,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
    #[serde(default = "default_max_queries_per_connection")]
    pub max_queries_per_connection: usize,
    #[serde(default = "default_true")]
    pub application_dns_canary: bool,
    /// Default: the host name.
    #[serde(default)]
    pub node_id: Option<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: default_listen(),
            allow_unknown_clients: false,
            tcp_timeout_secs: default_tcp_timeout(),
            shutdown_grace_secs: default_grace(),
            workers: 0,
            tls_listen: Vec::new(),
            https_listen: Vec::new(),
            quic_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_name: None,
            max_connections: default_max_connections(),
            max_connections_per_client: default_max_connections_per_client(),
            max_queries_per_connection: default_max_queries_per_connection(),
            application_dns_canary: true,
            node_id: None,
        }
    }
}

fn default_max_connections() -> usize {
    20_000
}

fn default_max_connections_per_client() -> usize {
    256
}

fn default_max_queries_per_connection() -> usize {
    100
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 5353))]
}

fn default_tcp_timeout() -> u64 {
    10
}

fn default_grace() -> u64 {
    5
}
