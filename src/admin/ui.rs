//! The dashboard: `GET /ui`, one page that shows every type and instance
//! and follows `/v1/events` live (README "Dashboard"). Its three files are
//! built into the binary (`ui/` at the top of the repository): no CDN, no
//! network fetch, no JavaScript build step. `GET /` redirects to it.
//!
//! The page only reads the API a browser could read anyway; it needs no
//! state of its own here. Its script and style are separate files so that
//! the Content-Security-Policy can forbid every inline script and style.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const PAGE: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");

/// Only this origin's script, style and API; nothing may frame the page.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

/// `/`, `/ui` (and `/ui/`) and the page's two files.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { redirect("ui") }))
        // The page's files are named relative to `/ui`: from `/ui/` they
        // would be looked for under `/ui/ui/`.
        .route("/ui/", get(|| async { redirect("../ui") }))
        .route(
            "/ui",
            get(|| async { file("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { file("text/css; charset=utf-8", STYLE) }),
        )
}

/// To the dashboard (`GET /` and `GET /ui/`). The location is relative, so
/// that it still points at the page behind a proxy that serves signpost
/// under a path of its own.
fn redirect(location: &'static str) -> Response {
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static(location))],
    )
        .into_response()
}

/// One of the page's files. `no-cache`: a browser may keep it but asks
/// again (cheaply) each time, so an upgraded server never runs an old page.
fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}
