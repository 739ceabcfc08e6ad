//! Datagrams in batches: `recvmmsg(2)` takes every query waiting on the
//! socket (up to [`BATCH`]) in one system call, and `sendmmsg(2)` sends the
//! answers the loop wrote for them in one more.
//!
//! Why: on a cached or blocked name the resolver's own work is about a
//! microsecond, and the rest of the core goes to the kernel, most of it
//! per system call (entry, exit, socket lookup). Under load the socket
//! holds many queries at once, so a batch shares that cost among them; a
//! lone query is a batch of one and costs what it did before.
//!
//! tokio's `UdpSocket` has no batched calls, and no maintained crate sends
//! to many destinations in one call (quinn-udp batches receives only, and
//! sets socket options we do not want), so the two calls are made here on
//! the socket's descriptor, through tokio's readiness (`try_io`) so that
//! the runtime's bookkeeping stays right. Elsewhere than Linux a batch is
//! one datagram, through tokio's own calls.

#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per system call.
pub const BATCH: usize = 32;

/// Received datagrams: [`BATCH`] buffers of `slot` bytes each.
pub struct Inbox {
    data: Vec<u8>,
    slot: usize,
    lens: [usize; BATCH],
    sources: [Option<SocketAddr>; BATCH],
    #[cfg(target_os = "linux")]
    names: Vec<libc::sockaddr_storage>,
}

impl Inbox {
    pub fn new(slot: usize) -> Inbox {
        Inbox {
            data: vec![0; slot * BATCH],
            slot,
            lens: [0; BATCH],
            sources: [None; BATCH],
            #[cfg(target_os = "linux")]
            // SAFETY: all zeros is a valid (unspecified) socket address.
            names: vec![unsafe { std::mem::zeroed() }; BATCH],
        }
    }

    /// Wait for datagrams and take as many as are waiting (at least one).
    /// Returns how many; read them with [`Inbox::get`].
    pub async fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        loop {
            socket.readable().await?;
            match socket.try_io(Interest::READABLE, || self.recv_now(socket)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Datagram `i` of the last [`Inbox::recv`] and its sender (`None`
    /// for an address family we do not serve). A datagram longer than a
    /// slot is cut to the slot, as `recv_from` would.
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let start = i * self.slot;
        (
            &self.data[start..start + self.lens[i].min(self.slot)],
            self.sources[i],
        )
    }

    #[cfg(target_os = "linux")]
    fn recv_now(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: all zeros is a valid empty iovec and message header.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let base = self.data.as_mut_ptr();
        for (i, (iov, msg)) in iovs.iter_mut().zip(msgs.iter_mut()).enumerate() {
            point(
                iov,
                msg,
                // SAFETY: slot i lies inside `data` (BATCH slots long).
                (unsafe { base.add(i * self.slot) }, self.slot),
                (
                    (&raw mut self.names[i]).cast(),
                    size_of::<libc::sockaddr_storage>() as libc::socklen_t,
                ),
            );
        }
        // SAFETY: every header points at live buffers of the lengths it
        // states (the data slots, the address storage, its iovec), all
        // owned by `self` or this frame and untouched until the call ends.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, msg) in msgs.iter().enumerate().take(n) {
            self.lens[i] = msg.msg_len as usize;
            let mut storage = socket2::SockAddrStorage::zeroed();
            // SAFETY: the kernel wrote a socket address of `msg_namelen`
            // bytes into `names[i]`; `view_as` targets the same type.
            let address = unsafe {
                *storage.view_as::<libc::sockaddr_storage>() = self.names[i];
                socket2::SockAddr::new(storage, msg.msg_hdr.msg_namelen)
            };
            self.sources[i] = address.as_socket();
        }
        Ok(n)
    }

    #[cfg(not(target_os = "linux"))]
    fn recv_now(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let (len, src) = socket.try_recv_from(&mut self.data[..self.slot])?;
        self.lens[0] = len;
        self.sources[0] = Some(src);
        Ok(1)
    }
}

/// Point message header `msg` at one buffer (through `iov`) and one
/// socket address: `(pointer, length)` each.
#[cfg(target_os = "linux")]
fn point(
    iov: &mut libc::iovec,
    msg: &mut libc::mmsghdr,
    data: (*mut u8, usize),
    name: (*mut libc::c_void, libc::socklen_t),
) {
    iov.iov_base = data.0.cast();
    iov.iov_len = data.1;
    msg.msg_hdr.msg_name = name.0;
    msg.msg_hdr.msg_namelen = name.1;
    msg.msg_hdr.msg_iov = iov;
    msg.msg_hdr.msg_iovlen = 1;
}

/// Answers written in the loop, sent together by [`Outbox::flush`].
pub struct Outbox {
    data: Vec<u8>,
    slot: usize,
    lens: Vec<usize>,
    destinations: Vec<socket2::SockAddr>,
}

impl Outbox {
    pub fn new(slot: usize) -> Outbox {
        Outbox {
            data: vec![0; slot * BATCH],
            slot,
            lens: Vec::with_capacity(BATCH),
            destinations: Vec::with_capacity(BATCH),
        }
    }

    /// The buffer for the next answer; [`Outbox::push`] keeps it. One
    /// [`Inbox`] batch never holds more answers than there are slots.
    pub fn next_slot(&mut self) -> &mut [u8] {
        let start = self.lens.len() * self.slot;
        &mut self.data[start..start + self.slot]
    }

    /// Keep the first `len` bytes written to [`Outbox::next_slot`] for `to`.
    pub fn push(&mut self, len: usize, to: SocketAddr) {
        debug_assert!(self.lens.len() < BATCH);
        self.lens.push(len);
        self.destinations.push(to.into());
    }

    /// Send everything kept, then empty. An answer the kernel refuses
    /// (an unreachable client) is logged at debug and skipped; a full
    /// send buffer waits until the socket can take more.
    pub async fn flush(&mut self, socket: &UdpSocket) {
        let mut sent = 0;
        while sent < self.lens.len() {
            match socket.try_io(Interest::WRITABLE, || self.send_now(socket, sent)) {
                Ok(n) => sent += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(error) = socket.writable().await {
                        tracing::debug!(%error, "UDP socket not writable");
                        break;
                    }
                }
                Err(error) => {
                    let client = self.destinations[sent].as_socket();
                    tracing::debug!(%error, ?client, "failed to send a UDP response");
                    sent += 1;
                }
            }
        }
        self.lens.clear();
        self.destinations.clear();
    }

    /// Send answers `from..`; returns how many the kernel took.
    #[cfg(target_os = "linux")]
    fn send_now(&self, socket: &UdpSocket, from: usize) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let count = self.lens.len() - from;
        // SAFETY: all zeros is a valid empty iovec and message header.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (k, (iov, msg)) in iovs.iter_mut().zip(msgs.iter_mut()).take(count).enumerate() {
            let i = from + k;
            let to = &self.destinations[i];
            // The kernel only reads through these (sendmmsg's `*mut` is
            // the shared header type's).
            point(
                iov,
                msg,
                (self.data[i * self.slot..].as_ptr().cast_mut(), self.lens[i]),
                (to.as_ptr().cast_mut().cast(), to.len()),
            );
        }
        // SAFETY: the headers point at `count` answers and addresses owned
        // by `self`, which the kernel only reads.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    #[cfg(not(target_os = "linux"))]
    fn send_now(&self, socket: &UdpSocket, from: usize) -> io::Result<usize> {
        let start = from * self.slot;
        let to = self.destinations[from]
            .as_socket()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        socket.try_send_to(&self.data[start..start + self.lens[from]], to)?;
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_is_taken_in_one_batch_and_answered_in_one() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        // More than one batch, of different lengths.
        for i in 0..(BATCH + 5) {
            client.send_to(&vec![i as u8; i + 1], to).unwrap();
        }
        let mut inbox = Inbox::new(64);
        let mut outbox = Outbox::new(64);
        let mut seen = 0;
        while seen < BATCH + 5 {
            let n = inbox.recv(&server).await.unwrap();
            assert!((1..=BATCH).contains(&n));
            for i in 0..n {
                let (packet, src) = inbox.get(i);
                assert_eq!(packet, vec![seen as u8; seen + 1]);
                assert_eq!(src, Some(client.local_addr().unwrap()));
                let slot = outbox.next_slot();
                slot[0] = packet[0];
                outbox.push(1, src.unwrap());
                seen += 1;
            }
            outbox.flush(&server).await;
        }
        for i in 0..(BATCH + 5) {
            assert_eq!(answer(&client), (vec![i as u8], to), "answer {i}");
        }
    }

    #[tokio::test]
    async fn ipv6_senders_are_read_and_answered() {
        // A machine without IPv6 on loopback cannot run this; say so.
        let Ok(server) = UdpSocket::bind("[::1]:0").await else {
            eprintln!("no IPv6 loopback here: ipv6_senders_are_read_and_answered not run");
            return;
        };
        let client = std::net::UdpSocket::bind("[::1]:0").unwrap();
        client.send_to(b"q6", server.local_addr().unwrap()).unwrap();
        let mut inbox = Inbox::new(16);
        assert_eq!(inbox.recv(&server).await.unwrap(), 1);
        let (packet, src) = inbox.get(0);
        assert_eq!(packet, b"q6");
        assert_eq!(src, Some(client.local_addr().unwrap()));
        let mut outbox = Outbox::new(16);
        outbox.next_slot()[..2].copy_from_slice(b"a6");
        outbox.push(2, src.unwrap());
        outbox.flush(&server).await;
        assert_eq!(
            answer(&client),
            (b"a6".to_vec(), server.local_addr().unwrap())
        );
    }

    /// The next datagram the client gets, and who sent it (5 s at most).
    fn answer(client: &std::net::UdpSocket) -> (Vec<u8>, std::net::SocketAddr) {
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 64];
        let (len, from) = client.recv_from(&mut buf).unwrap();
        (buf[..len].to_vec(), from)
    }

    #[tokio::test]
    async fn a_long_datagram_is_cut_to_the_slot() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .send_to(&[7u8; 100], server.local_addr().unwrap())
            .unwrap();
        let mut inbox = Inbox::new(16);
        assert_eq!(inbox.recv(&server).await.unwrap(), 1);
        assert_eq!(inbox.get(0).0, &[7u8; 16]);
    }

    #[tokio::test]
    async fn an_unreachable_answer_is_skipped_and_the_rest_sent() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut outbox = Outbox::new(16);
        // An IPv6 destination from an IPv4 socket: the kernel refuses it.
        outbox.next_slot()[0] = 1;
        outbox.push(1, "[::1]:53".parse().unwrap());
        outbox.next_slot()[0] = 2;
        outbox.push(1, client.local_addr().unwrap());
        outbox.flush(&server).await;
        assert_eq!(answer(&client).0, [2]);
    }
}
