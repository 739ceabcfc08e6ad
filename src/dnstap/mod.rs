//! dnstap output: CLIENT_QUERY and CLIENT_RESPONSE messages about every
//! query (or only those a blocklist entry decided), with the decision in
//! dnstap's policy fields, sent over Frame Streams to a collector on a
//! Unix socket or TCP, as Unbound, BIND, Knot and PowerDNS send them.
//!
//! The query path only builds an [`Event`] and `try_send`s it on a
//! bounded channel; a thread of its own encodes and writes. A collector
//! that is slow, stopped or absent costs the query path nothing: what the
//! channel cannot take, and what the thread cannot write, is dropped and
//! counted (`portcullis_dnstap_dropped_total{reason}`), and the thread
//! connects again every few seconds.
//!
//! The policy fields, for a query an entry decided: `type` "blocklist",
//! `rule` the feed's name, `match` QNAME (the query name or a CNAME
//! target), RESPONSE_IP (an answer address), CLIENT_IP, NS_NAME or NS_IP
//! (a name server of the answering zone), `value` the listed name in
//! wire form or the address, `action` NXDOMAIN, NODATA, DROP, LOCAL_DATA
//! (sinkhole) or PASS (monitor mode, an exception); REFUSED has no dnstap
//! action and leaves it unset.

mod fstrm;
pub mod message;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use prost::Message as _;

use crate::config::{DnstapConfig, DnstapTarget};
use crate::hitlog::{Stage, Transport};
use crate::telemetry;
use message::{
    CONTENT_TYPE, Dnstap, DnstapType, MessageType, Policy, PolicyAction, PolicyMatch,
    SocketProtocol,
};

/// Connect, handshake and write timeouts: a collector slower than this
/// is treated as gone.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_LAST: Duration = Duration::from_secs(10);
/// Events encoded into one write.
const BATCH: usize = 512;
const LOG_EVERY: Duration = Duration::from_secs(30);

/// What decided a query, noted by the handler where it records a hit.
#[derive(Debug, Clone)]
pub struct PolicyNote {
    pub stage: Stage,
    pub matched: Box<str>,
    pub feed: Box<str>,
    pub action: Box<str>,
}

thread_local! {
    /// The note of a query answered synchronously on this thread (the UDP
    /// fast path).
    static NOTE: RefCell<Option<PolicyNote>> = const { RefCell::new(None) };
}

tokio::task_local! {
    /// The note of a query answered in a task that may move between
    /// threads (see [`scoped`]).
    static TASK_NOTE: RefCell<Option<PolicyNote>>;
}

/// Note the decision of the query being answered.
pub fn note(note: PolicyNote) {
    let mut note = Some(note);
    let _ = TASK_NOTE.try_with(|n| *n.borrow_mut() = note.take());
    if let Some(note) = note {
        NOTE.with(|n| *n.borrow_mut() = Some(note));
    }
}

/// The decision noted for the query just answered, if any (and forget
/// it).
pub fn take() -> Option<PolicyNote> {
    match TASK_NOTE.try_with(|n| n.borrow_mut().take()) {
        Ok(note) => note,
        Err(_) => NOTE.with(|n| n.borrow_mut().take()),
    }
}

/// Run `f` with a note slot of its own, for a query whose answer may wait.
pub async fn scoped<F: std::future::Future>(f: F) -> F::Output {
    TASK_NOTE.scope(RefCell::new(None), f).await
}

/// One query and its answer, as the tap sends them.
#[derive(Debug)]
pub struct Event {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: Option<SocketAddr>,
    pub query: Vec<u8>,
    /// None: nothing was sent (the drop action).
    pub response: Option<Vec<u8>>,
    pub received: SystemTime,
    pub answered: SystemTime,
    pub policy: Option<PolicyNote>,
}

/// A query just answered, as the query path hands it to the tap.
pub struct Exchange<'a> {
    pub transport: Transport,
    pub client: SocketAddr,
    /// The address the query came to, where the listener knows it.
    pub server: Option<SocketAddr>,
    pub query: &'a [u8],
    /// None: nothing was sent (the drop action).
    pub response: Option<&'a [u8]>,
    pub received: SystemTime,
    /// What [`take`] returned for it.
    pub policy: Option<PolicyNote>,
}

/// The query path's end of the tap; cheap to clone.
#[derive(Clone)]
pub struct Tap {
    tx: SyncSender<Event>,
    only_policy: bool,
}

impl Tap {
    /// Hand over the query just answered (never waits).
    pub fn send(&self, x: Exchange<'_>) {
        if self.only_policy && x.policy.is_none() {
            return;
        }
        let event = Event {
            transport: x.transport,
            client: x.client,
            server: x.server,
            query: x.query.to_vec(),
            response: x.response.map(<[u8]>::to_vec),
            received: x.received,
            answered: SystemTime::now(),
            policy: x.policy,
        };
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => dropped("queue_full", 1),
            Err(TrySendError::Disconnected(_)) => dropped("stopped", 1),
        }
    }
}

fn dropped(reason: &'static str, n: u64) {
    ::metrics::counter!(telemetry::DNSTAP_DROPPED, "reason" => reason).increment(n);
}

/// The running sender thread; [`Sender::stop`] ends the stream cleanly.
pub struct Sender {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Start the sender for `config`; the tap is what the handler holds.
pub fn spawn(config: &DnstapConfig) -> std::io::Result<(Tap, Sender)> {
    let (tx, rx) = sync_channel(config.queue);
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = Writer {
        target: config.target.clone(),
        client_query: config.client_query,
        client_response: config.client_response,
        identity: config.identity.as_bytes().to_vec(),
        version: format!("portcullis {}", env!("CARGO_PKG_VERSION")).into_bytes(),
        stream: None,
        next_try: Instant::now(),
        retry: RETRY_FIRST,
        logged: None,
    };
    let flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("portcullis-dnstap".into())
        .spawn(move || writer.run(&rx, &flag))?;
    Ok((
        Tap {
            tx,
            only_policy: config.only_policy,
        },
        Sender {
            stop,
            thread: Some(thread),
        },
    ))
}

impl Sender {
    /// Send what is queued, STOP the stream and wait for FINISH.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

struct Writer {
    target: DnstapTarget,
    client_query: bool,
    client_response: bool,
    identity: Vec<u8>,
    version: Vec<u8>,
    stream: Option<Box<dyn Stream>>,
    next_try: Instant,
    retry: Duration,
    logged: Option<Instant>,
}

impl Writer {
    fn run(&mut self, rx: &Receiver<Event>, stop: &AtomicBool) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut frames = Vec::with_capacity(64 * 1024);
        loop {
            let stopping = stop.load(Ordering::Acquire);
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(event) => batch.push(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            if self.stream.is_none() && Instant::now() >= self.next_try {
                self.connect();
            }
            if !batch.is_empty() {
                self.write(&mut batch, &mut frames);
            }
            if stopping {
                // Stop once the channel is empty: the last queries go out.
                match rx.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) if batch.is_empty() => break,
                    Err(_) => {}
                }
            }
        }
        if let Some(mut stream) = self.stream.take()
            && let Err(error) = fstrm::stop(&mut stream)
        {
            tracing::debug!(%error, "dnstap: closing the stream");
        }
    }

    fn connect(&mut self) {
        let result = (|| -> std::io::Result<Box<dyn Stream>> {
            let mut stream: Box<dyn Stream> = match &self.target {
                DnstapTarget::Unix(path) => {
                    let s = std::os::unix::net::UnixStream::connect(path)?;
                    s.set_read_timeout(Some(IO_TIMEOUT))?;
                    s.set_write_timeout(Some(IO_TIMEOUT))?;
                    Box::new(s)
                }
                DnstapTarget::Tcp(addr) => {
                    let s = std::net::TcpStream::connect_timeout(addr, IO_TIMEOUT)?;
                    s.set_read_timeout(Some(IO_TIMEOUT))?;
                    s.set_write_timeout(Some(IO_TIMEOUT))?;
                    s.set_nodelay(true)?;
                    Box::new(s)
                }
            };
            fstrm::handshake(&mut stream, CONTENT_TYPE)?;
            Ok(stream)
        })();
        match result {
            Ok(stream) => {
                tracing::info!(collector = %self.describe(), "dnstap: connected");
                self.stream = Some(stream);
                self.retry = RETRY_FIRST;
            }
            Err(error) => {
                self.failed("cannot connect to the dnstap collector", &error);
                self.next_try = Instant::now() + self.retry;
                self.retry = (self.retry * 2).min(RETRY_LAST);
            }
        }
    }

    /// Encode and write the batch; drop it (counted) without a collector.
    fn write(&mut self, batch: &mut Vec<Event>, frames: &mut Vec<u8>) {
        let events = batch.len() as u64;
        if self.stream.is_none() {
            dropped("no_collector", events);
            batch.clear();
            return;
        }
        frames.clear();
        let mut messages = 0u64;
        for event in batch.drain(..) {
            if self.client_query {
                frames_push(frames, &self.encode(&event, MessageType::ClientQuery));
                messages += 1;
            }
            if self.client_response {
                frames_push(frames, &self.encode(&event, MessageType::ClientResponse));
                messages += 1;
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        match stream.write_all(frames).and_then(|()| stream.flush()) {
            Ok(()) => ::metrics::counter!(telemetry::DNSTAP_MESSAGES).increment(messages),
            Err(error) => {
                dropped("collector_error", events);
                self.failed("writing to the dnstap collector", &error);
                self.stream = None;
                self.next_try = Instant::now() + self.retry;
            }
        }
    }

    fn encode(&self, event: &Event, kind: MessageType) -> Vec<u8> {
        let (query_address, query_port, family) = message::address(event.client);
        let server = event.server.map(message::address);
        let (query_time_sec, query_time_nsec) = message::time(event.received);
        let response = kind == MessageType::ClientResponse;
        let (response_time_sec, response_time_nsec) = message::time(event.answered);
        let msg = message::Message {
            r#type: kind as i32,
            socket_family: Some(family as i32),
            socket_protocol: Some(protocol(event.transport) as i32),
            query_address: Some(query_address),
            response_address: server.as_ref().map(|s| s.0.clone()),
            query_port: Some(query_port),
            response_port: server.as_ref().map(|s| s.1),
            query_time_sec: Some(query_time_sec),
            query_time_nsec: Some(query_time_nsec),
            query_message: Some(event.query.clone()),
            response_time_sec: response.then_some(response_time_sec),
            response_time_nsec: response.then_some(response_time_nsec),
            response_message: if response {
                event.response.clone()
            } else {
                None
            },
            policy: event.policy.as_ref().map(policy),
        };
        Dnstap {
            identity: Some(self.identity.clone()),
            version: Some(self.version.clone()),
            message: Some(msg),
            r#type: DnstapType::Message as i32,
        }
        .encode_to_vec()
    }

    fn describe(&self) -> String {
        match &self.target {
            DnstapTarget::Unix(path) => path.display().to_string(),
            DnstapTarget::Tcp(addr) => addr.to_string(),
        }
    }

    fn failed(&mut self, what: &str, error: &std::io::Error) {
        ::metrics::counter!(telemetry::DNSTAP_ERRORS).increment(1);
        if self.logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            tracing::warn!(collector = %self.describe(), %error, "dnstap: {what}; messages are dropped until it is back");
            self.logged = Some(Instant::now());
        }
    }
}

fn frames_push(frames: &mut Vec<u8>, payload: &[u8]) {
    fstrm::data_frame(frames, payload);
}

fn protocol(transport: Transport) -> SocketProtocol {
    match transport {
        Transport::Udp => SocketProtocol::Udp,
        Transport::Dot => SocketProtocol::Dot,
        Transport::Doh => SocketProtocol::Doh,
        Transport::Doq => SocketProtocol::Doq,
        Transport::Tcp | Transport::Other => SocketProtocol::Tcp,
    }
}

/// dnstap's policy fields for a decision (see the module doc).
fn policy(note: &PolicyNote) -> Policy {
    let (matched, value) = match note.stage {
        Stage::AnswerIp | Stage::ClientIp | Stage::Nsip => {
            let address = note
                .matched
                .split('/')
                .next()
                .and_then(|a| a.parse::<IpAddr>().ok());
            (
                match note.stage {
                    Stage::ClientIp => PolicyMatch::ClientIp,
                    Stage::Nsip => PolicyMatch::NsIp,
                    _ => PolicyMatch::ResponseIp,
                },
                address.map(|a| match a {
                    IpAddr::V4(v4) => v4.octets().to_vec(),
                    IpAddr::V6(v6) => v6.octets().to_vec(),
                }),
            )
        }
        Stage::Qname | Stage::Cname => (PolicyMatch::Qname, Some(wire_name(&note.matched))),
        Stage::Nsdname => (PolicyMatch::NsName, Some(wire_name(&note.matched))),
    };
    let action = match &*note.action {
        "nxdomain" => Some(PolicyAction::Nxdomain),
        "nodata" => Some(PolicyAction::Nodata),
        "drop" => Some(PolicyAction::Drop),
        "sinkhole" => Some(PolicyAction::LocalData),
        "log" | "allow" => Some(PolicyAction::Pass),
        _ => None,
    };
    Policy {
        r#type: Some("blocklist".to_string()),
        rule: Some(note.feed.as_bytes().to_vec()),
        action: action.map(|a| a as i32),
        r#match: Some(matched as i32),
        value,
    }
}

/// A name in wire form (length-prefixed labels, then the root).
fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let label = &label.as_bytes()[..label.len().min(63)];
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_described_in_dnstap_policy_fields() {
        let note = PolicyNote {
            stage: Stage::Qname,
            matched: "evil.example.test".into(),
            feed: "malware.txt".into(),
            action: "nxdomain".into(),
        };
        let p = policy(&note);
        assert_eq!(p.r#type.as_deref(), Some("blocklist"));
        assert_eq!(p.rule.as_deref(), Some(&b"malware.txt"[..]));
        assert_eq!(p.action, Some(PolicyAction::Nxdomain as i32));
        assert_eq!(p.r#match, Some(PolicyMatch::Qname as i32));
        assert_eq!(
            p.value.as_deref(),
            Some(&b"\x04evil\x07example\x04test\x00"[..])
        );
        let ip = policy(&PolicyNote {
            stage: Stage::AnswerIp,
            matched: "192.0.2.7/32".into(),
            feed: "ips.txt".into(),
            action: "refused".into(),
        });
        assert_eq!(ip.r#match, Some(PolicyMatch::ResponseIp as i32));
        assert_eq!(ip.value.as_deref(), Some(&[192, 0, 2, 7][..]));
        assert_eq!(ip.action, None, "REFUSED has no dnstap action");
        let ns_name = policy(&PolicyNote {
            stage: Stage::Nsdname,
            matched: "ns1.evil.test".into(),
            feed: "policy.rpz".into(),
            action: "nodata".into(),
        });
        assert_eq!(ns_name.r#match, Some(PolicyMatch::NsName as i32));
        assert_eq!(
            ns_name.value.as_deref(),
            Some(&b"\x03ns1\x04evil\x04test\x00"[..])
        );
        let ns_ip = policy(&PolicyNote {
            stage: Stage::Nsip,
            matched: "198.51.100.0/24".into(),
            feed: "policy.rpz".into(),
            action: "nxdomain".into(),
        });
        assert_eq!(ns_ip.r#match, Some(PolicyMatch::NsIp as i32));
        assert_eq!(ns_ip.value.as_deref(), Some(&[198, 51, 100, 0][..]));
    }

    #[test]
    fn a_note_in_a_task_stays_with_the_task() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let note = |feed: &str| PolicyNote {
            stage: Stage::Qname,
            matched: "x.test".into(),
            feed: feed.into(),
            action: "nxdomain".into(),
        };
        rt.block_on(async {
            let inside = scoped(async {
                note_and_yield(note("task")).await;
                take()
            });
            // The thread's own slot is another one.
            super::note(note("thread"));
            let got = inside.await;
            assert_eq!(got.map(|n| n.feed.to_string()), Some("task".into()));
            assert_eq!(take().map(|n| n.feed.to_string()), Some("thread".into()));
            assert!(take().is_none(), "taken once");
        });
    }

    #[test]
    fn only_policy_sends_only_decided_queries_and_a_full_queue_never_waits() {
        let (tx, rx) = sync_channel(1);
        let tap = Tap {
            tx,
            only_policy: true,
        };
        let client: SocketAddr = "192.0.2.1:5300".parse().unwrap();
        let send = |policy: Option<PolicyNote>| {
            tap.send(Exchange {
                transport: Transport::Udp,
                client,
                server: None,
                query: b"query",
                response: Some(b"response"),
                received: SystemTime::now(),
                policy,
            })
        };
        send(None);
        assert!(rx.try_recv().is_err(), "no decision, not sent");
        let decided = PolicyNote {
            stage: Stage::Qname,
            matched: "x.test".into(),
            feed: "f".into(),
            action: "nxdomain".into(),
        };
        send(Some(decided.clone()));
        // The queue (of one) is full: this one is dropped, not waited for.
        send(Some(decided));
        let event = rx.try_recv().unwrap();
        assert_eq!(event.query, b"query");
        assert_eq!(event.response.as_deref(), Some(&b"response"[..]));
        assert!(rx.try_recv().is_err());
    }

    async fn note_and_yield(n: PolicyNote) {
        super::note(n);
        tokio::task::yield_now().await;
    }
}
