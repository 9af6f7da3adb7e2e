//! Running one check: an HTTP `GET` or a TCP connect, bounded as a whole by
//! the check's timeout (name lookup, connect, request, and reading at most
//! [`MAX_BODY_BYTES`] of the body).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{CheckTarget, HttpTarget};
use crate::service::{Health, abbreviate};

/// Most bytes of an HTTP check's body read (and quoted in `check_output`).
pub const MAX_BODY_BYTES: usize = 4096;
/// Most bytes of the body quoted in the output.
const QUOTED_BODY_BYTES: usize = 512;

/// Why a check failed, for the `signpost_check_failures_total{kind}` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer within the timeout.
    Timeout,
    /// The connection was refused.
    Refused,
    /// An HTTP answer that is neither 2xx nor 429.
    Status,
    /// Anything else: name lookup, reset, malformed HTTP.
    Error,
}

impl FailureKind {
    pub const ALL: [FailureKind; 4] = [
        FailureKind::Timeout,
        FailureKind::Refused,
        FailureKind::Status,
        FailureKind::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Refused => "refused",
            FailureKind::Status => "status",
            FailureKind::Error => "error",
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub health: Health,
    /// Set when `health` is critical.
    pub failure: Option<FailureKind>,
    /// One line saying what happened, shown as `check_output`.
    pub output: String,
}

impl Outcome {
    fn failed(kind: FailureKind, output: String) -> Outcome {
        Outcome {
            health: Health::Critical,
            failure: Some(kind),
            output,
        }
    }
}

/// Runs one check of `target`, never for longer than `timeout`.
pub async fn run(target: &CheckTarget, timeout: Duration) -> Outcome {
    let attempt = async {
        match target {
            CheckTarget::Http(target) => http(target).await,
            CheckTarget::Tcp { host, port } => {
                connect(host, *port).await?;
                Ok(Outcome {
                    health: Health::Passing,
                    failure: None,
                    output: format!("TCP connect {host}:{port}: connected"),
                })
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(failed)) => failed,
        Err(_) => Outcome::failed(
            FailureKind::Timeout,
            format!("{}: no answer within {timeout:?}", describe(target)),
        ),
    }
}

fn describe(target: &CheckTarget) -> String {
    match target {
        CheckTarget::Http(target) => format!("HTTP GET {}", abbreviate(&target.url)),
        CheckTarget::Tcp { host, port } => format!("TCP connect {host}:{port}"),
    }
}

/// Connects to the first address of `host` that accepts.
async fn connect(host: &str, port: u16) -> Result<TcpStream, Outcome> {
    let failed = |kind, error: &dyn std::fmt::Display| {
        Outcome::failed(kind, format!("connect {host}:{port}: {error}"))
    };
    let addresses: Vec<SocketAddr> = match host.parse() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| failed(FailureKind::Error, &e))?
            .collect(),
    };
    let mut last = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some(error),
        }
    }
    Err(match last {
        Some(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            failed(FailureKind::Refused, &error)
        }
        Some(error) => failed(FailureKind::Error, &error),
        None => failed(FailureKind::Error, &"the name has no address"),
    })
}

/// `GET`s the URL on a fresh connection (closed afterwards; redirects are
/// not followed) and reads at most [`MAX_BODY_BYTES`] of the body.
async fn http(target: &HttpTarget) -> Result<Outcome, Outcome> {
    let label = format!("HTTP GET {}", abbreviate(&target.url));
    let error =
        |e: &dyn std::fmt::Display| Outcome::failed(FailureKind::Error, format!("{label}: {e}"));
    let stream = connect(&target.host, target.port).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| error(&e))?;
    // Drives the connection; aborted with this future (the timeout).
    let driver = AbortOnDrop(tokio::spawn(connection));
    let request = hyper::Request::get(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(
            USER_AGENT,
            concat!("signpost/", env!("CARGO_PKG_VERSION"), " health check"),
        )
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| error(&e))?;
    let mut response = sender.send_request(request).await.map_err(|e| error(&e))?;
    let status = response.status();
    let mut body = Vec::new();
    while body.len() < MAX_BODY_BYTES {
        match response.body_mut().frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    body.extend_from_slice(&data[..data.len().min(MAX_BODY_BYTES - body.len())]);
                }
            }
            Some(Err(e)) => return Err(error(&e)),
            None => break,
        }
    }
    drop(driver);
    let health = match status {
        s if s.is_success() => Health::Passing,
        StatusCode::TOO_MANY_REQUESTS => Health::Warning,
        _ => Health::Critical,
    };
    let mut output = format!("{label}: {status}");
    let quoted = String::from_utf8_lossy(&body[..body.len().min(QUOTED_BODY_BYTES)]);
    let quoted = quoted.trim();
    if !quoted.is_empty() {
        output.push_str(": ");
        output.push_str(abbreviate_to(quoted, QUOTED_BODY_BYTES));
    }
    Ok(Outcome {
        health,
        failure: (health == Health::Critical).then_some(FailureKind::Status),
        output,
    })
}

/// `value` cut to at most `max` bytes at a character boundary.
fn abbreviate_to(value: &str, max: usize) -> &str {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
