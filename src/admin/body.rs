//! Reading JSON request bodies with the limits and errors of the contract:
//! over 64 KiB is 413, not JSON is 415, malformed JSON is 400, and JSON of
//! the wrong shape is 422 naming the field.

use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest request body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] (413), one
/// that takes longer than `timeout` (408, `admin.body_read_timeout`): a
/// client trickling a byte at a time must not hold a connection (and, for
/// a registration, nothing else) for ever; and one that is not valid HTTP
/// framing, such as a malformed chunk (400).
pub(super) async fn read_body(
    body: Body,
    timeout: Duration,
) -> Result<axum::body::Bytes, ApiError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) if is_too_large(&error) => Err(ApiError::TooLarge(MAX_BODY_BYTES)),
        Ok(Err(error)) => Err(ApiError::BadRequest(format!(
            "the request body could not be read: {error}"
        ))),
        Err(_) => Err(ApiError::BodyTimeout(timeout.as_secs())),
    }
}

/// Whether reading a body failed for its size (rather than, say, a
/// malformed chunk or a client that went away).
fn is_too_large(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
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

/// Parses a JSON body into `T`, which must be a JSON object.
///
/// A JSON object that deserialises straight into `T` is done in one pass.
/// Anything else takes two steps, so that the status says what is wrong:
/// first the bytes are parsed as JSON, where any syntax error is 400 (even
/// after the first field that breaks a rule, as in `{"name": "a"}}`); then
/// the value is checked against `T`, where a missing field or a wrong type
/// is 422 naming the field. Deserialising every body straight from the
/// bytes got both wrong: serde's derived structs also accept a JSON array
/// of the fields in order (hence only an object is tried in one pass), and
/// serde_json reports some type mismatches (a number where an enum string
/// is expected) as syntax errors without the field's name.
///
/// Where both ways succeed they give the same `T`; they differ only in what
/// they refuse. That holds because `T` reads the fields it ignores as JSON
/// values: `IgnoredAny` would skip them without checking their strings.
pub(super) fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<T, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType(
            "the body must be JSON: send Content-Type: application/json".into(),
        ));
    }
    // The usual case, in one pass.
    if bytes.trim_ascii_start().starts_with(b"{")
        && let Ok(text) = std::str::from_utf8(bytes)
        && let Ok(parsed) = serde_json::from_str(text)
    {
        return Ok(parsed);
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::Invalid(format!(
            "the body must be a JSON object, got {}",
            kind(&value)
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        // The path quotes client keys; keep a huge one from hiding the reason.
        let path = crate::service::abbreviate(&error.path().to_string());
        let inner = error.into_inner();
        if path.is_empty() || path == "." {
            ApiError::Invalid(inner.to_string())
        } else {
            ApiError::Invalid(format!("{path}: {inner}"))
        }
    })
}

/// What kind of JSON value `value` is, for error messages.
fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
