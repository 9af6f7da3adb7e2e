//! The admin API's one error type: every failure is a status code and a JSON
//! body `{"error": "<message>"}` naming what was wrong.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A failed admin request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Malformed JSON, a bad query filter, a bad path parameter.
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The token is known but may not do this (README "Security").
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The body did not arrive in time (a client trickling bytes).
    #[error("the request body did not arrive within {0} seconds")]
    BodyTimeout(u64),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Well-formed JSON that breaks a rule: a missing field, a wrong type, a
    /// value out of range.
    #[error("{0}")]
    Invalid(String),
    /// The store could not commit the change; nothing was changed.
    #[error("{0}; nothing was changed, try again")]
    Unavailable(String),
    /// The store could not confirm the change, but kept it: it is applied
    /// (the message says so).
    #[error("{0}")]
    Unconfirmed(String),
    /// A client over its rate; it may try again in a second.
    #[error("{0}")]
    RateLimited(String),
    /// A limit of open streams reached; try again later.
    #[error("{0}")]
    Busy(String),
    /// The registry is at a capacity limit (507 Insufficient Storage).
    #[error("{0}")]
    Full(String),
}

impl From<crate::registrar::RegistrarError> for ApiError {
    fn from(error: crate::registrar::RegistrarError) -> ApiError {
        match error {
            crate::registrar::RegistrarError::NotFound => {
                ApiError::NotFound("no such service, or it has expired: register it again".into())
            }
            crate::registrar::RegistrarError::Forbidden(why) => ApiError::Forbidden(why),
            crate::registrar::RegistrarError::Store(error @ crate::store::StoreError::Kept(_)) => {
                ApiError::Unconfirmed(error.to_string())
            }
            crate::registrar::RegistrarError::Full(message) => ApiError::Full(message),
            crate::registrar::RegistrarError::Store(error) => {
                ApiError::Unavailable(error.to_string())
            }
        }
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) | ApiError::Unconfirmed(_) | ApiError::Busy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
        }
    }
}

/// Longest error message sent, bytes. Messages quote client input (serde
/// names an unknown field, for one); a 60 KB field name must not come back
/// as a 60 KB error, so longer messages are cut, at a character boundary.
const MAX_MESSAGE_BYTES: usize = 512;

fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(serde_json::json!({ "error": bounded(self.to_string()) })),
        )
            .into_response();
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
