//! TLS for the admin API (`[admin.tls]`; README "Security"): the
//! server's certificate chain and key from PEM files, and optionally a CA
//! whose certificates clients must present.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Which setting a TLS error is about, and why.
#[derive(Debug)]
pub(crate) struct TlsError {
    pub setting: &'static str,
    pub message: String,
}

fn error(setting: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        setting,
        message: message.into(),
    }
}

/// The certificates of a PEM file (at least one).
fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(setting, format!("cannot read {shown}: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(setting, format!("{shown}: {e}")))?;
    if certs.is_empty() {
        return Err(error(
            setting,
            format!("{shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(certs)
}

/// The server's TLS settings: `cert` (PEM, the server's certificate then
/// any intermediates), `key` (PEM, PKCS#8, PKCS#1 or SEC1) and, when
/// given, `client_ca` (PEM certificates): then a client must present a
/// certificate one of them signed, or the handshake fails.
pub(crate) fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("admin.tls.cert", cert)?;
    let shown = key.display();
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        error(
            "admin.tls.key",
            format!("cannot read a PEM private key from {shown}: {e}"),
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| error("admin.tls.cert", e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates("admin.tls.client_ca", path)? {
                roots.add(ca).map_err(|e| {
                    error("admin.tls.client_ca", format!("{}: {e}", path.display()))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| error("admin.tls.client_ca", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        error(
            "admin.tls.key",
            format!("{shown} does not go with the certificate: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
