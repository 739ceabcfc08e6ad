//! `[server]`: the listeners, the connection limits and the encrypted
//! transports' certificate.

use super::{Checker, ConfigError};
use crate::config::raw::RawServer;
use crate::config::sections::{AdminConfig, EncryptedConfig, ServerConfig};

pub(in crate::config) fn server(
    raw: RawServer,
    cx: &mut Checker,
) -> Result<ServerConfig, ConfigError> {
    if raw.workers > 1024 {
        return Err(cx.invalid(
            "server.workers",
            format!(
                "{} is too many; at most 1024 (0 = one per CPU)",
                raw.workers
            ),
        ));
    }
    for (key, value) in [
        ("server.max_connections", raw.max_connections),
        (
            "server.max_connections_per_client",
            raw.max_connections_per_client,
        ),
        (
            "server.max_queries_per_connection",
            raw.max_queries_per_connection,
        ),
    ] {
        if value == 0 {
            return Err(cx.invalid(key, "must be at least 1".into()));
        }
    }
    if raw.tcp_timeout_secs == 0 {
        return Err(cx.invalid(
            "server.tcp_timeout_secs",
            "must be at least 1 (an idle connection must be closed some time)".into(),
        ));
    }
    let encrypted = encrypted(&raw, cx)?;
    if raw.allow_unknown_clients {
        let exposed: Vec<String> = raw
            .listen
            .iter()
            .chain(&raw.tls_listen)
            .chain(&raw.https_listen)
            .chain(&raw.quic_listen)
            .filter(|a| !a.ip().is_loopback())
            .map(ToString::to_string)
            .collect();
        if !exposed.is_empty() {
            cx.warn(
                "server.allow_unknown_clients",
                format!(
                    "true while listening beyond loopback ({}): anyone who can reach the \
                     resolver may use it (an open resolver is a DDoS amplifier); list the \
                     networks in [[organisation]] entries and set it to false",
                    exposed.join(", ")
                ),
            );
        }
    }
    Ok(ServerConfig {
        listen: raw.listen,
        allow_unknown_clients: raw.allow_unknown_clients,
        tcp_timeout_secs: raw.tcp_timeout_secs,
        shutdown_grace_secs: raw.shutdown_grace_secs,
        workers: raw.workers,
        encrypted,
        max_connections: raw.max_connections,
        max_connections_per_client: raw.max_connections_per_client,
        max_queries_per_connection: raw.max_queries_per_connection,
        application_dns_canary: raw.application_dns_canary,
        node_id: match raw.node_id {
            Some(id) => node_id(&id).map_err(|reason| cx.invalid("server.node_id", reason))?,
            None => super::default_node_id(),
        },
    })
}

/// A node id as given, or why it cannot be one.
fn node_id(id: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if id.is_empty() || id.len() > 64 || !id.chars().all(ok) {
        return Err(format!(
            "{id:?} is not a node id: 1 to 64 letters, digits, '.', '-' or '_'"
        ));
    }
    Ok(id.to_string())
}

/// The encrypted listeners need a certificate and key; a certificate
/// without listeners is a warning (it does nothing).
fn encrypted(raw: &RawServer, cx: &mut Checker) -> Result<Option<EncryptedConfig>, ConfigError> {
    let tls_name = match &raw.tls_name {
        None => None,
        Some(name) => {
            let normal = crate::domain::normalize(name)
                .map_err(|e| cx.invalid("server.tls_name", format!("{name:?}: {e}")))?;
            Some(normal)
        }
    };
    let listeners = [
        ("server.tls_listen", raw.tls_listen.is_empty()),
        ("server.https_listen", raw.https_listen.is_empty()),
        ("server.quic_listen", raw.quic_listen.is_empty()),
    ];
    let Some((first, _)) = listeners.iter().find(|(_, empty)| !empty) else {
        if raw.tls_cert.is_some() || raw.tls_key.is_some() {
            cx.warn(
                "server.tls_cert",
                "no encrypted listener is configured (tls_listen, https_listen, quic_listen), \
                 so the certificate is not used"
                    .into(),
            );
        }
        return Ok(None);
    };
    let (Some(cert), Some(key)) = (&raw.tls_cert, &raw.tls_key) else {
        let missing = if raw.tls_cert.is_none() {
            "server.tls_cert"
        } else {
            "server.tls_key"
        };
        return Err(cx.invalid(
            missing,
            format!(
                "{first} needs a certificate: set server.tls_cert and server.tls_key (PEM files)"
            ),
        ));
    };
    if tls_name.is_none() {
        cx.warn(
            "server.tls_name",
            "not set: clients are not offered the encrypted listeners by discovery \
             (_dns.resolver.arpa), and DoT/DoQ server names carry no roaming keys"
                .into(),
        );
    }
    Ok(Some(EncryptedConfig {
        tls_listen: raw.tls_listen.clone(),
        https_listen: raw.https_listen.clone(),
        quic_listen: raw.quic_listen.clone(),
        cert: cx.rel(cert),
        key: cx.rel(key),
        tls_name,
    }))
}

/// `server.listen = []` with no encrypted listener is a reporting-only
/// instance: it answers no DNS, so it must have the admin listener, and
/// it reads the fleet's store through it.
pub(in crate::config) fn reporting_only(
    server: &ServerConfig,
    admin: &AdminConfig,
    cx: &Checker,
) -> Result<(), ConfigError> {
    if server.is_reporting_only() && admin.listen.is_none() {
        return Err(cx.invalid(
            "server.listen",
            "is empty and no encrypted listener is set: a reporting-only instance needs \
             admin.listen (to serve the review API and page); otherwise give a DNS address"
                .into(),
        ));
    }
    Ok(())
}
