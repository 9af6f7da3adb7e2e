//! The DNS transport: UDP receive loops and TCP connections, both feeding
//! [`Responder::respond`].
//!
//! Answering is pure CPU work on an in-memory snapshot, so each packet is
//! answered inline by the task that received it: no task spawned per packet,
//! no lock held across an await.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::message::{Responder, Transport};

/// Largest UDP datagram read; longer ones arrive cut and answer FORMERR.
const UDP_RECEIVE_BUFFER: usize = 4096;
/// Time allowed to write one TCP response before the connection is dropped.
const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds UDP and TCP on the same address. With port 0, both get the same
/// free port (retrying when TCP finds the UDP port taken).
pub async fn bind(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut last_error = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await?;
        let port = udp.local_addr()?.port();
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

/// Answers datagrams on `socket` until `shutdown` fires.
pub async fn serve_udp(
    socket: Arc<UdpSocket>,
    responder: Arc<Responder>,
    shutdown: CancellationToken,
) {
    let mut buffer = vec![0u8; UDP_RECEIVE_BUFFER];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buffer) => received,
        };
        let (len, peer) = match received {
            Ok(received) => received,
            Err(error) => {
                // E.g. an ICMP error from an earlier send: never fatal.
                tracing::debug!(%error, "udp receive failed");
                continue;
            }
        };
        if let Some(response) = responder.respond(&buffer[..len], Transport::Udp)
            && let Err(error) = socket.send_to(&response.bytes, peer).await
        {
            tracing::debug!(%error, %peer, "udp send failed");
        }
    }
}

/// Accepts TCP connections until `shutdown` fires; at most `max_connections`
/// at once (more are closed at once), each closed after `idle` without a
/// complete query.
pub async fn serve_tcp(
    listener: TcpListener,
    responder: Arc<Responder>,
    shutdown: CancellationToken,
    max_connections: usize,
    idle: Duration,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            responder.metrics.dns_tcp_refused.inc();
            tracing::debug!(%peer, "tcp connection limit reached, closing");
            continue;
        };
        let responder = responder.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_connection(stream, &responder, &shutdown, idle).await {
                tracing::debug!(%error, %peer, "tcp connection ended");
            }
            drop(slot);
        });
    }
}

/// Answers length-prefixed queries on one connection, in order.
async fn serve_connection(
    mut stream: TcpStream,
    responder: &Responder,
    shutdown: &CancellationToken,
    idle: Duration,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut request = Vec::new();
    loop {
        let read = async {
            let len = stream.read_u16().await?;
            request.resize(usize::from(len), 0);
            stream.read_exact(&mut request).await?;
            io::Result::Ok(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            result = tokio::time::timeout(idle, read) => match result {
                Err(_) => return Ok(()), // idle: close quietly
                Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(result) => result?,
            },
        }
        let Some(response) = responder.respond(&request, Transport::Tcp) else {
            continue;
        };
        let mut framed = Vec::with_capacity(response.bytes.len() + 2);
        framed.extend_from_slice(&(response.bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(&response.bytes);
        tokio::time::timeout(TCP_WRITE_TIMEOUT, stream.write_all(&framed))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tcp write timed out"))??;
    }
}
