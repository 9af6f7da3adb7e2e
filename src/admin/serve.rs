//! The HTTP transport of the admin API: an accept loop over hyper rather
//! than `axum::serve`, because the admin API must not be held hostage by a
//! slow or greedy client. It adds what `axum::serve` lacks: a deadline for
//! request headers (slowloris), caps on open connections (in all and per
//! source address, so that one client cannot hold every slot), an idle cap
//! (a connection that moves no byte is closed), refusals logged at most
//! once per ten seconds, an accept loop that survives `accept()` errors,
//! and a bounded graceful drain.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::limit::{LogThrottle, PerSource};
use crate::metrics::Metrics;

/// What the transport allows a client (`[admin]` in the settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send complete request headers; then the
    /// connection is closed.
    pub header_read_timeout: Duration,
    /// Open admin connections allowed at once; more are closed at once.
    pub max_connections: usize,
    /// Open admin connections one source address may hold.
    pub max_connections_per_source: usize,
    /// A connection that moves no byte either way this long is closed
    /// (an idle keep-alive, a stalled reader); `/v1/events` streams send a
    /// comment more often than this.
    pub idle_timeout: Duration,
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
    metrics: Arc<Metrics>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_source = PerSource::default();
    let mut refusals = LogThrottle::new();
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
        let Some(held) = per_source.take(peer.ip(), limits.max_connections_per_source) else {
            metrics.admin_refused_per_source.inc();
            if let Some(unlogged) = refusals.allow() {
                tracing::warn!(%peer, unlogged, "admin connections per source reached, closing");
            }
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.admin_refused_limit.inc();
            if let Some(unlogged) = refusals.allow() {
                tracing::warn!(%peer, unlogged, "admin connection limit reached, closing");
            }
            continue;
        };
        // Every response and event goes out at once: with Nagle, a second
        // small write (the next event, a pipelined response) waits for the
        // peer's delayed ACK, up to 40 ms.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "could not set TCP_NODELAY");
        }
        let (stream, activity) = Watched::new(stream);
        // Who is asking, for handlers that care (discovery by locality).
        let app = app.clone().layer(Extension(ConnectInfo(peer)));
        let service = TowerToHyperService::new(app);
        let connection: Connection = match &tls {
            None => {
                let plain = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                Box::pin(async move { plain.await.map_err(Into::into) })
            }
            Some(acceptor) => Box::pin(serve_tls(
                acceptor.clone(),
                stream,
                service,
                http.clone(),
                graceful.watcher(),
                limits.header_read_timeout,
            )),
        };
        let close = close.clone();
        let metrics = metrics.clone();
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => if let Err(error) = ended {
                    tracing::debug!(%error, %peer, "admin connection ended");
                },
                _ = activity.idle_for(idle_timeout) => {
                    metrics.admin_idle_closed.inc();
                    tracing::debug!(%peer, "admin connection idle, closing");
                }
                _ = close.cancelled() => {}
            }
            drop((slot, held));
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

/// One connection being served, to its end or its error.
type Connection = Pin<
    Box<
        dyn std::future::Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>
            + Send,
    >,
>;

/// Serves one connection over TLS: the handshake (within `handshake`, as
/// the request headers must come within it: a client that opens and waits
/// holds a slot no longer), then HTTP as on a plain connection. A client
/// without a certificate the CA signed, when `admin.tls.client_ca` is set,
/// fails the handshake and never reaches HTTP.
async fn serve_tls<S>(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: Watched,
    service: S,
    http: hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    handshake: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::time::timeout(handshake, acceptor.accept(stream))
        .await
        .map_err(|_| format!("TLS handshake not done within {handshake:?}"))??;
    watcher
        .watch(http.serve_connection(TokioIo::new(stream), service))
        .await?;
    Ok(())
}

/// When a connection last moved a byte, in milliseconds since it opened.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Returns once no byte has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = self.opened.elapsed().saturating_sub(last);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    }
}

/// A connection's stream that notes every byte read or written in its
/// [`Activity`].
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    fn new(stream: TcpStream) -> (Watched, Arc<Activity>) {
        let activity = Arc::new(Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        let watched = Watched {
            stream,
            activity: activity.clone(),
        };
        (watched, activity)
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
