//! `GET /v1/openapi.json`: the admin API described as an OpenAPI 3.1
//! document (`openapi.json` next to this file), built into the binary.
//!
//! The document is written by hand and kept true by the tests: every
//! response the integration tests receive is checked against it
//! (`tests/it/schema.rs`), and `bench/schemathesis.sh` runs schemathesis
//! against a live server (docs/BENCHMARKS.md records the result).

use axum::http::header;
use axum::response::IntoResponse;

const DOCUMENT: &str = include_str!("openapi.json");

pub(super) async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;

    /// The document is JSON, and its version is the crate's: bump both.
    #[test]
    fn document_is_json_of_this_version() {
        let document: serde_json::Value =
            serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
        assert_eq!(document["openapi"], "3.1.0");
        assert_eq!(
            document["info"]["version"],
            env!("CARGO_PKG_VERSION"),
            "src/admin/openapi.json's info.version is the crate's version"
        );
    }
}
