//! The stream transports' way into the handler (TCP, DoT, DoH, DoQ):
//! raw query bytes in, the response's bytes out, padded on the encrypted
//! transports and handed to the dnstap tap when there is one.

use std::net::SocketAddr;

use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;

use super::Handler;
use super::capture::Collect;
use super::decide::Via;
use super::padding;

impl Handler {
    /// Answer one query that came over a stream transport (TCP, DoT, DoH,
    /// DoQ): the response's bytes, or `None` where nothing is sent (a
    /// message that is not a query, the `drop` action). Responses on the
    /// encrypted transports are padded (RFC 8467).
    pub async fn answer_message(
        &self,
        query: Vec<u8>,
        src: SocketAddr,
        via: Via,
    ) -> Option<Vec<u8>> {
        // A response sent to us is never answered; a message too short for
        // a header has no ID to answer.
        if query.len() < 12 || query[2] & 0x80 != 0 {
            return None;
        }
        if self.policy.load().limits.rates_clients() {
            let mut limited = [0u8; 512];
            if let Some(n) = self.over_rate(&query, src, via.transport, &mut limited) {
                return (n > 0).then(|| limited[..n].to_vec());
            }
        }
        let mut query_header = [0u8; 12];
        query_header.copy_from_slice(&query[..12]);
        let received = self.tap.as_ref().map(|_| std::time::SystemTime::now());
        let request = match Request::from_bytes(query, src, Protocol::Tcp) {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(%error, client = %src, transport = %via.transport, "malformed query");
                self.metrics.rejected(via.transport);
                let mut wire = vec![0; 12];
                super::udp::form_error(&query_header, &mut wire);
                return Some(wire);
            }
        };
        let collect = Collect::default();
        let wire = match (&self.tap, received) {
            (Some(tap), Some(received)) => {
                let policy = crate::dnstap::scoped(async {
                    self.serve(&request, collect.clone(), via).await;
                    crate::dnstap::take()
                })
                .await;
                let wire = collect.take();
                tap.send(crate::dnstap::Exchange {
                    transport: via.transport,
                    client: src,
                    server: None,
                    query: request.as_slice(),
                    response: wire.as_deref(),
                    received,
                    policy,
                });
                wire?
            }
            _ => {
                self.serve(&request, collect.clone(), via).await;
                collect.take()?
            }
        };
        // A response has an OPT record (to pad) only when the query had one.
        Some(if via.transport.encrypted() && request.edns.is_some() {
            padding::pad(wire)
        } else {
            wire
        })
    }
}
