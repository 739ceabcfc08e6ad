//! Caps on client connections for the stream transports (TCP, DoT, DoH,
//! DoQ): a total, and a share per client address, so that one client
//! (or a flood of idle connections from addresses in no organisation)
//! cannot take every file descriptor and leave the others, and the admin
//! listener, without any.
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
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Total => "total",
            Refusal::PerClient => "per_client",
        }
    }
}

impl Connections {
    pub fn new(caps: Caps) -> Arc<Connections> {
        Arc::new(Connections {
            caps,
            open: Mutex::new(Open::default()),
        })
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
        let refused = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let mine = open.by_client.get(&client).copied().unwrap_or(0);
            if open.total >= self.caps.total {
                Some(Refusal::Total)
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
}
