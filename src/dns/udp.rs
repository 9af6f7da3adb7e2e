//! DNS over UDP: one OS thread per socket, several sockets on one port.
//!
//! Each thread owns a socket bound with `SO_REUSEPORT` (the kernel spreads
//! clients across the sockets by address hash), receives up to
//! [`BATCH`] datagrams per `recvmmsg` call, answers them, and sends the
//! answers with one `sendmmsg`. Answering is pure CPU work on in-memory
//! data, so there is nothing to await: an async runtime would only add a
//! readiness round trip per packet. A query to forward is handed to the
//! forwarder ([`super::forward`]) with a handle on the socket, and answered
//! from it later: the thread never waits on an upstream.
//!
//! A thread notices shutdown (its cancelled token) within [`POLL`], the
//! socket's receive timeout.

// The one place unsafe code is allowed: recvmmsg/sendmmsg over libc, each
// block with a SAFETY comment (clippy::undocumented_unsafe_blocks).
#![allow(unsafe_code)]

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio_util::sync::CancellationToken;

use super::answer::MAX_UDP_PAYLOAD;
use super::limit::truncated_reply;
use super::{Handled, Responder, Transport};
use crate::limit::Verdict;

/// Datagrams taken per `recvmmsg` call, at most.
const BATCH: usize = 32;
/// Largest datagram read; longer ones arrive cut and answer FORMERR.
const RECEIVE_BUFFER: usize = 4096;
/// How long a thread waits for a datagram before looking for shutdown.
const POLL: Duration = Duration::from_millis(100);

/// Binds `count` UDP sockets to `addr`, all with `SO_REUSEPORT` so they
/// share its port; a single socket is bound plainly.
///
/// With port 0 the port is first chosen by binding a plain socket, which
/// is then closed: the kernel's free-port search for a `SO_REUSEPORT`
/// socket counts a port held only by other `SO_REUSEPORT` sockets of the
/// same user as free, and could land on a port another program is serving.
/// Between the close and the binds below another program could take the
/// port; the bind then fails and the server reports it.
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    if count <= 1 {
        return Ok(vec![UdpSocket::bind(addr)?]);
    }
    let addr = if addr.port() == 0 {
        UdpSocket::bind(addr)?.local_addr()?
    } else {
        addr
    };
    (0..count)
        .map(|_| {
            let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_reuse_port(true)?;
            socket.bind(&SockAddr::from(addr))?;
            Ok(socket.into())
        })
        .collect()
}

/// Answers datagrams on `socket` until `stop` is cancelled. Runs on its own
/// thread.
pub fn serve(socket: UdpSocket, responder: Arc<Responder>, stop: CancellationToken) {
    if let Err(error) = socket.set_read_timeout(Some(POLL)) {
        tracing::error!(%error, "cannot set a receive timeout; udp thread stops");
        return;
    }
    // Shared with the forwarder, which answers forwarded queries from it.
    let socket = Arc::new(socket);
    let mut batch = Batch::new();
    while !stop.is_cancelled() {
        let received = match batch.receive(&socket) {
            Ok(received) => received,
            Err(error) => {
                // A timeout (look at `stop` again), an interrupted call, or an
                // ICMP error from an earlier send: never fatal.
                if !matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) {
                    tracing::debug!(%error, "udp receive failed");
                }
                continue;
            }
        };
        for slot in 0..received {
            // A bug that panics on some packet must cost that packet, not
            // the thread (and with it UDP service for good).
            let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                batch.answer(slot, &responder, &socket);
            }));
            if answered.is_err() {
                tracing::error!("answering a datagram panicked; dropped it");
                batch.answered[slot] = false;
            }
        }
        batch.send(&socket, received);
    }
}

/// Buffers and message headers for one `recvmmsg`/`sendmmsg` round, built
/// once per thread. The headers point into the buffers, which never move
/// (they are boxed and never resized).
struct Batch {
    requests: Box<[[u8; RECEIVE_BUFFER]]>,
    responses: Vec<Vec<u8>>,
    peers: Box<[libc::sockaddr_storage]>,
    request_iov: Box<[libc::iovec]>,
    response_iov: Box<[libc::iovec]>,
    received: Box<[libc::mmsghdr]>,
    outgoing: Box<[libc::mmsghdr]>,
    /// Which slots have a response to send.
    answered: [bool; BATCH],
}

impl Batch {
    fn new() -> Batch {
        // SAFETY: all-zero is a valid value of these plain C structs.
        let zeroed_storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        // SAFETY: likewise; its pointers are null until set below.
        let zeroed_msg: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        let empty_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut batch = Batch {
            requests: vec![[0u8; RECEIVE_BUFFER]; BATCH].into_boxed_slice(),
            responses: (0..BATCH)
                .map(|_| Vec::with_capacity(usize::from(MAX_UDP_PAYLOAD)))
                .collect(),
            peers: vec![zeroed_storage; BATCH].into_boxed_slice(),
            request_iov: vec![empty_iov; BATCH].into_boxed_slice(),
            response_iov: vec![empty_iov; BATCH].into_boxed_slice(),
            received: vec![zeroed_msg; BATCH].into_boxed_slice(),
            outgoing: vec![zeroed_msg; BATCH].into_boxed_slice(),
            answered: [false; BATCH],
        };
        for slot in 0..BATCH {
            batch.request_iov[slot] = libc::iovec {
                iov_base: batch.requests[slot].as_mut_ptr().cast(),
                iov_len: RECEIVE_BUFFER,
            };
            let header = &mut batch.received[slot].msg_hdr;
            header.msg_iov = &mut batch.request_iov[slot];
            header.msg_iovlen = 1;
            header.msg_name = (&mut batch.peers[slot] as *mut libc::sockaddr_storage).cast();
        }
        batch
    }

    /// Waits (up to the socket's timeout) for at least one datagram and
    /// takes as many as are queued, up to [`BATCH`]. Returns how many.
    fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        for message in self.received.iter_mut() {
            message.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
            message.msg_hdr.msg_flags = 0;
            message.msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the stated sizes.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.received.as_mut_ptr(),
                BATCH as _,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(received as usize)
    }

    /// Answers the datagram in `slot` into its response buffer, or hands
    /// it to the forwarder, which answers it from `socket`.
    fn answer(&mut self, slot: usize, responder: &Responder, socket: &Arc<UdpSocket>) {
        let len = (self.received[slot].msg_len as usize).min(RECEIVE_BUFFER);
        let request = &self.requests[slot][..len];
        let client = peer_ip(&self.peers[slot]);
        let response = &mut self.responses[slot];
        match responder.rate_limit(client) {
            Verdict::Answer => {}
            Verdict::Drop => {
                self.answered[slot] = false;
                return;
            }
            Verdict::Slip => {
                self.answered[slot] = truncated_reply(request, response);
                return;
            }
        }
        self.answered[slot] =
            match responder.respond_into(request, Transport::Udp, client, response) {
                Handled::Answer => true,
                Handled::Drop => false,
                Handled::Forward => match (responder.forwarder(), peer_addr(&self.peers[slot])) {
                    (Some(forwarder), Some(peer)) => forwarder.udp(request, peer, socket, response),
                    _ => false,
                },
            };
    }

    /// Sends the answers of the first `received` slots, each to the peer
    /// its query came from. A datagram the kernel refuses is skipped.
    fn send(&mut self, socket: &UdpSocket, received: usize) {
        let mut count = 0;
        for slot in 0..received {
            if !self.answered[slot] {
                continue;
            }
            let response = &mut self.responses[slot];
            self.response_iov[count] = libc::iovec {
                iov_base: response.as_mut_ptr().cast(),
                iov_len: response.len(),
            };
            let header = &mut self.outgoing[count].msg_hdr;
            header.msg_iov = &mut self.response_iov[count];
            header.msg_iovlen = 1;
            header.msg_name = (&mut self.peers[slot] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = self.received[slot].msg_hdr.msg_namelen;
            count += 1;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: headers `sent..count` point at live buffers.
            let result = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.outgoing[sent..].as_mut_ptr(),
                    (count - sent) as _,
                    0,
                )
            };
            if result < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::debug!(%error, "udp send failed");
                sent += 1; // skip the datagram that failed
            } else {
                sent += result as usize;
            }
        }
    }
}

/// The address a datagram came from (unspecified for a family it cannot
/// be, which no UDP socket receives).
fn peer_ip(peer: &libc::sockaddr_storage) -> IpAddr {
    match i32::from(peer.ss_family) {
        libc::AF_INET => {
            // SAFETY: `ss_family` says the storage holds a `sockaddr_in`,
            // and `sockaddr_storage` is large and aligned enough for it.
            let v4 =
                unsafe { &*(peer as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for a `sockaddr_in6`.
            let v6 =
                unsafe { &*(peer as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr))
        }
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// The address and port a datagram came from, to answer it later.
fn peer_addr(peer: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(peer.ss_family) {
        libc::AF_INET => {
            // SAFETY: as in `peer_ip`.
            let v4 =
                unsafe { &*(peer as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(v4.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as in `peer_ip`.
            let v6 =
                unsafe { &*(peer as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            let port = u16::from_be(v6.sin6_port);
            Some(std::net::SocketAddrV6::new(ip, port, v6.sin6_flowinfo, v6.sin6_scope_id).into())
        }
        _ => None,
    }
}
