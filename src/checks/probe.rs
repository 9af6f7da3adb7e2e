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
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::target::TargetPolicy;
use super::{CheckTarget, HttpTarget};
use crate::service::Health;
use crate::validate::abbreviate;

/// Most bytes of an HTTP check's body read (and quoted in `check_output`).
pub(crate) const MAX_BODY_BYTES: usize = 4096;
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
pub(crate) struct Outcome {
    pub health: Health,
    /// Set when `health` is critical.
    pub failure: Option<FailureKind>,
    /// One line saying what happened, shown as `check_output`.
    pub output: String,
}

impl Outcome {
    fn prefixed(mut self, prefix: &str) -> Outcome {
        self.output = format!("{prefix} {}", self.output);
        self
    }

    fn failed(kind: FailureKind, output: String) -> Outcome {
        Outcome {
            health: Health::Critical,
            failure: Some(kind),
            output,
        }
    }
}

/// Runs one check of `target`, never for longer than `timeout`, to the
/// addresses `policy` permits only.
pub(crate) async fn run(target: &CheckTarget, timeout: Duration, policy: &TargetPolicy) -> Outcome {
    let attempt = async {
        match target {
            CheckTarget::Http(target) => http(target, policy).await,
            CheckTarget::Tcp { host, port } => {
                connect(host, *port, policy)
                    .await
                    .map_err(|o| o.prefixed("TCP"))?;
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

/// Connects to the first address of `host` that accepts, of those
/// `policy` permits: the addresses a name resolves to are judged here, at
/// every check, as a literal was when the check was registered.
async fn connect(host: &str, port: u16, policy: &TargetPolicy) -> Result<TcpStream, Outcome> {
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
    let mut refused = None;
    for address in addresses {
        if let Err(why) = policy.check(address.ip()) {
            refused.get_or_insert(why);
            continue;
        }
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
        None => match refused {
            Some(why) => failed(FailureKind::Error, &format!("not checked: {why}")),
            None => failed(FailureKind::Error, &"the name has no address"),
        },
    })
}

/// `GET`s the URL on a fresh connection (closed afterwards; redirects are
/// not followed) and reads at most [`MAX_BODY_BYTES`] of the body. An
/// `https` URL gets a TLS handshake first.
async fn http(target: &HttpTarget, policy: &TargetPolicy) -> Result<Outcome, Outcome> {
    let label = format!("HTTP GET {}", abbreviate(&target.url));
    let error =
        |e: &dyn std::fmt::Display| Outcome::failed(FailureKind::Error, format!("{label}: {e}"));
    let stream = connect(&target.host, target.port, policy)
        .await
        .map_err(|o| o.prefixed(&format!("{label}:")))?;
    if !target.tls {
        return exchange(TokioIo::new(stream), target, &label).await;
    }
    let server_name = ServerName::try_from(target.host.clone()).map_err(|e| error(&e))?;
    let stream = tls::connector(target.tls_skip_verify)
        .connect(server_name, stream)
        .await
        .map_err(|e| error(&format!("TLS: {e}")))?;
    exchange(TokioIo::new(stream), target, &label).await
}

/// The HTTP/1.1 exchange on an open connection.
async fn exchange<I>(io: I, target: &HttpTarget, label: &str) -> Result<Outcome, Outcome>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let error =
        |e: &dyn std::fmt::Display| Outcome::failed(FailureKind::Error, format!("{label}: {e}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
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

/// TLS client settings for `https` checks, built once.
mod tls {
    use std::sync::{Arc, OnceLock};

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
    use tokio_rustls::TlsConnector;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// The connector for `tls_skip_verify` (`true`) or for verified
    /// checks: the system's trusted roots (`/etc/ssl/certs`, read once at
    /// the first https check), so a private CA added there is trusted too.
    pub(super) fn connector(skip_verify: bool) -> TlsConnector {
        static VERIFIED: OnceLock<TlsConnector> = OnceLock::new();
        static UNVERIFIED: OnceLock<TlsConnector> = OnceLock::new();
        let build = |skip_verify: bool| {
            let builder = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions");
            let config = if skip_verify {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                        provider().signature_verification_algorithms,
                    )))
                    .with_no_client_auth()
            } else {
                let mut roots = RootCertStore::empty();
                let native = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(native.certs);
                if added == 0 {
                    tracing::warn!(
                        errors = ?native.errors,
                        "no trusted root certificates found: every verified https check will fail"
                    );
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            };
            TlsConnector::from(Arc::new(config))
        };
        let cell = if skip_verify { &UNVERIFIED } else { &VERIFIED };
        cell.get_or_init(|| build(skip_verify)).clone()
    }

    /// Accepts any certificate (`tls_skip_verify`), but still checks the
    /// handshake signatures, so the connection is at least with the holder
    /// of the certificate's key.
    #[derive(Debug)]
    struct AnyCertificate(WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }
}
