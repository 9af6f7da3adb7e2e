//! Holding under abuse (README "Security"): each attack on the admin API
//! and the checks is repeated here against a real server, and shown to
//! fail.

use serde_json::{Value, json};

use crate::support::{Registration, TestServer};

/// The `error` of an error body, asserting it is the JSON error body.
fn error_of(body: &Value) -> &str {
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("JSON error body: {body}"));
    assert_eq!(object.len(), 1, "only \"error\": {body}");
    object["error"].as_str().expect("a message")
}

fn web(name: &str, host: &str) -> Registration {
    Registration::new(name, "web", host, 8080).ttl(30)
}

// ---------------------------------------------------------------------------
// Hostnames that are numbers
// ---------------------------------------------------------------------------

/// The attack: `0x7f.1` passed as a hostname, and glibc resolves it to
/// 127.0.0.1. Now a host that is not an IP literal but reads as a number
/// is refused, as the host and as a check target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostnames_that_read_as_numbers_are_refused() {
    let server = TestServer::start().await;
    for host in [
        "0x7f.1",
        "999.1.1.1",
        "1.2.3",
        "0",
        "127.1",
        "0x7f000001",
        "web.1",
    ] {
        let (status, body) = server.try_register(&web("web-1", host)).await;
        assert_eq!(status, 422, "{host}: {body}");
        assert!(error_of(&body).contains("host"), "{body}");
    }
    for (check, field) in [
        (json!({"http": "http://0x7f.1:8080/"}), "check.http"),
        (json!({"tcp": "127.1:22"}), "check.tcp"),
        (json!({"tcp": "0:22"}), "check.tcp"),
    ] {
        let (status, body) = server
            .try_register(&web("web-1", "10.0.0.5").check(check))
            .await;
        assert_eq!(status, 422, "{body}");
        assert!(error_of(&body).starts_with(field), "{body}");
    }
    assert!(server.list("").await.is_empty());
    for host in ["db-1.internal", "0x1.example", "1e3"] {
        assert_eq!(
            server.try_register(&web("web-1", host)).await.0 / 100,
            2,
            "{host}"
        );
    }
}
