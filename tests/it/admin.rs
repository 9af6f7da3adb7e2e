//! The HTTP admin API (README "The admin API") over real HTTP: registration
//! and its validation rules, heartbeats, deregistration, listing and its
//! filters, discovery, types, health, metrics, the admin token, routing
//! errors, and hostile input.
//!
//! Every rejected request is checked three ways: a 4xx status, a JSON body
//! `{"error": "..."}` whose message names the offending field, and a registry
//! left exactly as it was.

use std::collections::{BTreeMap, BTreeSet};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Registration, TestServer, id_of, metric, read_checked, unix_now};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Sends `method path` with optional `Content-Type` and raw body; returns the
/// status and the JSON body (Null when the body is not JSON).
async fn send(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = server
        .http
        .request(method.clone(), server.url(path))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header(reqwest::header::CONTENT_TYPE, content_type);
    }
    let response = request.send().await.expect("admin api answers");
    let (status, body) = read_checked(&method, path, response)
        .await
        .expect("admin api answers");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A minimal valid registration of `name` of type `web`.
fn web(name: &str) -> Registration {
    Registration::new(name, "web", "10.0.0.1", 8080)
}

/// POSTs raw bytes to `/v1/services` with the given `Content-Type`.
async fn post_raw(server: &TestServer, content_type: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    send(
        server,
        reqwest::Method::POST,
        "/v1/services",
        content_type,
        body,
    )
    .await
}

/// The `(type, name)` pairs of a list, in order.
fn type_names(services: &[Value]) -> Vec<(String, String)> {
    services
        .iter()
        .map(|s| {
            (
                s["type"].as_str().unwrap().to_string(),
                s["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The error message of an error body, asserting the shape
/// `{"error": "<non-empty string>"}` and nothing else.
fn error_message(body: &Value) -> String {
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is a JSON object: {body}"));
    assert_eq!(object.len(), 1, "error body has only \"error\": {body}");
    let message = object["error"]
        .as_str()
        .unwrap_or_else(|| panic!("\"error\" is a string: {body}"));
    assert!(!message.is_empty(), "error message is not empty");
    message.to_string()
}

/// Asserts an error reply: `status` is one of `statuses` and the message
/// contains `needle` (case-insensitively).
fn assert_error(status: u16, body: &Value, statuses: &[u16], needle: &str, what: &str) {
    assert!(
        statuses.contains(&status),
        "{what}: expected one of {statuses:?}, got {status} {body}"
    );
    let message = error_message(body);
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "{what}: error {message:?} should name {needle:?}"
    );
}

/// The status codes a validation failure may use.
const INVALID: &[u16] = &[400, 422];

/// Sends `body` as a registration that must be refused naming `field`, and
/// checks that nothing changed: the list is identical afterwards.
async fn assert_rejected(
    server: &TestServer,
    body: &(impl serde::Serialize + std::fmt::Display),
    field: &str,
) {
    let before = server.list("").await;
    let (status, reply) = server.try_register(body).await;
    assert_error(status, &reply, INVALID, field, &format!("register {body}"));
    assert_eq!(
        server.list("").await,
        before,
        "a rejected registration changes nothing: {body}"
    );
}

/// A label of `len` characters.
fn label(len: usize) -> String {
    "a".repeat(len)
}

/// A hostname of exactly `len` characters made of valid labels (len >= 3).
fn hostname(len: usize) -> String {
    let mut labels = Vec::new();
    let mut remaining = len;
    while remaining > 64 {
        labels.push("h".repeat(63));
        remaining -= 64;
    }
    labels.push("h".repeat(remaining));
    let host = labels.join(".");
    assert_eq!(host.len(), len);
    host
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_returns_201_with_the_full_service_object() {
    let server = TestServer::start().await;
    let before = unix_now();
    let service = server
        .register(
            &Registration::new("web-1", "web", "10.0.0.5", 8080)
                .tags(&["api", "v2"])
                .meta("version", "1.0.0")
                .meta("zone", "a"),
        )
        .await;
    let after = unix_now();

    let id = service["id"].as_str().expect("id is a string");
    Uuid::parse_str(id).expect("id is a UUID");
    assert_eq!(service["name"], "web-1");
    assert_eq!(service["type"], "web");
    assert_eq!(service["host"], "10.0.0.5");
    assert_eq!(service["port"], 8080);
    assert_eq!(service["tags"], json!(["api", "v2"]));
    assert_eq!(
        service["metadata"],
        json!({"version": "1.0.0", "zone": "a"})
    );
    assert_eq!(service["ttl"], 30, "ttl defaults to 30");
    assert_eq!(service["priority"], 0, "priority defaults to 0");
    assert_eq!(service["weight"], 1, "weight defaults to 1");
    assert_eq!(service["health"], "passing");

    let registered_at = service["registered_at"].as_f64().expect("number");
    let last_heartbeat = service["last_heartbeat"].as_f64().expect("number");
    let expires_at = service["expires_at"].as_f64().expect("number");
    assert!(
        registered_at >= before - 2.0 && registered_at <= after + 2.0,
        "registered_at {registered_at} is now ({before}..{after})"
    );
    // The id and registration time are fixed when the request is accepted,
    // the lifetime starts when it takes effect (after the store's write):
    // within the request, so equal to the millisecond unless the machine
    // is busy.
    assert!(
        registered_at <= last_heartbeat && last_heartbeat - registered_at <= after - before + 0.002,
        "a new registration's last_heartbeat {last_heartbeat} is its registration time {registered_at}"
    );
    assert!(
        (expires_at - (last_heartbeat + 30.0)).abs() < 0.001,
        "expires_at {expires_at} = last_heartbeat {last_heartbeat} + ttl"
    );

    // The same object is what GET and the list show.
    assert_eq!(server.get_ok(&format!("/v1/services/{id}")).await, service);
    assert_eq!(server.list("").await, vec![service.clone()]);

    // Defaults are not forced: explicit values are kept.
    let explicit = server
        .register(
            &Registration::new("web-2", "web", "10.0.0.6", 1)
                .ttl(120)
                .priority(10)
                .weight(0),
        )
        .await;
    assert_eq!(explicit["ttl"], 120);
    assert_eq!(explicit["priority"], 10);
    assert_eq!(explicit["weight"], 0);
    assert_eq!(explicit["tags"], json!([]));
    assert_eq!(explicit["metadata"], json!({}));
    assert_ne!(
        explicit["id"], service["id"],
        "a new instance gets a new id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_the_same_type_and_name_replaces_in_place() {
    let server = TestServer::start().await;
    let first = server
        .register(&web("web-1").tag("old").meta("v", "1").ttl(60))
        .await;
    let other = server.register(&web("web-2")).await;

    let (status, second) = server
        .try_register(&Registration::new("web-1", "web", "10.0.0.9", 9090))
        .await;
    assert_eq!(status, 200, "a replacement is 200: {second}");
    assert_eq!(second["id"], first["id"], "the replacement keeps its id");
    assert_eq!(second["host"], "10.0.0.9");
    assert_eq!(second["port"], 9090);
    assert_eq!(second["tags"], json!([]), "every field is replaced");
    assert_eq!(second["metadata"], json!({}));
    assert_eq!(second["ttl"], 30);

    let services = server.list("").await;
    assert_eq!(services.len(), 2, "still one web-1: {services:?}");
    assert_eq!(services[0], second);
    assert_eq!(services[1], other, "the other instance is untouched");

    // The same name under another type is another instance.
    let api = server
        .register(&Registration::new("web-1", "api", "10.0.0.1", 1))
        .await;
    assert_ne!(api["id"], first["id"]);

    // A fetched object can be sent back as it is (read-only fields ignored).
    let mut fetched = server
        .get_ok(&format!("/v1/services/{}", id_of(&second)))
        .await;
    fetched["port"] = json!(7070);
    fetched["id"] = json!(Uuid::new_v4().to_string());
    let (status, third) = server.try_register(&fetched).await;
    assert_eq!(status, 200, "round trip: {third}");
    assert_eq!(third["id"], first["id"], "a client-sent id is ignored");
    assert_eq!(third["port"], 7070);
    assert_eq!(server.list("").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_case_insensitive_and_stored_lowercase() {
    let server = TestServer::start().await;
    let first = server
        .register(&Registration::new("Web-1", "WEB", "10.0.0.1", 80).tag("API"))
        .await;
    assert_eq!(first["name"], "web-1");
    assert_eq!(first["type"], "web");
    assert_eq!(first["tags"], json!(["api"]));

    let (status, second) = server
        .try_register(&Registration::new("web-1", "Web", "10.0.0.2", 81))
        .await;
    assert_eq!(
        status, 200,
        "\"Web-1\" and \"web-1\" are the same: {second}"
    );
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["port"], 81);
    let services = server.list("").await;
    assert_eq!(services.len(), 1, "{services:?}");
    assert_eq!(services[0]["name"], "web-1");

    // Filters and discovery are case-insensitive too.
    assert_eq!(server.list("?type=WEB").await.len(), 1);
    let (status, found) = server.get("/v1/discover/WeB").await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["id"], first["id"]);
    // And DNS sees the lowercase name.
    let answer = server.query("WEB-1.web.svc.local.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer.answers.len(), 1, "{answer:?}");
}

// ---------------------------------------------------------------------------
// Validation: each rule its own case, nothing changes on failure
// ---------------------------------------------------------------------------

/// A server holding one instance `web-1` of type `web` on port 8080, so that
/// a rejected registration of the same name is also a rejected replacement.
async fn server_with_web_1() -> (TestServer, Value) {
    let server = TestServer::start().await;
    let existing = server
        .register(&web("web-1").tag("api").meta("v", "1"))
        .await;
    (server, existing)
}

/// After a batch of rejections: the original instance is intact and the
/// rejections were counted.
async fn assert_intact(server: &TestServer, existing: &Value, rejected: usize) {
    let id = &id_of(existing);
    assert_eq!(
        server.get_ok(&format!("/v1/services/{id}")).await,
        *existing,
        "a rejected replacement leaves the old instance intact"
    );
    assert_eq!(server.list("").await, vec![existing.clone()]);
    let text = server.metrics().await;
    assert_eq!(
        metric(&text, "signpost_registrations_total{result=\"rejected\"}"),
        Some(rejected as f64),
        "every rejection counted:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_name_type_and_tags_are_validated() {
    let (server, existing) = server_with_web_1().await;
    let bad_labels = [
        ("empty", String::new()),
        ("64 characters", label(64)),
        ("leading hyphen", "-web".to_string()),
        ("trailing hyphen", "web-".to_string()),
        ("underscore", "web_1".to_string()),
        ("dot", "web.1".to_string()),
        ("space", "web 1".to_string()),
        ("non-ASCII", "wéb".to_string()),
        (
            "non-ASCII that lowercases to ASCII",
            "\u{212A}ey".to_string(),
        ), // Kelvin sign
        ("only a hyphen", "-".to_string()),
    ];
    let mut rejected = 0;
    for (case, bad) in &bad_labels {
        for (field, body) in [
            ("name", web("web-1").set("name", json!(bad))),
            ("type", web("web-1").set("type", json!(bad))),
            ("tags", web("web-1").set("tags", json!(["ok", bad]))),
        ] {
            let before = server.list("").await;
            let (status, reply) = server.try_register(&body).await;
            assert_error(status, &reply, INVALID, field, &format!("{field} {case}"));
            assert_eq!(server.list("").await, before, "{field} {case}: unchanged");
            rejected += 1;
        }
    }
    assert_intact(&server, &existing, rejected).await;

    // The edges that are accepted.
    for (field, value, stored) in [
        ("name", json!(label(63)), json!(label(63))),
        ("name", json!("a"), json!("a")),
        ("name", json!("0"), json!("0")),
        ("name", json!("a-b--c"), json!("a-b--c")),
        ("name", json!("UPPER-Case"), json!("upper-case")),
        ("type", json!(label(63)), json!(label(63))),
        ("type", json!("9"), json!("9")),
        ("type", json!("API"), json!("api")),
    ] {
        let body = web("edge").set(field, value.clone());
        let service = server.register(&body).await;
        assert_eq!(
            service[field], stored,
            "{field} {value} accepted as {stored}"
        );
    }
    let service = server
        .register(&web("tagged").set("tags", json!([label(63), "X", "x", "0-1"])))
        .await;
    assert_eq!(
        service["tags"],
        json!([label(63), "x", "0-1"]),
        "tags are lowercased and duplicates dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_validated() {
    let (server, existing) = server_with_web_1().await;
    let bad_hosts = [
        ("empty", String::new()),
        ("space", "db host".to_string()),
        ("underscore", "db_1.example".to_string()),
        ("port suffix", "10.0.0.1:80".to_string()),
        ("bracketed IPv6", "[::1]".to_string()),
        ("empty label", "db..example".to_string()),
        ("leading dot", ".example".to_string()),
        ("label with leading hyphen", "-db.example".to_string()),
        ("label of 64 characters", format!("{}.example", label(64))),
        ("non-ASCII", "dé.example".to_string()),
        ("slash", "db/1".to_string()),
        ("254 characters", hostname(254)),
        ("just a dot", ".".to_string()),
    ];
    for (case, bad) in &bad_hosts {
        let body = web("web-1").set("host", json!(bad));
        let before = server.list("").await;
        let (status, reply) = server.try_register(&body).await;
        assert_error(status, &reply, INVALID, "host", &format!("host {case}"));
        assert_eq!(server.list("").await, before, "host {case}: unchanged");
    }
    assert_intact(&server, &existing, bad_hosts.len()).await;

    let host_253 = hostname(253);
    for (i, (host, stored)) in [
        (host_253.as_str(), host_253.as_str()),
        ("::1", "::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("fe80::1:2:3:4", "fe80::1:2:3:4"),
        ("192.168.1.254", "192.168.1.254"),
        ("DB.Example.com", "db.example.com"),
        ("db.example.", "db.example"),
        ("localhost", "localhost"),
    ]
    .into_iter()
    .enumerate()
    {
        let body = web(&format!("h{i}")).set("host", json!(host));
        let service = server.register(&body).await;
        assert_eq!(service["host"], stored, "host {host} accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_are_range_checked() {
    let (server, existing) = server_with_web_1().await;
    let bad = [
        ("port", json!(0)),
        ("port", json!(65536)),
        ("port", json!(-1)),
        ("port", json!("8080")),
        ("port", json!(80.5)),
        ("port", json!(null)),
        ("port", json!(10_000_000_000_i64)),
        ("port", json!(18_446_744_073_709_551_615_u64)),
        ("ttl", json!(0)),
        ("ttl", json!(86401)),
        ("ttl", json!(-30)),
        ("ttl", json!("30")),
        ("priority", json!(-1)),
        ("priority", json!(65536)),
        ("priority", json!("high")),
        ("weight", json!(-1)),
        ("weight", json!(65536)),
        ("weight", json!(true)),
    ];
    for (field, value) in &bad {
        let body = web("web-1").set(field, value.clone());
        let before = server.list("").await;
        let (status, reply) = server.try_register(&body).await;
        assert_error(status, &reply, INVALID, field, &format!("{field}={value}"));
        assert_eq!(server.list("").await, before, "{field}={value}: unchanged");
    }
    assert_intact(&server, &existing, bad.len()).await;

    for (i, (field, value)) in [
        ("port", 1),
        ("port", 65535),
        ("ttl", 1),
        ("ttl", 86400),
        ("priority", 0),
        ("priority", 65535),
        ("weight", 0),
        ("weight", 65535),
    ]
    .into_iter()
    .enumerate()
    {
        let body = web(&format!("n{i}")).set(field, json!(value));
        let service = server.register(&body).await;
        assert_eq!(service[field], value, "{field}={value} accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_validated() {
    let (server, existing) = server_with_web_1().await;
    let bad = [
        ("k=v of 256 bytes", json!({"k": "v".repeat(254)})),
        ("256 bytes in 129 characters", json!({"k": "é".repeat(127)})),
        ("long key", json!({ "k".repeat(255): "" })),
        ("number value", json!({"version": 1})),
        ("bool value", json!({"debug": true})),
        ("null value", json!({"x": null})),
        ("object value", json!({"x": {"y": "z"}})),
        ("array value", json!({"x": ["y"]})),
        ("empty key", json!({"": "x"})),
        ("key with =", json!({"a=b": "c"})),
        ("not an object", json!("version=1")),
        ("an array", json!([["k", "v"]])),
    ];
    for (_case, metadata) in &bad {
        assert_rejected(
            &server,
            &web("web-1").set("metadata", metadata.clone()),
            "metadata",
        )
        .await;
    }
    // Tags must be an array of strings.
    for tags in [json!("api"), json!([1]), json!([null]), json!({"a": "b"})] {
        assert_rejected(&server, &web("web-1").set("tags", tags), "tags").await;
    }
    assert_intact(&server, &existing, bad.len() + 4).await;

    // Exactly 255 bytes is fine, counted in bytes.
    let ascii = server
        .register(&web("m1").meta("k", &"v".repeat(253)))
        .await;
    assert_eq!(ascii["metadata"]["k"].as_str().unwrap().len(), 253);
    let multibyte = format!("{}v", "é".repeat(126));
    let utf8 = server.register(&web("m2").meta("k", &multibyte)).await;
    assert_eq!(utf8["metadata"]["k"], json!(multibyte));
    let empty_value = server.register(&web("m3").meta("k", "")).await;
    assert_eq!(empty_value["metadata"], json!({"k": ""}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_unknown_fields_are_named() {
    let (server, existing) = server_with_web_1().await;
    let base = web("web-1");
    for field in ["name", "type", "host", "port"] {
        assert_rejected(&server, &base.clone().without(field), field).await;
    }
    // A typo is an error, not a silently missing field.
    let typo = base.clone().without("name").set("nmae", json!("web-1"));
    assert_rejected(&server, &typo, "nmae").await;
    assert_rejected(&server, &base.set("colour", json!("blue")), "colour").await;
    assert_rejected(&server, &json!({}), "name").await;
    assert_intact(&server, &existing, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_a_registration_object_are_refused() {
    let (server, existing) = server_with_web_1().await;
    let json_type = Some("application/json");
    let mut rejected = 0;

    // Malformed JSON: 400.
    for bad in [
        &b"{\"name\": \"web-1\","[..],
        b"{name: \"web-1\"}",
        b"",
        b"   ",
        b"{\"name\": \"web-1\", \"type\": \"web\", \"host\": \"10.0.0.1\", \"port\": 80} trailing",
        b"{\"name\": \"web-1\"}}",
        b"{'name': 'web-1'}",
        b"\xef\xbb\xbf{}",
    ] {
        let (status, reply) = post_raw(&server, json_type, bad.to_vec()).await;
        let what = format!("malformed {:?}", String::from_utf8_lossy(bad));
        assert_error(status, &reply, &[400], "json", &what);
        rejected += 1;
    }

    // Well-formed JSON of the wrong shape: 4xx.
    for bad in [
        "[]",
        "[{\"name\": \"web-1\"}]",
        "[\"web-1\", \"web\", \"10.0.0.1\", 80]",
        // Every field in declaration order: still not an object.
        "[\"web-9\", \"web\", \"10.0.0.1\", 80, [], {}, 30, 0, 1]",
        "42",
        "\"web-1\"",
        "null",
        "true",
    ] {
        let (status, reply) = post_raw(&server, json_type, bad.as_bytes().to_vec()).await;
        assert!(
            INVALID.contains(&status),
            "JSON {bad}: expected 400/422, got {status} {reply}"
        );
        error_message(&reply);
        rejected += 1;
    }

    // Not JSON, by its Content-Type: 415, even when the bytes are JSON.
    let valid = serde_json::to_vec(&web("new")).unwrap();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
        Some("json"),
    ] {
        let (status, reply) = post_raw(&server, content_type, valid.clone()).await;
        assert_error(
            status,
            &reply,
            &[415],
            "content-type",
            &format!("Content-Type {content_type:?}"),
        );
        rejected += 1;
    }
    assert_intact(&server, &existing, rejected).await;

    // Content-Type parameters and case do not matter.
    for (i, content_type) in ["application/json; charset=utf-8", "Application/JSON"]
        .into_iter()
        .enumerate()
    {
        let body = serde_json::to_vec(&web(&format!("ct{i}"))).unwrap();
        let (status, reply) = post_raw(&server, Some(content_type), body).await;
        assert_eq!(status, 201, "{content_type}: {reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_64_kib_are_refused_with_413() {
    let (server, existing) = server_with_web_1().await;
    /// A valid registration padded with whitespace to exactly `len` bytes.
    fn padded(name: &str, len: usize) -> Vec<u8> {
        let mut body = serde_json::to_vec(&web(name)).unwrap();
        body.resize(len, b' ');
        body
    }
    let (status, reply) = post_raw(&server, Some("application/json"), padded("big", 65537)).await;
    assert_error(status, &reply, &[413], "65536", "65537-byte body");
    assert_intact(&server, &existing, 1).await;

    // 64 KiB exactly is within the limit.
    let (status, reply) = post_raw(&server, Some("application/json"), padded("edge", 65536)).await;
    assert_eq!(status, 201, "a 65536-byte body is accepted: {reply}");

    // The limit applies to heartbeat bodies too.
    let id = &id_of(&existing);
    let mut body = br#"{"status": "passing"}"#.to_vec();
    body.resize(65537, b' ');
    let (status, reply) = send(
        &server,
        reqwest::Method::PUT,
        &format!("/v1/services/{id}/heartbeat"),
        Some("application/json"),
        body,
    )
    .await;
    assert_error(status, &reply, &[413], "65536", "large heartbeat");
}

// ---------------------------------------------------------------------------
// Heartbeat, deregister, get
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_renews_and_returns_the_object() {
    let server = TestServer::start().await;
    let service = server.register(&web("web-1").ttl(20)).await;
    let id = &id_of(&service);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;

    let (status, renewed) = server.heartbeat(id, None).await;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(renewed["id"], service["id"]);
    let before = service["last_heartbeat"].as_f64().unwrap();
    let after = renewed["last_heartbeat"].as_f64().unwrap();
    assert!(
        after >= before + 0.1,
        "last_heartbeat moves on: {before} -> {after}"
    );
    assert!(
        (renewed["expires_at"].as_f64().unwrap() - (after + 20.0)).abs() < 0.001,
        "expires_at = last_heartbeat + ttl: {renewed}"
    );
    assert_eq!(renewed["registered_at"], service["registered_at"]);
    assert_eq!(renewed["health"], "passing");
    assert_eq!(
        server.get_ok(&format!("/v1/services/{id}")).await,
        renewed,
        "GET shows the renewed object"
    );

    // An explicit passing body works the same.
    let (status, reply) = server.heartbeat_reporting(id, "passing").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["health"], "passing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_status_sets_health() {
    let server = TestServer::start().await;
    let service = server.register(&web("web-1")).await;
    let id = &id_of(&service);
    let path = format!("/v1/services/{id}");

    let (status, reply) = server.heartbeat_reporting(id, "warning").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["health"], "warning");
    assert_eq!(server.get_ok(&path).await["health"], "warning");

    let (status, reply) = server
        .heartbeat(
            id,
            Some(json!({"status": "critical", "output": "disk full"})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["health"], "critical");
    assert_eq!(reply["output"], "disk full");
    assert_eq!(server.get_ok(&path).await["health"], "critical");

    // A bad heartbeat body is refused and leaves the health as it was.
    let bad_bodies = [
        (json!({"status": "bogus"}), "status"),
        (json!({"status": "PASSING"}), "status"),
        (json!({"status": 1}), "status"),
        (json!({"status": null}), "status"),
        (json!({"stauts": "passing"}), "stauts"),
        (json!({"output": "x".repeat(5000)}), "output"),
        (json!(["passing"]), ""),
        (json!(["passing", null]), ""),
        (json!("passing"), ""),
    ];
    for (body, field) in bad_bodies {
        let (status, reply) = server.heartbeat(id, Some(body.clone())).await;
        assert_error(status, &reply, INVALID, field, &format!("heartbeat {body}"));
        let now = server.get_ok(&path).await;
        assert_eq!(now["health"], "critical", "health unchanged after {body}");
        assert_eq!(now["output"], "disk full", "output unchanged after {body}");
    }
    let (status, reply) = send(
        &server,
        reqwest::Method::PUT,
        &format!("{path}/heartbeat"),
        Some("application/json"),
        b"{\"status\":".to_vec(),
    )
    .await;
    assert_error(status, &reply, &[400], "json", "malformed heartbeat");
    // Bad strings in a heartbeat's output: 400, like a malformed body.
    let mut bad_utf8 = br#"{"status": "passing", "output": "x"#.to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe]);
    bad_utf8.extend_from_slice(br#""}"#);
    let surrogate = br#"{"status": "passing", "output": "\ud800"}"#.to_vec();
    for body in [bad_utf8, surrogate] {
        let (status, reply) = send(
            &server,
            reqwest::Method::PUT,
            &format!("{path}/heartbeat"),
            Some("application/json"),
            body.clone(),
        )
        .await;
        let what = format!("heartbeat {}", String::from_utf8_lossy(&body));
        assert_error(status, &reply, &[400], "", &what);
        assert_eq!(server.get_ok(&path).await["output"], "disk full", "{what}");
    }
    let (status, reply) = send(
        &server,
        reqwest::Method::PUT,
        &format!("{path}/heartbeat"),
        Some("text/plain"),
        b"{\"status\":\"passing\"}".to_vec(),
    )
    .await;
    assert_error(
        status,
        &reply,
        &[415],
        "content-type",
        "text/plain heartbeat",
    );
    assert_eq!(server.get_ok(&path).await["health"], "critical");

    // A body-less heartbeat means passing.
    let (status, reply) = server.heartbeat(id, None).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["health"], "passing");
    assert!(reply.get("output").is_none_or(Value::is_null), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_of_an_unknown_id_is_404() {
    let server = TestServer::start().await;
    let service = server.register(&web("web-1")).await;
    let id = &id_of(&service);

    let unknown = Uuid::new_v4().to_string();
    for bad in [unknown.as_str(), "not-a-uuid", "12345", "%20"] {
        let (status, reply) = server.heartbeat(bad, None).await;
        assert_error(
            status,
            &reply,
            &[404],
            "no service",
            &format!("heartbeat {bad}"),
        );
    }
    assert_eq!(server.deregister(id).await.0, 204);
    let (status, reply) = server.heartbeat_reporting(id, "passing").await;
    assert_error(status, &reply, &[404], id, "heartbeat after deregister");
    assert!(
        server.list("").await.is_empty(),
        "a refused heartbeat does not bring it back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_then_get_and_delete_are_404() {
    let server = TestServer::start().await;
    let one = server.register(&web("web-1")).await;
    let two = server.register(&web("web-2")).await;
    let id = &id_of(&one);
    let path = format!("/v1/services/{id}");

    assert_eq!(server.get_ok(&path).await, one);
    let response = server.http.delete(server.url(&path)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 204);
    assert!(
        response.bytes().await.unwrap().is_empty(),
        "204 has no body"
    );

    let (status, reply) = server.get(&path).await;
    assert_error(status, &reply, &[404], id, "GET after delete");
    let (status, reply) = send(&server, reqwest::Method::DELETE, &path, None, vec![]).await;
    assert_error(status, &reply, &[404], id, "second DELETE");
    assert_eq!(
        server.list("").await,
        vec![two.clone()],
        "only web-2 remains"
    );

    for bad in [Uuid::new_v4().to_string(), "nope".to_string()] {
        let (status, reply) = server.get(&format!("/v1/services/{bad}")).await;
        assert_error(status, &reply, &[404], "no service", &format!("GET {bad}"));
        assert_eq!(server.deregister(&bad).await.0, 404, "DELETE {bad}");
    }
    assert_eq!(server.list("").await, vec![two]);
}

// ---------------------------------------------------------------------------
// List, discover, types, health
// ---------------------------------------------------------------------------

/// Registers a mixed set and marks some unhealthy:
/// web: a (passing, tags api), b (warning, tags api canary), c (critical);
/// db: m (passing, tag primary). Returns the objects by name.
async fn mixed(server: &TestServer) -> BTreeMap<&'static str, Value> {
    let mut out = BTreeMap::new();
    for (name, service_type, tags) in [
        ("c", "web", &[][..]),
        ("m", "db", &["primary"]),
        ("b", "web", &["api", "canary"]),
        ("a", "web", &["api"]),
    ] {
        let registration = Registration::new(name, service_type, "10.0.0.1", 80).tags(tags);
        let service = server.register(&registration).await;
        out.insert(name, service);
    }
    for (name, status) in [("b", "warning"), ("c", "critical")] {
        let id = out[name]["id"].as_str().unwrap().to_string();
        let (code, reply) = server.heartbeat_reporting(&id, status).await;
        assert_eq!(code, 200, "{reply}");
        out.insert(name, reply);
    }
    out
}

fn names(services: &[Value]) -> Vec<&str> {
    services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_sorted_and_filtered() {
    let server = TestServer::start().await;
    assert_eq!(
        server.get_ok("/v1/services").await,
        json!({"services": []}),
        "an empty registry lists nothing"
    );
    let all = mixed(&server).await;

    let services = server.list("").await;
    assert_eq!(
        type_names(&services),
        [("db", "m"), ("web", "a"), ("web", "b"), ("web", "c")]
            .map(|(t, n)| (t.to_string(), n.to_string())),
        "sorted by type then name"
    );
    assert_eq!(services[3], all["c"], "list shows the current object");

    let cases: [(&str, &[&str]); 12] = [
        ("?type=web", &["a", "b", "c"]),
        ("?type=db", &["m"]),
        ("?type=nothing", &[]),
        ("?tag=api", &["a", "b"]),
        ("?tag=canary", &["b"]),
        ("?health=passing", &["m", "a", "b"]),
        ("?health=warning", &["b"]),
        ("?health=critical", &["c"]),
        ("?type=web&health=passing&tag=api", &["a", "b"]),
        ("?type=db&tag=api", &[]),
        ("?type=", &["m", "a", "b", "c"]),
        ("?tag=API", &["a", "b"]),
    ];
    for (query, expected) in cases {
        let services = server.list(query).await;
        assert_eq!(names(&services), expected, "GET /v1/services{query}");
    }
}

/// The list is sent a few hundred services at a time; what the client
/// gets is still one JSON document, whole and in order, at every size
/// around a chunk's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lists_are_one_whole_json_document() {
    let server = TestServer::start().await;
    for (service_type, count) in [("one", 1), ("full", 256), ("more", 257), ("many", 600)] {
        crate::support::register_many(&server, service_type, count).await;
    }
    // HEAD: the head of the same answer, no body.
    let head = server
        .http
        .head(server.url("/v1/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(head.headers()["content-type"], "application/json");
    assert!(head.bytes().await.unwrap().is_empty(), "HEAD has no body");
    for (query, count) in [
        ("", 1 + 256 + 257 + 600),
        ("?type=one", 1),
        ("?type=full", 256),
        ("?type=more", 257),
        ("?type=many", 600),
        ("?type=none", 0),
    ] {
        let services = server.list(query).await;
        assert_eq!(services.len(), count, "{query}");
        let pairs = type_names(&services);
        assert!(
            pairs.windows(2).all(|w| w[0] < w[1]),
            "{query}: sorted, no duplicates"
        );
        if let Some(first) = services.first() {
            // i00, the first by name, has port 1000 (see `register_many`).
            assert!(first["id"].is_string() && first["port"] == 1000, "{first}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_refuses_bad_filters() {
    let server = TestServer::start().await;
    server.register(&web("web-1")).await;
    for (query, needle) in [
        ("?health=bogus", "health"),
        ("?type=bad_label", "type"),
        ("?type=-web", "type"),
        ("?tag=a.b", "tag"),
        ("?colour=blue", "colour"),
        ("?typ=web", "typ"),
    ] {
        let (status, reply) = server.get(&format!("/v1/services{query}")).await;
        assert_error(
            status,
            &reply,
            &[400],
            needle,
            &format!("GET /v1/services{query}"),
        );
    }
    assert_eq!(server.list("").await.len(), 1);
}

/// When nearly every candidate is critical, the few random draws miss and
/// discovery falls back to listing the serving ones: it still finds the
/// one that serves, and never returns a critical one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_finds_the_one_serving_instance_among_many_critical() {
    let server = TestServer::start().await;
    let mut alive = String::new();
    for n in 0..40 {
        let service = server
            .register(&Registration::new(&format!("i{n:02}"), "web", "10.0.0.1", 80).tag("t"))
            .await;
        let id = id_of(&service);
        if n == 17 {
            alive = id;
        } else {
            assert_eq!(server.heartbeat_reporting(&id, "critical").await.0, 200);
        }
    }
    for path in ["/v1/discover/web", "/v1/discover/web?tag=t"] {
        for _ in 0..20 {
            let (status, found) = server.get(path).await;
            assert_eq!(status, 200, "{path}: {found}");
            assert_eq!(found["id"], alive.as_str(), "{path}: the serving one");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_returns_a_random_serving_instance() {
    let server = TestServer::start().await;
    let all = mixed(&server).await;

    // web has three instances, two serving (a passing, b warning), c critical.
    // 60 draws: the chance that one serving instance never shows up is
    // 2 * (1/2)^60, far below 1e-6.
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        let (status, found) = server.get("/v1/discover/web").await;
        assert_eq!(status, 200, "{found}");
        assert_eq!(found["type"], "web");
        assert_ne!(found["health"], "critical", "never a critical instance");
        let name = found["name"].as_str().unwrap().to_string();
        assert_eq!(found, all[name.as_str()], "the full service object");
        seen.insert(name);
    }
    assert_eq!(
        seen,
        BTreeSet::from(["a".to_string(), "b".to_string()]),
        "both serving instances are returned"
    );

    for _ in 0..10 {
        let (status, found) = server.get("/v1/discover/web?tag=canary").await;
        assert_eq!(status, 200, "{found}");
        assert_eq!(found["name"], "b", "only the tagged instance");
    }
    let (status, found) = server.get("/v1/discover/db").await;
    assert_eq!(status, 200);
    assert_eq!(found, all["m"]);

    for path in [
        "/v1/discover/web?tag=primary",
        "/v1/discover/unknown",
        "/v1/discover/db?tag=nope",
    ] {
        let (status, reply) = server.get(path).await;
        assert_error(status, &reply, &[404], "", path);
    }
    for (path, needle) in [
        ("/v1/discover/bad_type", "type"),
        ("/v1/discover/web?health=passing", "health"),
    ] {
        let (status, reply) = server.get(path).await;
        assert_error(status, &reply, &[400], needle, path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_is_404_when_only_critical_instances_remain() {
    let server = TestServer::start().await;
    let one = server.register(&web("web-1")).await;
    let id = &id_of(&one);
    let (status, _) = server.get("/v1/discover/web").await;
    assert_eq!(status, 200);
    let (status, _) = server.heartbeat_reporting(id, "critical").await;
    assert_eq!(status, 200);
    let (status, reply) = server.get("/v1/discover/web").await;
    assert_error(
        status,
        &reply,
        &[404],
        "web",
        "discover with only a critical instance",
    );
    let (status, _) = server.heartbeat(id, None).await;
    assert_eq!(status, 200);
    let (status, found) = server.get("/v1/discover/web").await;
    assert_eq!(status, 200, "back after a passing heartbeat: {found}");
    assert_eq!(found["id"], one["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_count_instances_and_serving() {
    let server = TestServer::start().await;
    assert_eq!(server.get_ok("/v1/types").await, json!({"types": []}));
    let all = mixed(&server).await;
    assert_eq!(
        server.get_ok("/v1/types").await,
        json!({"types": [
            {"type": "db", "instances": 1, "serving": 1},
            {"type": "web", "instances": 3, "serving": 2},
        ]})
    );
    assert_eq!(server.deregister(&id_of(&all["m"])).await.0, 204);
    assert_eq!(
        server.get_ok("/v1/types").await,
        json!({"types": [{"type": "web", "instances": 3, "serving": 2}]}),
        "a type with no instance left is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_ok_and_the_time() {
    let server = TestServer::start().await;
    let body = server.get_ok("/v1/health").await;
    assert_eq!(body["status"], "ok", "{body}");
    let timestamp = body["timestamp"].as_f64().expect("timestamp is a number");
    let now = unix_now();
    assert!(
        (timestamp - now).abs() < 5.0,
        "timestamp {timestamp} is close to now {now}"
    );
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_queries_registrations_and_serving() {
    let server = TestServer::start().await;
    let a = server.register(&web("web-1")).await;
    server.register(&web("web-2")).await;
    server.register(&web("db-1").set("type", json!("db"))).await;
    let (status, _) = server.try_register(&web("web-2")).await;
    assert_eq!(status, 200);
    let (status, _) = server.try_register(&web("x").set("port", json!(0))).await;
    assert_eq!(status, 422);
    let (status, _) = server.heartbeat_reporting(&id_of(&a), "critical").await;
    assert_eq!(status, 200);
    assert_eq!(
        server.heartbeat(&Uuid::new_v4().to_string(), None).await.0,
        404
    );

    for _ in 0..3 {
        let answer = server.query("web.svc.local.", RecordType::A).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer.answers.len(), 1, "only web-2 is serving");
    }
    for _ in 0..2 {
        let answer = server.query("nothing.svc.local.", RecordType::A).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    }
    let answer = server.query("web.svc.local.", RecordType::SRV).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);

    let text = server.metrics().await;
    for (series, value) in [
        (
            "signpost_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\"}",
            3.0,
        ),
        (
            "signpost_dns_queries_total{qtype=\"A\",rcode=\"NXDOMAIN\"}",
            2.0,
        ),
        (
            "signpost_dns_queries_total{qtype=\"SRV\",rcode=\"NOERROR\"}",
            1.0,
        ),
        ("signpost_registrations_total{result=\"created\"}", 3.0),
        ("signpost_registrations_total{result=\"replaced\"}", 1.0),
        ("signpost_registrations_total{result=\"rejected\"}", 1.0),
        ("signpost_heartbeats_total{result=\"ok\"}", 1.0),
        ("signpost_heartbeats_total{result=\"unknown\"}", 1.0),
        ("signpost_instances", 3.0),
        ("signpost_instances_serving", 2.0),
    ] {
        assert_eq!(metric(&text, series), Some(value), "{series} in:\n{text}");
    }
    assert!(
        text.contains("# TYPE signpost_dns_queries_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE signpost_instances_serving gauge"),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "signpost_dns_queries_total{qtype=\"AAAA\",rcode=\"NOERROR\"}"
        ),
        None,
        "no query of that kind was made"
    );

    // The gauges follow the registry; the counters only go up.
    assert_eq!(server.deregister(&id_of(&a)).await.0, 204);
    let text = server.metrics().await;
    assert_eq!(metric(&text, "signpost_instances"), Some(2.0), "{text}");
    assert_eq!(metric(&text, "signpost_instances_serving"), Some(2.0));
    assert_eq!(metric(&text, "signpost_deregistrations_total"), Some(1.0));
    assert_eq!(
        metric(&text, "signpost_registrations_total{result=\"created\"}"),
        Some(3.0)
    );
}

// ---------------------------------------------------------------------------
// Admin token
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_guards_every_change() {
    let server = TestServer::start_with(|c| c.admin.token = "s3cret".into()).await;
    let body = serde_json::to_vec(&web("web-1")).unwrap();

    /// Sends with an optional Authorization header value.
    async fn authorized(
        server: &TestServer,
        method: reqwest::Method,
        path: &str,
        auth: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Value, Option<String>) {
        let mut request = server
            .http
            .request(method.clone(), server.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(auth) = auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let response = request.send().await.unwrap();
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_string());
        let (status, body) = read_checked(&method, path, response).await.unwrap();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
            challenge,
        )
    }

    let bad_auth = [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret2"),
        Some("Bearer S3CRET"),
        Some("Bearer "),
        Some("s3cret"),
        Some("Basic s3cret"),
        Some("Bearer  s3cret"),
    ];
    for auth in bad_auth {
        let (status, reply, challenge) = authorized(
            &server,
            reqwest::Method::POST,
            "/v1/services",
            auth,
            body.clone(),
        )
        .await;
        assert_error(
            status,
            &reply,
            &[401],
            "token",
            &format!("POST with {auth:?}"),
        );
        assert_eq!(challenge.as_deref(), Some("Bearer"), "401 names the scheme");
    }
    let admin = server.with_token("s3cret");
    assert!(admin.list("").await.is_empty(), "nothing was registered");

    let (status, service, _) = authorized(
        &server,
        reqwest::Method::POST,
        "/v1/services",
        Some("Bearer s3cret"),
        body,
    )
    .await;
    assert_eq!(status, 201, "{service}");
    let id = &id_of(&service);
    let heartbeat = format!("/v1/services/{id}/heartbeat");
    let one = format!("/v1/services/{id}");

    // Reads need a token too (README "Security"), but for /v1/health.
    for path in [
        "/v1/services",
        one.as_str(),
        "/v1/discover/web",
        "/v1/types",
        "/metrics",
    ] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            401,
            "GET {path} without a token"
        );
        assert_eq!(server.with_token("s3cret").get(path).await.0, 200, "{path}");
    }
    let response = server
        .http
        .get(server.url("/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "/v1/health is open");

    for auth in [None, Some("Bearer nope")] {
        let (status, reply, _) =
            authorized(&server, reqwest::Method::PUT, &heartbeat, auth, vec![]).await;
        assert_error(
            status,
            &reply,
            &[401],
            "token",
            &format!("PUT with {auth:?}"),
        );
        let (status, reply, _) =
            authorized(&server, reqwest::Method::DELETE, &one, auth, vec![]).await;
        assert_error(
            status,
            &reply,
            &[401],
            "token",
            &format!("DELETE with {auth:?}"),
        );
    }
    assert_eq!(admin.list("").await.len(), 1, "still registered");

    let (status, reply, _) = authorized(
        &server,
        reqwest::Method::PUT,
        &heartbeat,
        Some("Bearer s3cret"),
        br#"{"status":"warning"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["health"], "warning");
    let (status, _, _) = authorized(
        &server,
        reqwest::Method::DELETE,
        &one,
        Some("Bearer s3cret"),
        vec![],
    )
    .await;
    assert_eq!(status, 204);
    assert!(admin.list("").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_configured_means_no_token_needed() {
    let server = TestServer::start().await;
    let response = server
        .http
        .post(server.url("/v1/services"))
        .header(reqwest::header::AUTHORIZATION, "Bearer anything")
        .json(&web("web-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let server = TestServer::start().await;
    for path in [
        "/v1",
        "/v1/nope",
        "/v2/services",
        "/v1/services/a/b/c",
        "/metricsx",
    ] {
        let (status, reply) = server.get(path).await;
        assert_error(status, &reply, &[404], "", &format!("GET {path}"));
    }
    let id = Uuid::new_v4();
    for (method, path) in [
        (reqwest::Method::PATCH, "/v1/services".to_string()),
        (reqwest::Method::DELETE, "/v1/services".to_string()),
        (reqwest::Method::PUT, "/v1/services".to_string()),
        (reqwest::Method::POST, format!("/v1/services/{id}")),
        (reqwest::Method::GET, format!("/v1/services/{id}/heartbeat")),
        (
            reqwest::Method::POST,
            format!("/v1/services/{id}/heartbeat"),
        ),
        (reqwest::Method::POST, "/v1/types".to_string()),
        (reqwest::Method::DELETE, "/v1/health".to_string()),
        (reqwest::Method::POST, "/metrics".to_string()),
        (reqwest::Method::POST, "/v1/discover/web".to_string()),
    ] {
        let (status, reply) = send(&server, method.clone(), &path, None, vec![]).await;
        assert_error(
            status,
            &reply,
            &[405],
            "method",
            &format!("{method} {path}"),
        );
    }
}

// ---------------------------------------------------------------------------
// Hostile and heavy input
// ---------------------------------------------------------------------------

/// Reads one HTTP/1.1 response (status and body, by Content-Length).
async fn read_response(
    reader: &mut tokio::io::BufReader<tokio::net::TcpStream>,
) -> Option<(u16, Vec<u8>)> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut status = None;
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        match status {
            None => status = line.split(' ').nth(1)?.parse().ok(),
            Some(_) => {
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().ok()?;
                }
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some((status?, body))
}

#[tokio::test]
async fn pipelined_requests_on_one_connection_are_answered_in_order() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let post = |body: &dyn std::fmt::Display| {
        let body = body.to_string();
        format!(
            "POST /v1/services HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // Registrations, a read, and a refused body, all written at once.
    let mut requests = String::new();
    let mut expected = Vec::new();
    for n in 0..30 {
        if n == 10 {
            requests.push_str("GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n");
            expected.push((200, None));
        }
        if n == 20 {
            requests.push_str(&post(
                &json!({"name": "no-type", "host": "10.0.0.1", "port": 80}),
            ));
            expected.push((422, None));
        }
        requests.push_str(&post(&web(&format!("p{n:02}"))));
        expected.push((201, Some(format!("p{n:02}"))));
    }
    let mut stream = tokio::net::TcpStream::connect(server.admin).await.unwrap();
    stream.write_all(requests.as_bytes()).await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    for (status, name) in expected {
        let (got, body) = read_response(&mut reader)
            .await
            .expect("a response for every pipelined request");
        let body: Value = serde_json::from_slice(&body).expect("JSON body");
        assert_eq!(got, status, "{body}");
        if let Some(name) = name {
            assert_eq!(body["name"], name.as_str(), "answers come in request order");
        }
    }
    assert_eq!(server.list("").await.len(), 30);
    let answer = server.query("p29.web.svc.local.", RecordType::A).await;
    assert_eq!(answer.answers.len(), 1, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_concurrent_registrations_all_succeed() {
    let server = TestServer::start().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u16 {
        let api = server.api.clone();
        tasks.spawn(async move {
            let host = format!("10.0.{}.{}", i / 256, i % 256);
            let registration =
                Registration::new(&format!("i{i:03}"), &format!("t{}", i % 4), &host, 1000 + i);
            api.register(&registration).await
        });
    }
    let mut ids = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        ids.insert(id_of(&result.unwrap()));
    }
    assert_eq!(ids.len(), 200, "every instance got its own id");
    let services = server.list("").await;
    assert_eq!(services.len(), 200);
    let listed: BTreeSet<_> = services.iter().map(id_of).collect();
    assert_eq!(listed, ids, "every registration is listed");
    let order = type_names(&services);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "still sorted by type then name");
    let types = server.get_ok("/v1/types").await;
    assert_eq!(types["types"].as_array().unwrap().len(), 4);
    for t in types["types"].as_array().unwrap() {
        assert_eq!(t["instances"], 50, "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_name_make_one_instance() {
    let server = TestServer::start().await;
    let mut tasks = tokio::task::JoinSet::new();
    for port in 1..=50u16 {
        let api = server.api.clone();
        tasks.spawn(async move {
            let registration = Registration::new("same", "web", "10.0.0.1", port);
            api.try_register(&registration).await
        });
    }
    let mut statuses = BTreeMap::new();
    let mut ids = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        let (status, body) = result.unwrap();
        *statuses.entry(status).or_insert(0) += 1;
        ids.insert(id_of(&body));
    }
    assert_eq!(
        statuses,
        BTreeMap::from([(200, 49), (201, 1)]),
        "exactly one creation, the rest replacements"
    );
    assert_eq!(ids.len(), 1, "one id for all: {ids:?}");
    let services = server.list("").await;
    assert_eq!(services.len(), 1, "{services:?}");
    let answer = server.query("web.svc.local.", RecordType::SRV).await;
    assert_eq!(answer.answers.len(), 1, "DNS has one instance too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_get_a_clear_4xx_and_the_server_keeps_working() {
    let (server, existing) = server_with_web_1().await;
    let json_type = Some("application/json");

    // A huge tags array (within 64 KiB).
    let tags: Vec<String> = (0..5000).map(|i| format!("t{i}")).collect();
    assert_rejected(&server, &web("web-1").set("tags", json!(tags)), "tags").await;
    // Many metadata pairs.
    let metadata: serde_json::Map<String, Value> =
        (0..3000).map(|i| (format!("k{i}"), json!("v"))).collect();
    assert_rejected(
        &server,
        &web("web-1").set("metadata", Value::Object(metadata)),
        "metadata",
    )
    .await;

    // Very long strings: refused, and the message does not echo them whole.
    let long = "x".repeat(60_000);
    for (field, body) in [
        ("name", web("web-1").set("name", json!(long))),
        ("type", web("web-1").set("type", json!(long))),
        ("host", web("web-1").set("host", json!(long))),
        ("tags", web("web-1").set("tags", json!([long]))),
        ("metadata", web("web-1").set("metadata", json!({"k": long}))),
        (
            "metadata",
            web("web-1").set("metadata", json!({ long.clone(): "v" })),
        ),
        (
            "metadata",
            web("web-1").set("metadata", json!({ format!("{long}="): "" })),
        ),
        ("unknown field", web("web-1").set(&long, json!(1))),
    ] {
        let (status, reply) = server.try_register(&body).await;
        assert_error(
            status,
            &reply,
            INVALID,
            field,
            &format!("60000-byte {field}"),
        );
        let message = error_message(&reply);
        assert!(
            message.len() < 1024,
            "the error for a long {field} is short, got {} bytes",
            message.len()
        );
    }

    // Deep nesting, in several places.
    let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    for body in [
        deep(20_000),
        format!(
            r#"{{"name": "web-1", "type": "web", "host": "10.0.0.1", "port": 80, "tags": {}}}"#,
            deep(10_000)
        ),
        format!(
            r#"{{"name": "web-1", "type": "web", "host": "10.0.0.1", "port": 80, "metadata": {{"k": {}}}}}"#,
            deep(10_000)
        ),
        format!("{}{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000)),
    ] {
        let (status, reply) = post_raw(&server, json_type, body.into_bytes()).await;
        assert!(
            INVALID.contains(&status),
            "deeply nested JSON: expected 400/422, got {status} {reply}"
        );
        error_message(&reply);
    }

    // Invalid UTF-8, inside a string and outside; and in the read-only
    // fields a fetched object carries: those are ignored, but what they
    // hold is still checked (bad UTF-8 or a lone surrogate there is 400, as
    // anywhere else), while any well-formed value is accepted.
    let mut inside = br#"{"name": "web-"#.to_vec();
    inside.extend_from_slice(&[0xff, 0xfe]);
    inside.extend_from_slice(br#"", "type": "web", "host": "10.0.0.1", "port": 80}"#);
    let mut in_ignored =
        br#"{"name": "web-x", "type": "web", "host": "10.0.0.1", "port": 80, "output": ""#.to_vec();
    in_ignored.extend_from_slice(&[0xff, 0xfe]);
    in_ignored.extend_from_slice(br#""}"#);
    let surrogate =
        br#"{"name": "web-x", "type": "web", "host": "10.0.0.1", "port": 80, "id": "\ud800"}"#;
    for bytes in [
        inside,
        vec![0xff, 0xfe, 0xfd],
        vec![0xc3, 0x28],
        in_ignored,
        surrogate.to_vec(),
    ] {
        let (status, reply) = post_raw(&server, json_type, bytes.clone()).await;
        assert_error(
            status,
            &reply,
            &[400],
            "",
            &format!("bad string in {}", String::from_utf8_lossy(&bytes)),
        );
    }
    let ignored = web("web-ignored").set(
        "health",
        json!({"nested": [1, "two", null, {"deep": true}]}),
    );
    let (status, reply) = post_raw(&server, json_type, ignored.to_string().into_bytes()).await;
    assert_eq!(status, 201, "any well-formed ignored field: {reply}");
    assert_eq!(reply["health"], "passing");
    assert_eq!(server.deregister(&id_of(&reply)).await.0, 204);
    // NUL bytes and control characters inside strings.
    for name in ["web\u{0}1", "web\n1", "web\u{7f}"] {
        assert_rejected(&server, &web("web-1").set("name", json!(name)), "name").await;
    }
    // Duplicate keys: refused or last-wins, never a crash.
    let (status, reply) = post_raw(
        &server,
        json_type,
        br#"{"name": "dup", "name": "dup2", "type": "web", "host": "10.0.0.1", "port": 80}"#
            .to_vec(),
    )
    .await;
    assert!(
        INVALID.contains(&status) || status == 201,
        "duplicate key: {status} {reply}"
    );
    // As it is: the last value of a repeated key wins (README).
    assert_eq!(status, 201, "duplicate key: {reply}");
    assert_eq!(reply["name"], "dup2", "the last value wins");
    if status == 201 {
        assert_eq!(server.deregister(&id_of(&reply)).await.0, 204);
    }

    // The registry is as it was, and the server still works.
    let id = &id_of(&existing);
    assert_eq!(server.get_ok(&format!("/v1/services/{id}")).await, existing);
    assert_eq!(server.list("").await, vec![existing.clone()]);
    let fresh = server.register(&web("after")).await;
    assert_eq!(fresh["name"], "after");
    let answer = server.query("after.web.svc.local.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(server.get_ok("/v1/health").await["status"], "ok");
}
