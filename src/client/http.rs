//! The client's HTTP/1.1 transport, on hyper (the stack the server is built
//! on): one fresh connection per request, closed after it, the whole
//! exchange bounded by the client's timeout. Requests are a few per TTL, so
//! a connection pool would buy nothing worth its code.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use super::address::Address;
use super::error::Error;

/// Seconds a request may take, connect to last byte, unless changed.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach one admin API.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    pub(crate) address: Address,
    pub(crate) token: Option<String>,
    pub(crate) timeout: Duration,
}

/// A response whose body is still arriving (the event stream), with the
/// task driving its connection, which ends when this is dropped.
pub(crate) struct Streaming {
    pub(crate) response: Response<Incoming>,
    _driver: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Transport {
    fn unreachable(&self, reason: impl std::fmt::Display) -> Error {
        Error::Unreachable {
            address: self.address.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn bad_response(&self, reason: impl std::fmt::Display) -> Error {
        Error::BadResponse {
            address: self.address.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Sends `method path` (with `body` as JSON) and parses a 2xx answer's
    /// body as `T`; any other status is [`Error::Refused`].
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| self.bad_response(format!("{path}: {e}")))
    }

    /// Sends `method path` and returns a 2xx answer's body; any other
    /// status is [`Error::Refused`].
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, Error> {
        let exchange = async {
            let streaming = self.open(method, path, body).await?;
            let status = streaming.response.status();
            let bytes = streaming
                .response
                .into_body()
                .collect()
                .await
                .map_err(|e| self.unreachable(format!("the answer was cut short: {e}")))?
                .to_bytes();
            if status.is_success() {
                Ok(bytes)
            } else {
                Err(refusal(status.as_u16(), &bytes))
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(self.unreachable(self.no_answer())))
    }

    fn no_answer(&self) -> String {
        format!("no answer within {:?}", self.timeout)
    }

    /// Connects and sends the request; returns once the response head is
    /// in (within the timeout), whatever its status. The body is read by
    /// the caller, for as long as it likes.
    pub(crate) async fn open(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Streaming, Error> {
        let head = async {
            let stream = self.connect().await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| self.unreachable(e))?;
            let driver = AbortOnDrop(tokio::spawn(async move {
                let _ = connection.await;
            }));
            let request = self.request(method, path, body)?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| self.unreachable(e))?;
            Ok(Streaming {
                response,
                _driver: driver,
            })
        };
        tokio::time::timeout(self.timeout, head)
            .await
            .unwrap_or_else(|_| Err(self.unreachable(self.no_answer())))
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>, Error> {
        let mut request = Request::builder()
            .method(method)
            .uri(self.address.target(path))
            .header(HOST, self.address.authority())
            .header(USER_AGENT, concat!("signpost/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONNECTION, "close");
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.bad_response(format!("cannot build the request for {path}: {e}")))
    }

    /// A TCP connection to the first of the host's addresses that accepts.
    async fn connect(&self) -> Result<TcpStream, Error> {
        let (host, port) = (self.address.host(), self.address.port());
        let addresses: Vec<SocketAddr> = match host.parse() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| self.unreachable(format!("cannot resolve {host}: {e}")))?
                .collect(),
        };
        let mut last = None;
        for address in addresses {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    keep_alive(&stream);
                    return Ok(stream);
                }
                Err(error) => last = Some(error),
            }
        }
        Err(match last {
            Some(error) => self.unreachable(error),
            None => self.unreachable(format!("{host} has no address")),
        })
    }
}

/// TCP keep-alive probes, so that a long-lived connection (the event
/// stream) to a server that vanished without closing it (a cut cable, a
/// host gone) fails within about a minute instead of hanging.
fn keep_alive(stream: &TcpStream) {
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&probes);
}

/// The error a non-2xx answer stands for: the server's `{"error": …}`,
/// or the status and the start of the body when it sent something else.
pub(crate) fn refusal(status: u16, body: &[u8]) -> Error {
    #[derive(serde::Deserialize)]
    struct Body {
        error: String,
    }
    let message = match serde_json::from_slice::<Body>(body) {
        Ok(body) => body.error,
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {text}")
            }
        }
    };
    Error::Refused { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_carries_the_servers_message_or_else_the_status() {
        let error = refusal(422, br#"{"error":"port must be 1-65535, got 0"}"#);
        assert_eq!(
            error,
            Error::Refused {
                status: 422,
                message: "port must be 1-65535, got 0".into()
            }
        );
        assert_eq!(refusal(502, b"").to_string(), "HTTP 502");
        assert_eq!(
            refusal(502, b"<html>Bad Gateway</html>\n").to_string(),
            "HTTP 502: <html>Bad Gateway</html>"
        );
    }
}
