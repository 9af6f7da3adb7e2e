//! The HTTP transport of the admin API: an accept loop over hyper rather
//! than `axum::serve`, because the admin API must not be held hostage by a
//! slow or greedy client. It adds what `axum::serve` lacks: a deadline for
//! request headers (slowloris), a cap on open connections, an accept loop
//! that survives `accept()` errors, and a bounded graceful drain.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What the transport allows a client (`[admin]` in the settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send complete request headers; then the
    /// connection is closed.
    pub header_read_timeout: Duration,
    /// Open admin connections allowed at once; more are closed at once.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` fires, then stops accepting
/// and lets in-flight requests finish (at most `limits.drain_timeout`, then
/// their connections are closed).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // Fired when the drain runs out: closes the connections still open.
    let close = CancellationToken::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // writev(false): one plain write per response. Admin responses are
    // small (the one large answer, the service list, comes in chunks), and
    // copying the body behind the head cost less than a two-part writev on
    // loopback (+9 % registrations/s on one core).
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .writev(false);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "admin connection limit reached, closing");
            continue;
        };
        // Every response and event goes out at once: with Nagle, a second
        // small write (the next event, a pipelined response) waits for the
        // peer's delayed ACK, up to 40 ms.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "could not set TCP_NODELAY");
        }
        // Who is asking, for handlers that care (discovery by locality).
        let app = app.clone().layer(Extension(ConnectInfo(peer)));
        let service = TowerToHyperService::new(app);
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let close = close.clone();
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => if let Err(error) = ended {
                    tracing::debug!(%error, %peer, "admin connection ended");
                },
                _ = close.cancelled() => {}
            }
            drop(slot);
        });
    }
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        let drain = limits.drain_timeout;
        tracing::warn!("admin requests still running after {drain:?}; closing them");
        close.cancel();
    }
}
