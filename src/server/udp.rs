//! The UDP listener: one receive loop per socket, answering in the loop
//! whatever can be answered without waiting.
//!
//! Each datagram goes, in order, to:
//! 1. the packet cache ([`super::packet_cache`]): a clean name asked
//!    again is answered from the bytes sent last time;
//! 2. the blocked-name path: a listed query name is answered from the
//!    bytes, without decoding the message (both in
//!    [`Handler::answer_from_bytes`]);
//! 3. the [`Handler`], run in the loop itself: a refusal, an exception or
//!    an answer from the resolver's own cache completes without waiting,
//!    so it costs no task and no channel;
//! 4. only a query that must wait for an upstream becomes a task of its
//!    own, from where the handler had got to.
//!
//! The loop takes every datagram waiting (up to [`super::mmsg::BATCH`]) in
//! one system call and sends the answers of steps 1 and 2 in one more
//! ([`super::mmsg`]); a query of step 3 or 4 sends its own.
//!
//! hickory-server's UDP path spawns a task per datagram and sends every
//! response through a channel back to the receive loop; on one core that
//! machinery cost more than the lookup and the answer together.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Instant, SystemTime};

use hickory_proto::rr::Record;
use hickory_server::net::NetError;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::net::UdpSocket;

use crate::hitlog::Transport;

use super::Handler;
use super::capture::encode_udp;
use super::limits::{Sending, slip};
use super::mmsg::{Inbox, Outbox};
use super::packet_cache::{MAX_UDP_PAYLOAD, PacketCache};

/// Largest datagram read; a query is rarely over 512 octets, and one
/// longer than this is not a query we could parse anyway.
const RECV_BUFFER: usize = 4096;

/// Serve `socket` until the task is aborted.
pub async fn serve(socket: UdpSocket, handler: Arc<Handler>, cache: Option<Arc<PacketCache>>) {
    let local = socket.local_addr().ok();
    let socket = Arc::new(socket);
    let mut inbox = Inbox::new(RECV_BUFFER);
    let mut outbox = Outbox::new(usize::from(MAX_UDP_PAYLOAD));
    loop {
        let received = match inbox.recv(&socket).await {
            Ok(received) => received,
            // ICMP errors from earlier sends surface here; they are about
            // another client, not this socket.
            Err(error) if transient(&error) => continue,
            Err(error) => {
                // Anything else (out of memory, a socket in a bad state):
                // keep serving, without spinning on the error.
                tracing::warn!(%error, "receiving on a UDP socket");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        for i in 0..received {
            let (packet, src) = inbox.get(i);
            // Nothing can be sent back to port 0 (and it is not a
            // resolver's client); a datagram too short for a header has
            // no ID to answer.
            let Some(src) = src.filter(|s| s.port() != 0) else {
                continue;
            };
            if packet.len() < 12 {
                continue;
            }
            let out = outbox.next_slot();
            if let Some(n) = handler.over_rate(packet, src, Transport::Udp, out) {
                if n > 0 {
                    outbox.push(n, src);
                }
                continue;
            }
            if let Some(n) = handler.answer_from_bytes(cache.as_deref(), packet, src, out) {
                let sending = {
                    let policy = handler.policy.load();
                    policy.limits.response(src.ip(), &out[..n], &policy.orgs)
                };
                let n = match sending {
                    Sending::Send => n,
                    Sending::Slip => slip(&mut out[..n]),
                    Sending::Drop => 0,
                };
                if let Some(tap) = &handler.tap {
                    tap_fast_path(tap, src, local, packet, (n > 0).then(|| &out[..n]));
                }
                if n > 0 {
                    outbox.push(n, src);
                }
                continue;
            }
            // A response sent to us is never answered (reflection).
            if packet[2] & 0x80 != 0 {
                continue;
            }
            let request = match Request::from_bytes(packet.to_vec(), src, Protocol::Udp) {
                Ok(request) => request,
                Err(error) => {
                    tracing::debug!(%error, client = %src, "malformed query");
                    let n = form_error(packet, outbox.next_slot());
                    outbox.push(n, src);
                    handler.metrics.rejected(Transport::Udp);
                    continue;
                }
            };
            match &handler.tap {
                None => run_or_spawn(answer(
                    request,
                    Arc::clone(&socket),
                    Arc::clone(&handler),
                    cache.clone(),
                    None,
                )),
                Some(_) => run_or_spawn(crate::dnstap::scoped(answer(
                    request,
                    Arc::clone(&socket),
                    Arc::clone(&handler),
                    cache.clone(),
                    Some(Tapped::new(packet, local)),
                ))),
            }
        }
        outbox.flush(&socket).await;
    }
}

fn transient(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | WouldBlock | TimedOut
    )
}

/// Answer one decoded query, and hold the response when the handler says
/// it may be held; with `tapped`, hand it to the tap too.
async fn answer(
    request: Request,
    socket: Arc<UdpSocket>,
    handler: Arc<Handler>,
    cache: Option<Arc<PacketCache>>,
    tapped: Option<Tapped>,
) {
    let generation = handler.blocklist.load().generation();
    let sent = Arc::new(OnceLock::new());
    let responder = Responder {
        socket,
        dst: request.src(),
        sent: (cache.is_some() || tapped.is_some()).then(|| Arc::clone(&sent)),
        handler: Arc::clone(&handler),
    };
    let clean = handler.handle_udp(&request, responder).await;
    if let (true, Some(cache), Some(wire)) = (clean, cache, sent.get()) {
        cache.insert(request.as_slice(), wire, generation, Instant::now());
    }
    if let (Some(tapped), Some(tap)) = (tapped, &handler.tap) {
        tapped.send(tap, request.src(), sent.get().map(Vec::as_slice));
    }
}

/// What the tap needs of a query answered on the full path, kept from
/// when it arrived.
struct Tapped {
    query: Vec<u8>,
    local: Option<SocketAddr>,
    received: SystemTime,
}

impl Tapped {
    #[cold]
    fn new(packet: &[u8], local: Option<SocketAddr>) -> Tapped {
        Tapped {
            query: packet.to_vec(),
            local,
            received: SystemTime::now(),
        }
    }

    /// With the decision noted in this task's slot.
    #[cold]
    fn send(self, tap: &crate::dnstap::Tap, client: SocketAddr, response: Option<&[u8]>) {
        tap.send(crate::dnstap::Exchange {
            transport: Transport::Udp,
            client,
            server: self.local,
            query: &self.query,
            response,
            received: self.received,
            policy: crate::dnstap::take(),
        });
    }
}

/// A fast-path answer to the tap. Out of line and cold: the loop it is
/// called from is the resolver's hottest, and without dnstap it is never
/// called. The query came in within the same microsecond it was answered.
#[cold]
#[inline(never)]
fn tap_fast_path(
    tap: &crate::dnstap::Tap,
    client: SocketAddr,
    local: Option<SocketAddr>,
    query: &[u8],
    response: Option<&[u8]>,
) {
    tap.send(crate::dnstap::Exchange {
        transport: Transport::Udp,
        client,
        server: local,
        query,
        response,
        received: SystemTime::now(),
        policy: crate::dnstap::take(),
    });
}

/// Poll `task` once here; only if it has to wait does it become a task.
/// (The waker it saw is replaced by the runtime's on the spawned task's
/// first poll, as the `Future` contract requires.)
fn run_or_spawn(task: impl Future<Output = ()> + Send + 'static) {
    let mut task = Box::pin(task);
    let mut cx = Context::from_waker(Waker::noop());
    if task.as_mut().poll(&mut cx) == Poll::Pending {
        tokio::spawn(task);
    }
}

async fn send(socket: &UdpSocket, wire: &[u8], dst: SocketAddr) {
    let result = match socket.try_send_to(wire, dst) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.send_to(wire, dst).await,
        other => other,
    };
    if let Err(error) = result {
        tracing::debug!(%error, client = %dst, "failed to send a UDP response");
    }
}

/// A FORMERR for a query whose header could be read but not the rest.
pub(super) fn form_error(packet: &[u8], out: &mut [u8]) -> usize {
    out[..12].fill(0);
    out[..2].copy_from_slice(&packet[..2]);
    // QR, the query's opcode and RD; RA; rcode 1.
    out[2] = 0x80 | (packet[2] & 0x79);
    out[3] = 0x80 | 1;
    12
}

/// Sends the handler's response on the socket it came in on, and keeps a
/// copy for the packet cache.
#[derive(Clone)]
struct Responder {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
    sent: Option<Arc<OnceLock<Vec<u8>>>>,
    /// For response rate limiting.
    handler: Arc<Handler>,
}

#[async_trait::async_trait]
impl ResponseHandler for Responder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (info, wire) = encode_udp(response)?;
        // Decided before any await: the policy's guard is not held there.
        let sending = {
            let policy = self.handler.policy.load();
            if policy.limits.rates_responses() {
                policy.limits.response(self.dst.ip(), &wire, &policy.orgs)
            } else {
                Sending::Send
            }
        };
        match sending {
            Sending::Send => send(&self.socket, &wire, self.dst).await,
            Sending::Slip => {
                // The cache keeps the whole response, not the slip.
                let mut cut = wire.clone();
                let n = slip(&mut cut);
                send(&self.socket, &cut[..n], self.dst).await;
            }
            Sending::Drop => {}
        }
        if let Some(sent) = &self.sent {
            let _ = sent.set(wire);
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_error_keeps_the_id_opcode_and_rd() {
        let query = [0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 9];
        let mut out = [0xFFu8; 64];
        assert_eq!(form_error(&query, &mut out), 12);
        let reply = hickory_proto::op::Message::from_vec(&out[..12]).unwrap();
        assert_eq!(reply.metadata.id, 0xABCD);
        assert!(reply.metadata.recursion_desired);
        assert_eq!(
            reply.metadata.response_code,
            hickory_proto::op::ResponseCode::FormErr
        );
        assert!(reply.queries.is_empty());
    }

    #[tokio::test]
    async fn a_task_that_waits_is_spawned_and_finishes() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        run_or_spawn(async move {
            let value: u32 = rx.await.unwrap_or(0);
            let _ = done_tx.send(value);
        });
        tx.send(7).unwrap();
        assert_eq!(done_rx.await.unwrap(), 7);
    }
}
