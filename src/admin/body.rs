//! Reading JSON request bodies with the limits and errors of the contract:
//! over 64 KiB is 413, not JSON is 415, malformed JSON is 400, and JSON of
//! the wrong shape is 422 naming the field.

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`].
pub async fn read_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::TooLarge(MAX_BODY_BYTES))
}

/// Whether the request says its body is JSON (`application/json`, or any
/// `application/*+json`, parameters allowed).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Parses a JSON body into `T`.
pub fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType(
            "the body must be JSON: send Content-Type: application/json".into(),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                if path.is_empty() || path == "." {
                    ApiError::Invalid(inner.to_string())
                } else {
                    ApiError::Invalid(format!("{path}: {inner}"))
                }
            }
            _ => ApiError::BadRequest(format!("malformed JSON: {inner}")),
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    Ok(value)
}
