//! A client of etcd's v3 gRPC API, on hyper's HTTP/2 ([`super::grpc`]
//! holds the messages): the cluster's client URLs with failover, one
//! shared HTTP/2 connection per endpoint (and one of its own for the
//! watch), request and dial timeouts, user/password authentication and
//! TLS.
//!
//! Every call has one deadline, the request timeout, whatever it tries
//! within it. A call that cannot connect to an endpoint, or whose
//! connection breaks, moves on to the next endpoint, and so do the calls
//! after it (the endpoint that failed is no longer the preferred one). One
//! that got no answer in time is tried elsewhere only when it is safe to
//! send twice ([`Retry::Always`]: reads, keep-alives, puts of the same
//! value); a write that may have been applied fails instead, and the
//! caller decides (the store's transactions compare revisions, so a write
//! sent again cannot apply twice).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper::header::{CONTENT_TYPE, TE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::grpc::{self, Rpc};
use super::wire::AuthenticateRequest;

/// One of the cluster's client URLs: `http://host:port` or
/// `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `http://HOST:PORT` or `https://HOST:PORT` (the port defaults
    /// to 2379; IPv6 in brackets).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{url:?}: an etcd endpoint is http:// or https://")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("{url:?}: an etcd endpoint has no path"));
        }
        let authority = uri.authority().map_or("", |a| a.as_str());
        let after_host = authority
            .rsplit_once(']')
            .map_or(authority, |(_, rest)| rest);
        let port = match after_host.rsplit_once(':') {
            None => 2379,
            Some((_, port)) => port
                .parse::<u16>()
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| format!("{url:?}: the port is not 1-65535"))?,
        };
        Ok(Endpoint {
            tls,
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
        })
    }

    /// `host:port`, for the `Host` header (IPv6 in brackets).
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

/// A user and password for etcd's authentication.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, password hidden)", self.username)
    }
}

pub(crate) use tls::TlsFiles;

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub(crate) struct ClientSettings {
    pub endpoints: Vec<Endpoint>,
    /// The longest any call may take, every endpoint tried included.
    pub request_timeout: Duration,
    /// The longest a connection may take to open (TCP and TLS).
    pub dial_timeout: Duration,
    pub credentials: Option<Credentials>,
    pub tls: TlsFiles,
}

/// Whether a call may be sent again after it got no answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads, keep-alives, and writes that do the same when applied twice.
    Always,
    /// Writes that must not be sent twice blindly: tried again only when
    /// they certainly were not delivered (the connection failed first).
    IfNotSent,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EtcdError {
    /// No endpoint could be reached (or every one broke the connection).
    #[error("cannot reach etcd ({0})")]
    Unreachable(String),
    /// No answer within the request timeout.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// etcd answered with an error: `code` is the gRPC status code.
    #[error("etcd: {message}")]
    Refused { code: i32, message: String },
    /// An answer that does not parse.
    #[error("etcd sent an answer that could not be read: {0}")]
    BadResponse(String),
}

/// gRPC status codes that matter here.
pub(crate) mod code {
    pub(crate) const INVALID_ARGUMENT: i32 = 3;
    pub(crate) const OUT_OF_RANGE: i32 = 11;
    pub(crate) const UNAVAILABLE: i32 = 14;
    pub(crate) const UNAUTHENTICATED: i32 = 16;
}

impl EtcdError {
    /// The revision asked for was compacted away.
    pub(crate) fn is_compacted(&self) -> bool {
        matches!(self, EtcdError::Refused { code, message }
            if *code == code::OUT_OF_RANGE || message.contains("compacted"))
    }

    /// etcd says the token is missing or no longer valid: authenticate
    /// again and retry.
    fn wants_token(&self) -> bool {
        matches!(self, EtcdError::Refused { code, message }
            if *code == code::UNAUTHENTICATED
                || (*code == code::INVALID_ARGUMENT
                    && (message.contains("user name is empty")
                        // A token from before a user or role changed.
                        || message.contains("revision of auth store is old"))))
    }
}

/// How one attempt on one endpoint ended.
#[derive(Debug)]
enum Failure {
    /// The request never left: the connection could not be opened.
    NotSent(String),
    /// The connection broke after the request was written.
    Broken(String),
    /// etcd answered with an error.
    Refused(EtcdError),
    BadResponse(String),
}

/// A cheap handle on one cluster's connections.
#[derive(Clone)]
pub(crate) struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<Pooled>,
    /// Where the next call starts: moved past an endpoint that failed.
    preferred: AtomicUsize,
    request_timeout: Duration,
    dial_timeout: Duration,
    credentials: Option<Credentials>,
    token: RwLock<Option<Arc<str>>>,
    authenticating: tokio::sync::Mutex<()>,
    /// For https endpoints (offering `h2` by ALPN).
    tls: Option<tokio_rustls::TlsConnector>,
    /// A client certificate is configured.
    client_certificate: bool,
}

/// One endpoint and its connection.
struct Pooled {
    endpoint: Endpoint,
    /// The HTTP/2 connection calls share, once opened.
    h2: tokio::sync::Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
}

impl Pooled {
    /// Drops the HTTP/2 connection, unless a call is opening a new one.
    fn forget_h2(&self) {
        if let Ok(mut h2) = self.h2.try_lock() {
            *h2 = None;
        }
    }
}

/// A streaming answer (the watch) with the task driving its connection,
/// which stops when this is dropped.
pub(crate) struct Stream {
    pub body: Incoming,
    /// The endpoint that answered.
    pub endpoint: Endpoint,
    _driver: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Client {
    /// A client of the cluster at `settings.endpoints`; fails only on TLS
    /// files that cannot be read. Connects lazily.
    pub(crate) fn new(settings: ClientSettings) -> Result<Client, String> {
        let tls = if settings.endpoints.iter().any(|e| e.tls) {
            let mut config = tls::config(&settings.tls)?;
            config.alpn_protocols = vec![b"h2".to_vec()];
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        let endpoints = settings
            .endpoints
            .into_iter()
            .map(|endpoint| Pooled {
                endpoint,
                h2: tokio::sync::Mutex::new(None),
            })
            .collect();
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                preferred: AtomicUsize::new(0),
                request_timeout: settings.request_timeout,
                dial_timeout: settings.dial_timeout,
                credentials: settings.credentials,
                token: RwLock::new(None),
                authenticating: tokio::sync::Mutex::new(()),
                tls,
                client_certificate: settings.tls.cert.is_some(),
            }),
        })
    }

    /// The request timeout every call is bounded by.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// `request` (whose type names the call), within the request timeout,
    /// failing over between endpoints as `retry` allows.
    pub(crate) async fn call<Q: Rpc>(
        &self,
        request: &Q,
        retry: Retry,
    ) -> Result<Q::Answer, EtcdError> {
        let deadline = Instant::now() + self.inner.request_timeout;
        let message = self
            .exchange(Q::PATH, request.body(), retry, deadline)
            .await?;
        Q::answer(message).map_err(|e| EtcdError::BadResponse(format!("{}: {e}", Q::PATH)))
    }

    /// The answer's message to the call `path`, trying endpoints in turn
    /// from the preferred one until `deadline`.
    async fn exchange(
        &self,
        path: &str,
        body: Bytes,
        retry: Retry,
        deadline: Instant,
    ) -> Result<Bytes, EtcdError> {
        let inner = &self.inner;
        let count = inner.endpoints.len();
        let mut reauthenticated = false;
        let mut last: Option<EtcdError> = None;
        // Counted from where this call started: `avoid` moves the shared
        // preference as endpoints fail, and reading it again would skip some.
        let start = inner.preferred.load(Ordering::Relaxed);
        let mut attempt = 0;
        while attempt < 2 * count {
            let index = (start + attempt % count) % count;
            let pooled = &inner.endpoints[index];
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // A read that hangs on one member leaves time for another.
            let limit = match retry {
                Retry::Always if attempt + 1 < count => {
                    left.min((inner.request_timeout / 2).max(Duration::from_millis(500)))
                }
                _ => left,
            };
            let token = self.token().await?;
            let outcome =
                tokio::time::timeout(limit, self.grpc_attempt(pooled, path, &body, &token)).await;
            if outcome.is_err() {
                // No answer in time: the connection may be dead without
                // knowing it; dial afresh next time.
                pooled.forget_h2();
            }
            let failure = match outcome {
                Ok(Ok(bytes)) => return Ok(bytes),
                Ok(Err(failure)) => failure,
                Err(_) => {
                    last = Some(EtcdError::Timeout(inner.request_timeout));
                    self.avoid(index);
                    if retry == Retry::IfNotSent {
                        break;
                    }
                    attempt += 1;
                    continue;
                }
            };
            match failure {
                Failure::Refused(error) if error.wants_token() && !reauthenticated => {
                    reauthenticated = true;
                    self.authenticate(token.as_deref(), deadline).await?;
                    continue; // the same endpoint again, with a fresh token
                }
                Failure::Refused(error) => {
                    let no_leader = matches!(&error, EtcdError::Refused { code, message }
                        if *code == code::UNAVAILABLE && message.contains("no leader"));
                    let unavailable = matches!(&error, EtcdError::Refused { code, .. }
                        if *code == code::UNAVAILABLE);
                    if no_leader || (unavailable && retry == Retry::Always) {
                        self.avoid(index);
                        last = Some(error);
                        attempt += 1;
                        continue;
                    }
                    return Err(error);
                }
                Failure::BadResponse(reason) => return Err(EtcdError::BadResponse(reason)),
                Failure::NotSent(reason) => {
                    last = Some(self.unreachable(&pooled.endpoint, &reason));
                }
                Failure::Broken(reason) => {
                    last = Some(self.unreachable(&pooled.endpoint, &reason));
                    if retry == Retry::IfNotSent {
                        self.avoid(index);
                        return Err(last.expect("just set"));
                    }
                }
            }
            self.avoid(index);
            attempt += 1;
        }
        Err(last.unwrap_or(EtcdError::Timeout(inner.request_timeout)))
    }

    /// `endpoint` could not be reached, or closed the connection, for
    /// `reason`. Over TLS without a client certificate, a member that asks
    /// for one closes the connection after the handshake, which reads like
    /// any broken connection: the error says so.
    fn unreachable(&self, endpoint: &Endpoint, reason: &str) -> EtcdError {
        let hint = if endpoint.tls && !self.inner.client_certificate {
            " (no store.etcd.cert is set: does etcd ask for a client certificate?)"
        } else {
            ""
        };
        EtcdError::Unreachable(format!("{endpoint}: {reason}{hint}"))
    }

    /// Drops the token, so that the next call logs in again (etcd refused
    /// the watch with it).
    pub(crate) fn forget_token(&self) {
        if self.inner.credentials.is_some() {
            *self.inner.token.write().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Moves the preferred endpoint past `endpoint`: its watch failed.
    pub(crate) fn avoid_endpoint(&self, endpoint: &Endpoint) {
        if let Some(index) = self
            .inner
            .endpoints
            .iter()
            .position(|pooled| &pooled.endpoint == endpoint)
        {
            self.avoid(index);
        }
    }

    /// Moves the preferred endpoint past `index`, unless another call
    /// already moved it.
    fn avoid(&self, index: usize) {
        let count = self.inner.endpoints.len();
        let _ = self.inner.preferred.compare_exchange(
            index,
            (index + 1) % count,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// One gRPC call on `pooled`'s HTTP/2 connection (opened first when
    /// there is none, or it closed): the answer's message. A connection
    /// that broke is dropped, so the next call dials afresh.
    async fn grpc_attempt(
        &self,
        pooled: &Pooled,
        path: &str,
        body: &Bytes,
        token: &Option<Arc<str>>,
    ) -> Result<Bytes, Failure> {
        let outcome = self.grpc_call(pooled, path, body, token).await;
        if let Err(Failure::Broken(_)) = outcome {
            pooled.forget_h2();
        }
        outcome
    }

    async fn grpc_call(
        &self,
        pooled: &Pooled,
        path: &str,
        body: &Bytes,
        token: &Option<Arc<str>>,
    ) -> Result<Bytes, Failure> {
        let mut sender = self.h2(pooled).await?;
        let request = grpc_request(&pooled.endpoint, path, body.clone(), token);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::Broken(causes(&e)))?;
        let (head, body) = response.into_parts();
        let trailers_only = answer_head(path, &head)?;
        let collected = body
            .collect()
            .await
            .map_err(|e| Failure::Broken(format!("the answer was cut short: {}", causes(&e))))?;
        let status = trailers_only.or_else(|| collected.trailers().and_then(grpc::status));
        match status {
            Some((0, _)) => {}
            Some((code, message)) => {
                let message = message.trim_start_matches("etcdserver: ").to_string();
                return Err(Failure::Refused(EtcdError::Refused { code, message }));
            }
            None => return Err(Failure::Broken(format!("{path}: no grpc-status"))),
        }
        grpc::message(&collected.to_bytes()).map_err(Failure::BadResponse)
    }

    /// `pooled`'s HTTP/2 connection, opened when there is none or the one
    /// there closed.
    async fn h2(&self, pooled: &Pooled) -> Result<http2::SendRequest<Full<Bytes>>, Failure> {
        let mut shared = pooled.h2.lock().await;
        if let Some(sender) = shared.as_mut()
            && !sender.is_closed()
            && sender.ready().await.is_ok()
        {
            return Ok(sender.clone());
        }
        let sender = self
            .within_dial_timeout(async {
                let stream = self.open(&pooled.endpoint).await?;
                handshake_h2(stream).await.map(|(sender, _driver)| sender)
            })
            .await
            .map_err(Failure::NotSent)?;
        *shared = Some(sender.clone());
        Ok(sender)
    }

    /// A stream to `endpoint`: TCP, then TLS for an https endpoint.
    async fn open(&self, endpoint: &Endpoint) -> Result<Box<dyn Io>, String> {
        let stream = connect(endpoint).await?;
        match (&self.inner.tls, endpoint.tls) {
            (Some(connector), true) => {
                let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
                    .map_err(|e| format!("{}: {e}", endpoint.host))?;
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                Ok(Box::new(stream))
            }
            _ => Ok(Box::new(stream)),
        }
    }

    /// `dial`'s outcome, or a failure once the dial timeout has passed.
    async fn within_dial_timeout<T>(
        &self,
        dial: impl Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        tokio::time::timeout(self.inner.dial_timeout, dial)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no connection within {:?} (store.etcd.dial_timeout)",
                    self.inner.dial_timeout
                ))
            })
    }

    /// The token to send, authenticating first when there are credentials
    /// and no token yet. etcd's refusal of the credentials fails the call:
    /// sent without a token, it would fail for a reason that misleads (with
    /// a client certificate, etcd would take its CommonName for the user).
    async fn token(&self) -> Result<Option<Arc<str>>, EtcdError> {
        if self.inner.credentials.is_none() {
            return Ok(None);
        }
        if let Some(token) = self.current_token() {
            return Ok(Some(token));
        }
        let deadline = Instant::now() + self.inner.request_timeout;
        match self.authenticate(None, deadline).await {
            Err(refused @ (EtcdError::Refused { .. } | EtcdError::BadResponse(_))) => Err(refused),
            // Unreachable: the call itself says so.
            _ => Ok(self.current_token()),
        }
    }

    fn current_token(&self) -> Option<Arc<str>> {
        self.inner
            .token
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Gets a fresh token, unless another call already replaced `stale`.
    async fn authenticate(&self, stale: Option<&str>, deadline: Instant) -> Result<(), EtcdError> {
        let Some(credentials) = &self.inner.credentials else {
            return Ok(());
        };
        let _one_at_a_time = self.inner.authenticating.lock().await;
        let current = self.current_token();
        if current.as_deref() != stale && current.is_some() {
            return Ok(());
        }
        let request = AuthenticateRequest {
            name: credentials.username.clone(),
            password: credentials.password.clone(),
        };
        let body = request.body();
        // Without a token: a fresh exchange that does not come back here.
        let inner = &self.inner;
        let mut last = EtcdError::Timeout(inner.request_timeout);
        let count = inner.endpoints.len();
        let start = inner.preferred.load(Ordering::Relaxed);
        for attempt in 0..count {
            let index = (start + attempt) % count;
            let left = deadline.saturating_duration_since(Instant::now());
            // A member that hangs leaves time for the others.
            let limit = if attempt + 1 < count {
                left.min((inner.request_timeout / 2).max(Duration::from_millis(500)))
            } else {
                left
            };
            let pooled = &inner.endpoints[index];
            let path = AuthenticateRequest::PATH;
            let outcome =
                tokio::time::timeout(limit, self.grpc_attempt(pooled, path, &body, &None)).await;
            last = match outcome {
                Ok(Ok(message)) => {
                    let answer = AuthenticateRequest::answer(message)
                        .map_err(|e| EtcdError::BadResponse(format!("{path}: {e}")))?;
                    *inner.token.write().unwrap_or_else(|e| e.into_inner()) =
                        Some(Arc::from(answer.token));
                    return Ok(());
                }
                Ok(Err(Failure::Refused(error @ EtcdError::Refused { code, .. })))
                    if code == code::UNAVAILABLE =>
                {
                    error
                }
                Ok(Err(Failure::Refused(error))) => return Err(error),
                Ok(Err(Failure::BadResponse(reason))) => {
                    return Err(EtcdError::BadResponse(reason));
                }
                Ok(Err(Failure::NotSent(reason) | Failure::Broken(reason))) => {
                    self.unreachable(&pooled.endpoint, &reason)
                }
                Err(_) => EtcdError::Timeout(inner.request_timeout),
            };
            self.avoid(index);
        }
        Err(last)
    }

    /// The call `path` with `body`, on a connection of its own, returning
    /// once the answer's head is in (within the request timeout): for the
    /// watch, whose answer is a stream that lasts as long as the
    /// connection. Tries each endpoint in turn from the preferred one.
    pub(crate) async fn stream(&self, path: &str, body: Bytes) -> Result<Stream, EtcdError> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.request_timeout;
        let count = inner.endpoints.len();
        let mut last = EtcdError::Timeout(inner.request_timeout);
        let mut reauthenticated = false;
        let start = inner.preferred.load(Ordering::Relaxed);
        let mut attempt = 0;
        while attempt < count {
            let index = (start + attempt) % count;
            let endpoint = &inner.endpoints[index].endpoint;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let token = self.token().await?;
            let open = async {
                let (mut sender, driver) = self
                    .within_dial_timeout(async {
                        let stream = self.open(endpoint).await?;
                        handshake_h2(stream).await
                    })
                    .await
                    .map_err(Failure::NotSent)?;
                let driver = AbortOnDrop(driver);
                let mut request = grpc_request(endpoint, path, body.clone(), &token);
                // A member cut off from the others ends the watch ("no
                // leader") instead of going quiet, so it moves to another.
                request
                    .headers_mut()
                    .insert("hasleader", hyper::header::HeaderValue::from_static("true"));
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| Failure::Broken(causes(&e)))?;
                let (head, body) = response.into_parts();
                match answer_head(path, &head)? {
                    Some((code, message)) if code != 0 => {
                        Err(Failure::Refused(EtcdError::Refused { code, message }))
                    }
                    _ => Ok((body, driver)),
                }
            };
            match tokio::time::timeout(left, open).await {
                Ok(Ok((body, driver))) => {
                    return Ok(Stream {
                        body,
                        endpoint: endpoint.clone(),
                        _driver: driver,
                    });
                }
                Ok(Err(Failure::Refused(error))) if error.wants_token() && !reauthenticated => {
                    reauthenticated = true;
                    self.authenticate(token.as_deref(), deadline).await?;
                    continue;
                }
                Ok(Err(Failure::NotSent(reason) | Failure::Broken(reason))) => {
                    last = self.unreachable(endpoint, &reason);
                }
                Ok(Err(Failure::Refused(error))) => last = error,
                Ok(Err(Failure::BadResponse(reason))) => last = EtcdError::BadResponse(reason),
                Err(_) => last = EtcdError::Timeout(inner.request_timeout),
            }
            self.avoid(index);
            attempt += 1;
        }
        Err(last)
    }
}

/// The gRPC request for the call `path` on `endpoint`.
fn grpc_request(
    endpoint: &Endpoint,
    path: &str,
    body: Bytes,
    token: &Option<Arc<str>>,
) -> Request<Full<Bytes>> {
    let scheme = if endpoint.tls { "https" } else { "http" };
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("{scheme}://{}{path}", endpoint.authority()))
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers");
    if let Some(token) = token {
        request = request.header("token", &**token);
    }
    request
        .body(Full::new(body))
        .expect("a request of valid parts")
}

/// What the head of an answer to `path` says: a failure for an HTTP
/// status other than 200 (502-504, a proxy's "no member behind me", read
/// as UNAVAILABLE, as gRPC does), else the status it carries when the
/// answer is trailers only.
fn answer_head(
    path: &str,
    head: &hyper::http::response::Parts,
) -> Result<Option<(i32, String)>, Failure> {
    if matches!(head.status.as_u16(), 502..=504) {
        return Err(Failure::Refused(EtcdError::Refused {
            code: code::UNAVAILABLE,
            message: format!("HTTP {} from {path}", head.status),
        }));
    }
    if head.status != StatusCode::OK {
        return Err(Failure::BadResponse(format!(
            "{path}: HTTP {} from a gRPC server",
            head.status
        )));
    }
    Ok(grpc::status(&head.headers)
        .map(|(code, message)| (code, message.trim_start_matches("etcdserver: ").to_string())))
}

/// `error` and what caused it: hyper's "connection error" alone does not
/// say that the member refused the TLS client certificate.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A connection to a member, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A TCP connection to the first of the endpoint's addresses that accepts.
async fn connect(endpoint: &Endpoint) -> Result<TcpStream, String> {
    let addresses: Vec<SocketAddr> = match endpoint.host.parse() {
        Ok(ip) => vec![SocketAddr::new(ip, endpoint.port)],
        Err(_) => tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", endpoint.host))?
            .collect(),
    };
    let mut last = format!("{} has no address", endpoint.host);
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let probes = socket2::TcpKeepalive::new()
                    .with_time(Duration::from_secs(10))
                    .with_interval(Duration::from_secs(5))
                    .with_retries(3);
                let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&probes);
                return Ok(stream);
            }
            Err(error) => last = error.to_string(),
        }
    }
    Err(last)
}

/// HTTP/2 on `io`, its connection driven by a task of its own that ends
/// when the last sender is dropped (or the connection closes).
async fn handshake_h2<I>(
    io: I,
) -> Result<(http2::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>), String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Pings find a connection that died silently (a member's host gone, a
    // NAT that forgot it) in seconds, not at TCP's pace: every 10 s, more
    // than etcd's 5 s floor.
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        // Not while idle: etcd closes a connection that pings with no
        // stream open ("too_many_pings"); the watch's always has one.
        .keep_alive_while_idle(false)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((sender, driver))
}

/// The TLS client configuration, from the configured PEM files.
mod tls {
    use std::path::PathBuf;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ClientConfig, RootCertStore};

    /// PEM files for TLS: the CA to verify the members by (the system's
    /// roots when none), and a client certificate and key when the cluster
    /// asks for one.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct TlsFiles {
        pub ca: Option<PathBuf>,
        pub cert: Option<PathBuf>,
        pub key: Option<PathBuf>,
    }

    pub(super) fn config(files: &TlsFiles) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let mut roots = RootCertStore::empty();
        match &files.ca {
            Some(ca) => {
                let certs = CertificateDer::pem_file_iter(ca)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("store.etcd.ca {}: {e}", ca.display()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!(
                        "store.etcd.ca {}: no certificate in it",
                        ca.display()
                    ));
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        let builder = builder.with_root_certificates(roots);
        let config = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("store.etcd.cert {}: {e}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("store.etcd.key {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("store.etcd.cert and store.etcd.key: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("http://127.0.0.1:22379").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port),
            (false, "127.0.0.1", 22379)
        );
        assert_eq!(e.to_string(), "http://127.0.0.1:22379");
        let e = Endpoint::parse("https://etcd-1.example.net").unwrap();
        assert_eq!((e.tls, e.port), (true, 2379));
        let e = Endpoint::parse("http://[::1]:2379/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.authority()),
            ("::1", "[::1]:2379".to_string())
        );
        for bad in [
            "127.0.0.1:2379",
            "ftp://x:1",
            "http://",
            "http://x:1/v3",
            "http://x:99999",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_etcd_sends_are_read() {
        let head = |status: u16, fields: &[(&str, &str)]| {
            let mut response = hyper::Response::builder().status(status);
            for (name, value) in fields {
                response = response.header(*name, *value);
            }
            response.body(()).unwrap().into_parts().0
        };
        let compacted = head(
            200,
            &[
                ("grpc-status", "11"),
                (
                    "grpc-message",
                    "etcdserver: mvcc: required revision has been compacted",
                ),
            ],
        );
        let (code, message) = answer_head("/p", &compacted).unwrap().unwrap();
        let error = EtcdError::Refused { code, message };
        assert!(error.is_compacted());
        assert_eq!(
            error.to_string(),
            "etcd: mvcc: required revision has been compacted"
        );
        let expired = head(
            200,
            &[
                ("grpc-status", "16"),
                ("grpc-message", "etcdserver: invalid auth token"),
            ],
        );
        let (code, message) = answer_head("/p", &expired).unwrap().unwrap();
        assert!(EtcdError::Refused { code, message }.wants_token());
        assert_eq!(answer_head("/p", &head(200, &[])).unwrap(), None);
        assert!(matches!(
            answer_head("/p", &head(503, &[])),
            Err(Failure::Refused(EtcdError::Refused { code: 14, .. }))
        ));
        assert!(matches!(
            answer_head("/p", &head(404, &[])),
            Err(Failure::BadResponse(_))
        ));
    }
}
