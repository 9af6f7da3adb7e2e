//! Binding the DNS port, and DNS over TCP; both transports feed
//! [`Responder::respond_into`]. UDP is served by threads of its own
//! ([`super::udp`]).
//!
//! Answering is pure CPU work on an in-memory snapshot, so each query is
//! answered inline by the task that read it: no task spawned per query, no
//! lock held across an await. A query to forward is awaited inline too,
//! after the answers before it are written: the connection's later queries
//! wait for it, no other connection does.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{Handled, Responder, Transport};

/// Bytes read from a TCP connection at a time.
const TCP_READ_CHUNK: usize = 16 * 1024;
/// Responses buffered before they are written, when many queries arrive at
/// once.
const TCP_FLUSH_AT: usize = 64 * 1024;

/// Binds `udp_sockets` UDP sockets (see [`super::udp::bind`]) and a TCP
/// listener on the same address. With port 0, all get the same free port
/// (retrying when TCP finds the UDP port taken).
pub async fn bind(
    addr: SocketAddr,
    udp_sockets: usize,
) -> io::Result<(Vec<std::net::UdpSocket>, TcpListener)> {
    let mut last_error = None;
    for _ in 0..20 {
        let udp = super::udp::bind(addr, udp_sockets)?;
        let port = udp[0].local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) if addr.port() == 0 && error.kind() == io::ErrorKind::AddrInUse => {
                last_error = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free port for UDP and TCP")))
}

/// What a TCP client may hold (`[dns]` in the settings).
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Connections open at once, from everyone.
    pub max_connections: usize,
    /// Connections open at once from one source address.
    pub per_source: usize,
    /// Time without a complete query before a connection is closed.
    pub idle: Duration,
    /// Time allowed to write one batch of answers.
    pub write: Duration,
    /// Queries one connection may ask; it is closed after the last answer.
    pub max_queries: u64,
    /// How long a connection may live, however busy.
    pub max_lifetime: Duration,
}

/// Accepts TCP connections until `shutdown` fires, within `limits`: more
/// connections than allowed, from everyone or from one source, are closed
/// at once.
pub async fn serve_tcp(
    listener: TcpListener,
    responder: Arc<Responder>,
    shutdown: CancellationToken,
    limits: TcpLimits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_source = crate::limit::PerSource::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // ECONNABORTED, EMFILE, ...: never stop listening. A short
                // pause lets descriptors free up instead of spinning.
                tracing::warn!(%error, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(held) = per_source.take(peer.ip(), limits.per_source) else {
            responder.metrics().dns_tcp_refused.inc();
            tracing::debug!(%peer, "tcp connections per source reached, closing");
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            responder.metrics().dns_tcp_refused.inc();
            tracing::debug!(%peer, "tcp connection limit reached, closing");
            continue;
        };
        let responder = responder.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let connection = serve_connection(stream, peer, &responder, &shutdown, limits);
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "tcp connection ended");
            }
            drop((slot, held));
        });
    }
}

/// Answers length-prefixed queries on one connection, in order. Reads
/// whatever has arrived, answers every complete query in it, and writes the
/// answers in one go: pipelined queries cost a read and a write per batch,
/// not per query. The connection is closed after `limits.idle` without a
/// complete query (however slowly bytes trickle in; an empty message is no
/// query), when a write takes longer than `limits.write`, after
/// `limits.max_queries` queries, and after `limits.max_lifetime`.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    responder: &Responder,
    shutdown: &CancellationToken,
    limits: TcpLimits,
) -> io::Result<()> {
    let TcpLimits { idle, write, .. } = limits;
    let end_of_life = tokio::time::Instant::now() + limits.max_lifetime;
    let mut queries = 0u64;
    stream.set_nodelay(true)?;
    let mut input: Vec<u8> = Vec::with_capacity(TCP_READ_CHUNK);
    let mut output: Vec<u8> = Vec::new();
    let mut response = Vec::new();
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        let mut consumed = 0;
        while queries < limits.max_queries
            && let Some(len) = input
                .get(consumed..consumed + 2)
                .map(|prefix| usize::from(u16::from_be_bytes([prefix[0], prefix[1]])))
        {
            let Some(request) = input.get(consumed + 2..consumed + 2 + len) else {
                break;
            };
            consumed += 2 + len;
            if request.is_empty() {
                continue; // not a query: it keeps nothing alive
            }
            deadline = tokio::time::Instant::now() + idle;
            queries += 1;
            match responder.respond_into(request, Transport::Tcp, peer.ip(), &mut response) {
                Handled::Answer => {}
                Handled::Drop => continue,
                Handled::Forward => {
                    let Some(forwarder) = responder.forwarder() else {
                        continue;
                    };
                    if !output.is_empty() {
                        write_all(&mut stream, &output, write).await?;
                        output.clear();
                    }
                    response = forwarder.tcp(request).await;
                    // The idle time starts again once the upstreams answered.
                    deadline = tokio::time::Instant::now() + idle;
                }
            }
            output.extend_from_slice(&(response.len() as u16).to_be_bytes());
            output.extend_from_slice(&response);
            if output.len() >= TCP_FLUSH_AT {
                write_all(&mut stream, &output, write).await?;
                output.clear();
            }
        }
        input.drain(..consumed);
        if !output.is_empty() {
            write_all(&mut stream, &output, write).await?;
            output.clear();
        }
        if queries >= limits.max_queries || tokio::time::Instant::now() >= end_of_life {
            return Ok(()); // its answers are out: the client reconnects
        }
        // Appends to `input` (into reserved, unfilled capacity).
        input.reserve(TCP_READ_CHUNK);
        let until = deadline.min(end_of_life);
        let read = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            read = tokio::time::timeout_at(until, stream.read_buf(&mut input)) => read,
        };
        match read {
            Err(_) => return Ok(()), // idle: close quietly
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
        }
    }
}

async fn write_all(stream: &mut TcpStream, bytes: &[u8], timeout: Duration) -> io::Result<()> {
    tokio::time::timeout(timeout, stream.write_all(bytes))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tcp write timed out"))?
}
