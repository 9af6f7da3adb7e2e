//! Who is asking: the bearer token of each request, checked against the
//! configured tokens before any handler runs (README "Security").
//!
//! With any token configured, every request to the routes it guards (all
//! but `/v1/health`, open for probes, and the static dashboard and OpenAPI
//! files: see `admin::router`) needs one: without a token, or with one
//! that is not configured, it is answered 401; a `read` token asking for a
//! change is answered 403.
//! What a `register` token may change (its types, its own instances) is
//! decided later, by the registrar, against the instance itself.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AdminState;
use crate::access::{Caller, Role};

/// The middleware: identifies the caller, refuses what its role cannot
/// do, and hands the rest on with the [`Caller`] in the request.
pub(super) async fn authorize(
    State(state): State<Arc<AdminState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let read_only = matches!(*request.method(), Method::GET | Method::HEAD);
    let Some(token) = bearer(request.headers()).and_then(|t| state.tokens.identify(t)) else {
        return ApiError::Unauthorized.into_response();
    };
    if !read_only && token.role == Role::Read {
        tracing::debug!(token = %token.name, method = %request.method(), "refused: a read token");
        return ApiError::Forbidden(format!(
            "token {:?} has the role read: it may not change anything",
            token.name
        ))
        .into_response();
    }
    request.extensions_mut().insert(Caller::Token(token));
    next.run(request).await
}

/// The token of `Authorization: Bearer <token>`, exactly.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// A handler's caller: the token [`authorize`] found, or
/// [`Caller::Anyone`] when no token is configured (there is no layer).
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, Infallible> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anyone))
    }
}
