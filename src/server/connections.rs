//! Caps on client connections for the stream transports (TCP, DoT, DoH,
//! DoQ): a total, and a share per client address, so that one client
//! (or a flood of idle connections from addresses in no organisation)
//! cannot take every file descriptor and leave the others, and the admin
//! listener, without any.
//!
//! A quarter of the total is kept for members: a connection from an
//! address in no organisation is refused once three quarters of the total
//! are open, so that 20,000 idle connections from outside leave room for
//! the organisations' own clients (their TCP fallback after a truncated
//! answer above all). A roaming client over DoT or DoH from an address in
//! no organisation counts as an outsider here: its key is seen only after
//! the connection is accepted.
//!
//! The caps are checked when a connection is accepted, never on a query:
//! the per-client counts sit behind a mutex taken once at connect and once
//! at close.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::telemetry;

/// The configured caps.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Connections open at once over all stream transports.
    pub total: usize,
    /// Connections open at once from one client address.
    pub per_client: usize,
}

/// The connections open now, shared by every stream listener.
#[derive(Debug)]
pub struct Connections {
    caps: Caps,
    /// Whose addresses are members (see the module doc), as the serving
    /// policy says now; `None`: no one is told apart (the admin listener).
    /// A config without organisations tells no one apart either.
    members: Option<super::PolicyHandle>,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerClient,
    /// An address in no organisation, with only the members' share left.
    Reserved,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Total => "total",
            Refusal::PerClient => "per_client",
            Refusal::Reserved => "reserved_for_members",
        }
    }
}

impl Connections {
    pub fn new(caps: Caps) -> Arc<Connections> {
        Arc::new(Connections {
            caps,
            members: None,
            open: Mutex::new(Open::default()),
        })
    }

    /// Caps that keep a quarter of the total for the organisations of
    /// `policy` (none kept while it has no organisation).
    pub fn with_members(caps: Caps, policy: super::PolicyHandle) -> Arc<Connections> {
        Arc::new(Connections {
            caps,
            members: Some(policy),
            open: Mutex::new(Open::default()),
        })
    }

    /// The most connections open at which one more from an address in no
    /// organisation is still admitted.
    fn outsiders_up_to(&self) -> usize {
        self.caps.total - self.caps.total / 4
    }

    /// Count a new connection from `client` to `listener` (a transport's
    /// name, or `admin` or `block_page`, the metrics' label), or refuse it
    /// (counted in the metrics). The returned guard uncounts it on drop.
    pub fn admit(
        self: &Arc<Self>,
        client: IpAddr,
        listener: &'static str,
    ) -> Result<Admitted, Refusal> {
        let client = client.to_canonical();
        let outsider = self.members.as_ref().is_some_and(|policy| {
            let orgs = &policy.load().orgs;
            !orgs.policies().is_empty() && orgs.lookup(client).is_none()
        });
        let refused = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let mine = open.by_client.get(&client).copied().unwrap_or(0);
            if open.total >= self.caps.total {
                Some(Refusal::Total)
            } else if outsider && open.total >= self.outsiders_up_to() {
                Some(Refusal::Reserved)
            } else if mine >= self.caps.per_client {
                Some(Refusal::PerClient)
            } else {
                open.total += 1;
                open.by_client.insert(client, mine + 1);
                None
            }
        };
        if let Some(refusal) = refused {
            ::metrics::counter!(telemetry::CONNECTIONS_REFUSED, "transport" => listener, "reason" => refusal.label())
                .increment(1);
            return Err(refusal);
        }
        ::metrics::gauge!(telemetry::CONNECTIONS, "transport" => listener).increment(1);
        Ok(Admitted {
            connections: Arc::clone(self),
            client,
            listener,
        })
    }

    /// Connections open now, in all.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// One counted connection; dropping it uncounts it.
#[derive(Debug)]
pub struct Admitted {
    connections: Arc<Connections>,
    client: IpAddr,
    listener: &'static str,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        {
            let mut open = self
                .connections
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            open.total = open.total.saturating_sub(1);
            if let Some(n) = open.by_client.get_mut(&self.client) {
                *n -= 1;
                if *n == 0 {
                    open.by_client.remove(&self.client);
                }
            }
        }
        ::metrics::gauge!(telemetry::CONNECTIONS, "transport" => self.listener).decrement(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hitlog::Transport;

    #[test]
    fn per_client_and_total_caps_hold_and_closing_frees_a_place() {
        let connections = Connections::new(Caps {
            total: 3,
            per_client: 2,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "::ffff:192.0.2.3".parse().unwrap();
        let a1 = connections.admit(a, Transport::Tcp.as_str()).unwrap();
        let _a2 = connections.admit(a, Transport::Dot.as_str()).unwrap();
        assert_eq!(
            connections.admit(a, Transport::Tcp.as_str()).unwrap_err(),
            Refusal::PerClient
        );
        let _b1 = connections.admit(b, Transport::Tcp.as_str()).unwrap();
        assert_eq!(
            connections.admit(c, Transport::Doh.as_str()).unwrap_err(),
            Refusal::Total
        );
        drop(a1);
        assert_eq!(connections.open(), 2);
        // An IPv4-mapped address is the same client as its IPv4 form.
        let _c1 = connections.admit(c, Transport::Doh.as_str()).unwrap();
        assert_eq!(
            connections
                .admit("192.0.2.3".parse().unwrap(), Transport::Tcp.as_str())
                .unwrap_err(),
            Refusal::Total
        );
    }

    fn policy(toml: &str) -> crate::server::PolicyHandle {
        let config =
            crate::config::Config::from_str(toml, std::path::Path::new("/p.toml")).unwrap();
        let orgs = Arc::new(crate::orgs::OrgMap::new(&config.organisations).unwrap());
        crate::server::ClientPolicy::new(&config, orgs).handle()
    }

    #[test]
    fn a_quarter_of_the_total_is_kept_for_members() {
        let connections = Connections::with_members(
            Caps {
                total: 8,
                per_client: 100,
            },
            policy("[[organisation]]\nid = \"a\"\nname = \"A\"\nnetworks = [\"10.0.0.0/8\"]\n"),
        );
        let outsider: IpAddr = "192.0.2.1".parse().unwrap();
        let member: IpAddr = "10.1.2.3".parse().unwrap();
        let held: Vec<_> = (0..6)
            .map(|_| connections.admit(outsider, "tcp").unwrap())
            .collect();
        assert_eq!(
            connections.admit(outsider, "tcp").unwrap_err(),
            Refusal::Reserved
        );
        let other_outsider: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            connections.admit(other_outsider, "dot").unwrap_err(),
            Refusal::Reserved
        );
        let _m1 = connections.admit(member, "tcp").unwrap();
        let _m2 = connections.admit(member, "tcp").unwrap();
        assert_eq!(
            connections.admit(member, "tcp").unwrap_err(),
            Refusal::Total
        );
        drop(held);
        assert!(connections.admit(outsider, "tcp").is_ok());
        // Without organisations, no one is told apart.
        let open = Connections::with_members(
            Caps {
                total: 4,
                per_client: 100,
            },
            policy(""),
        );
        let all: Vec<_> = (0..4).map(|_| open.admit(outsider, "tcp")).collect();
        assert!(all.iter().all(Result::is_ok));
    }
}
