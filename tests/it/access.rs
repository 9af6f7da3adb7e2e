//! Holding under abuse (README "Security"): each attack on the admin API
//! and the checks is repeated here against a real server, and shown to
//! fail.

use std::time::Duration;

use serde_json::{Value, json};
use signpost::config::TokenConfig;

use crate::support::{
    EventStream, Process, Registration, ScratchDir, TestServer, eventually, id_of,
};

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

// ---------------------------------------------------------------------------
// Tokens with roles, and owners
// ---------------------------------------------------------------------------

/// The SHA-256 of `secret`, in hex, as `[[admin.tokens]]` takes it.
fn sha256_hex(secret: &str) -> String {
    signpost::access::sha256(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn token(name: &str, secret: &str, role: &str, types: &[&str]) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        sha256: sha256_hex(secret),
        role: role.into(),
        types: types.iter().map(|t| t.to_string()).collect(),
    }
}

/// A server with one token of each kind: `team-a` (register `web`),
/// `team-b` (register `web` and `web-*`), `viewer` (read) and `ops`
/// (admin); each token's secret is its name followed by `-secret`.
async fn with_tokens(configure: impl FnOnce(&mut signpost::Config)) -> TestServer {
    TestServer::start_with(|config| {
        config.admin.tokens = vec![
            token("team-a", "team-a-secret", "register", &["web"]),
            token("team-b", "team-b-secret", "register", &["web", "web-*"]),
            token("viewer", "viewer-secret", "read", &[]),
            token("ops", "ops-secret", "admin", &[]),
        ];
        configure(config);
    })
    .await
}

/// The attack: a client re-registers another's type+name (same id, its
/// own host) or deletes it. With tokens, only the owner (or an admin) may:
/// anyone else gets 403 and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_over_anothers_registration_is_refused() {
    let server = with_tokens(|_| {}).await;
    let (a, b) = (
        server.with_token("team-a-secret"),
        server.with_token("team-b-secret"),
    );
    let ops = server.with_token("ops-secret");
    let mine = a.register(&web("web-1", "10.0.0.5")).await;
    assert_eq!(mine["owner"], "team-a", "{mine}");
    let id = id_of(&mine);

    // Re-registering the same type+name with another host: refused.
    let (status, body) = b.try_register(&web("web-1", "10.6.6.6")).await;
    assert_eq!(status, 403, "{body}");
    assert!(error_of(&body).contains("team-a"), "{body}");
    let (status, body) = b.heartbeat_reporting(&id, "critical").await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = b.deregister(&id).await;
    assert_eq!(status, 403, "{body}");
    // Nothing changed: the same host, health and owner; DNS serves it.
    let now = a.get_ok(&format!("/v1/services/{id}")).await;
    assert_eq!(now["host"], "10.0.0.5");
    assert_eq!(now["health"], "passing");
    assert_eq!(now["owner"], "team-a");
    assert_eq!(now["registered_at"], mine["registered_at"]);

    // The owner may heartbeat and replace it.
    let (status, body) = a.heartbeat_reporting(&id, "warning").await;
    assert_eq!((status, body["health"].clone()), (200, json!("warning")));
    let (status, body) = a.try_register(&web("web-1", "10.0.0.6")).await;
    assert_eq!((status, body["host"].clone()), (200, json!("10.0.0.6")));
    assert_eq!(id_of(&body), id);
    // So may an admin, who then owns it.
    let (status, body) = ops.try_register(&web("web-1", "10.0.0.7")).await;
    assert_eq!((status, body["owner"].clone()), (200, json!("ops")));
    let (status, _) = a.deregister(&id).await;
    assert_eq!(status, 403, "no longer team-a's");
    assert_eq!(ops.deregister(&id).await.0, 204);

    // A name that lapsed is free for anyone to take.
    let short = a.register(&web("web-2", "10.0.0.5").ttl(1)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = b.try_register(&web("web-2", "10.0.0.9")).await;
    assert_eq!(status, 201, "{body}");
    assert_ne!(id_of(&body), id_of(&short));
}

/// A register token registers only the types its globs match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_tokens_write_only_their_types() {
    let server = with_tokens(|_| {}).await;
    let (a, b) = (
        server.with_token("team-a-secret"),
        server.with_token("team-b-secret"),
    );
    for (api, service_type, status) in [
        (&a, "web", 201),
        (&a, "web-api", 403),
        (&a, "db", 403),
        (&b, "web-api", 201),
        (&b, "webx", 403),
        (&b, "db", 403),
    ] {
        let registration = Registration::new("x-1", service_type, "10.0.0.1", 80);
        let (got, body) = api.try_register(&registration).await;
        assert_eq!(got, status, "{service_type}: {body}");
        if status == 403 {
            assert!(error_of(&body).contains(service_type), "{body}");
        }
    }
    let ops = server.with_token("ops-secret");
    assert_eq!(ops.list("").await.len(), 2);
    let viewer = server.with_token("viewer-secret");
    let (status, body) = viewer.try_register(&web("web-9", "10.0.0.1")).await;
    assert_eq!(status, 403, "{body}");
    assert!(error_of(&body).contains("read"), "{body}");
}

/// The attack: with a token set, reads were open to anyone. Now every
/// read needs at least a read token (401 without one, or with a wrong
/// one); `/v1/health` stays open for probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_a_token_but_health_does_not() {
    let server = with_tokens(|_| {}).await;
    let id = id_of(
        &server
            .with_token("team-a-secret")
            .register(&web("web-1", "10.0.0.5"))
            .await,
    );
    let one = format!("/v1/services/{id}");
    let paths = [
        "/v1/services",
        one.as_str(),
        "/v1/discover/web",
        "/v1/types",
        "/metrics",
    ];
    for path in paths {
        for api in [server.api.clone(), server.with_token("wrong")] {
            let response = api.http.get(api.url(path)).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 401, "GET {path}");
            let challenge = response.headers().get("www-authenticate").cloned();
            assert_eq!(challenge.unwrap(), "Bearer");
            let body: Value = response.json().await.unwrap();
            assert!(error_of(&body).contains("token"), "{body}");
        }
        for secret in ["viewer-secret", "team-b-secret", "ops-secret"] {
            let status = server.with_token(secret).get(path).await.0;
            assert_eq!(status, 200, "GET {path} with {secret}");
        }
    }
    let (status, _) = EventStream::open(&server, "").await;
    assert_eq!(status, 401);
    let (status, events) = EventStream::open_with_token(&server, "", "viewer-secret").await;
    assert_eq!(status, 200);
    drop(events);
    let (status, body) = server.get("/v1/health").await;
    assert_eq!((status, body["status"].clone()), (200, json!("ok")));
    // The dashboard's files and the API description hold no data: open.
    for path in ["/ui", "/ui/app.js", "/v1/openapi.json"] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
    }
    // Changes without a token are 401 too, before the body is looked at.
    let (status, _) = server.try_register(&web("web-2", "10.0.0.1")).await;
    assert_eq!(status, 401);
    assert_eq!(server.deregister(&id).await.0, 401);
}

/// What a check read from its target (`check_output`) is shown only to
/// callers that may change the instance: its owner and admins, not to a
/// read token or another team, in the API and on `/v1/events`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_output_is_shown_only_to_who_may_write() {
    let server = with_tokens(|_| {}).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = closed.local_addr().unwrap();
    drop(closed);
    let (_, mut events) = EventStream::open_with_token(&server, "", "viewer-secret").await;
    let mut events = events.take().expect("a stream");
    let (_, mut owner_events) = EventStream::open_with_token(&server, "", "team-a-secret").await;
    let mut owner_events = owner_events.take().expect("a stream");
    let a = server.with_token("team-a-secret");
    let registration =
        web("web-1", "10.0.0.5").check(json!({"tcp": target.to_string(), "interval": 1}));
    let id = id_of(&a.register(&registration).await);
    let path = format!("/v1/services/{id}");
    let checked = eventually(Duration::from_secs(5), || async {
        a.get_ok(&path).await["check_output"].is_string()
    })
    .await;
    assert!(checked, "the check ran: {}", a.get_ok(&path).await);
    for (secret, shown) in [
        ("team-a-secret", true),
        ("ops-secret", true),
        ("team-b-secret", false),
        ("viewer-secret", false),
    ] {
        let api = server.with_token(secret);
        let one = api.get_ok(&path).await;
        let listed = api.list("").await.remove(0);
        for view in [one, listed] {
            assert_eq!(view["check_output"].is_string(), shown, "{secret}: {view}");
            assert_eq!(view["check_health"], "critical", "{view}");
        }
    }
    // The health change the check caused, as each subscriber sees it.
    for (stream, shown) in [(&mut events, false), (&mut owner_events, true)] {
        let health = loop {
            let event = stream
                .next_event(Duration::from_secs(5))
                .await
                .expect("events");
            if event["type"] == "health" {
                break event;
            }
        };
        let info = &health["data"]["service_info"];
        assert_eq!(info["check_output"].is_string(), shown, "{health}");
    }
}

/// The owner is stored with the instance: after a restart it is still
/// the owner's, and only the owner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_survives_a_restart() {
    let dir = ScratchDir::new("owner");
    let (url, _) = dir.sqlite();
    let start = || {
        let url = url.clone();
        with_tokens(move |config| config.store.url = url)
    };
    let server = start().await;
    let id = id_of(
        &server
            .with_token("team-a-secret")
            .register(&web("web-1", "10.0.0.5").ttl(60))
            .await,
    );
    server.stop().await;
    let server = start().await;
    let path = format!("/v1/services/{id}");
    let restored = server.with_token("viewer-secret").get_ok(&path).await;
    assert_eq!(restored["owner"], "team-a", "{restored}");
    let b = server.with_token("team-b-secret");
    assert_eq!(b.deregister(&id).await.0, 403);
    assert_eq!(b.try_register(&web("web-1", "10.6.6.6")).await.0, 403);
    assert_eq!(
        server.with_token("team-a-secret").deregister(&id).await.0,
        204
    );
}

/// A store written before owners were kept (schema 1) is migrated: its
/// instances come back with no owner, which only an admin may change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_owners_is_migrated() {
    let dir = ScratchDir::new("migrate");
    let (url, db) = dir.sqlite();
    let id = "6d1b1bb2-4a3c-4f7a-9d2e-1c1f2b3a4d5e";
    {
        let connection = rusqlite::Connection::open(&db).unwrap();
        let registration = json!({"name": "web-1", "type": "web", "host": "10.0.0.5",
            "port": 80, "ttl": 60});
        connection
            .execute_batch(&format!(
                "PRAGMA application_id = 1399287376;
                 PRAGMA user_version = 1;
                 CREATE TABLE instances (
                     id TEXT PRIMARY KEY, type TEXT NOT NULL, name TEXT NOT NULL,
                     registration TEXT NOT NULL, health TEXT NOT NULL,
                     registered_at_ms INTEGER NOT NULL, UNIQUE (type, name));
                 INSERT INTO instances VALUES ('{id}', 'web', 'web-1', '{registration}',
                     'passing', 1700000000000);"
            ))
            .unwrap();
    }
    let server = with_tokens(|config| config.store.url = url).await;
    let path = format!("/v1/services/{id}");
    let restored = server.with_token("viewer-secret").get_ok(&path).await;
    assert_eq!(restored["host"], "10.0.0.5");
    assert!(restored.get("owner").is_none(), "{restored}");
    let a = server.with_token("team-a-secret");
    assert_eq!(a.heartbeat(id, None).await.0, 403);
    assert_eq!(a.try_register(&web("web-1", "10.6.6.6")).await.0, 403);
    let ops = server.with_token("ops-secret");
    assert_eq!(ops.heartbeat(id, None).await.0, 200);
    server.stop().await;
    let connection = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, 2);
}

/// With no token, the API is open: said at start-up when the admin API
/// listens beyond loopback, and not when it listens on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_api_beyond_loopback_is_warned_about() {
    let warning = "beyond loopback, with no token";
    let mut open = Process::start(&[
        "--store",
        "memory",
        "--dns-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "0.0.0.0:0",
    ])
    .await;
    open.stop().await;
    assert!(open.logs().contains(warning), "{}", open.logs());
    let mut local = Process::start(&[
        "--store",
        "memory",
        "--dns-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .await;
    local.stop().await;
    assert!(!local.logs().contains(warning), "{}", local.logs());
}

/// The client library and `signpost register` carry a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_works_with_tokens() {
    let server = with_tokens(|_| {}).await;
    let address: signpost::client::Address = format!("http://{}", server.admin).parse().unwrap();
    let client = signpost::client::Client::at(address.clone()).with_token("team-a-secret");
    let service = signpost::client::NewService::new("web-1", "web", "10.0.0.5", 80);
    let registered = client.register_once(&service).await.expect("registered");
    assert_eq!(registered.owner.as_deref(), Some("team-a"));
    client
        .heartbeat(registered.id, signpost::client::Health::Passing, None)
        .await
        .expect("its own");
    let other = signpost::client::Client::at(address.clone()).with_token("team-b-secret");
    let refused = other.deregister(registered.id).await.unwrap_err();
    assert!(refused.to_string().contains("team-a"), "{refused}");
    let anonymous = signpost::client::Client::at(address);
    assert!(anonymous.list(&Default::default()).await.is_err());
}

// ---------------------------------------------------------------------------
// Smaller findings
// ---------------------------------------------------------------------------

/// Sends `request` as is over a new connection; returns the status and
/// the body, parsed as JSON (`Null` when it is not JSON).
async fn raw_http(server: &TestServer, request: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.admin).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply));
    read.await.expect("an answer").unwrap();
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {reply:?}"));
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A malformed chunked body is a bad request (400), not one too large
/// (413); a large one still is 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_400() {
    let server = TestServer::start().await;
    let head = "POST /v1/services HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    for body in ["zz\r\n{}\r\n0\r\n\r\n", "5\r\n{}\r\n0\r\n\r\n", "2\r\n{}XX"] {
        let (status, reply) = raw_http(&server, &format!("{head}{body}")).await;
        assert_eq!(status, 400, "{body:?}: {reply}");
        assert!(error_of(&reply).contains("body"), "{reply}");
    }
    let big = "x".repeat(70 * 1024);
    let chunked = format!("{head}{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let (status, reply) = raw_http(&server, &chunked).await;
    assert_eq!(status, 413, "{reply}");
    assert!(server.list("").await.is_empty());
}

/// A path parameter that is not UTF-8 once percent-decoded gets the JSON
/// error body, as every other error does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_is_not_utf8_gets_the_json_error() {
    let server = TestServer::start().await;
    for request in [
        "GET /v1/services/%FF HTTP/1.1",
        "DELETE /v1/services/%C3%28 HTTP/1.1",
        "PUT /v1/services/%FF/heartbeat HTTP/1.1",
        "GET /v1/discover/%FE%FF HTTP/1.1",
    ] {
        let request =
            format!("{request}\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        let (status, reply) = raw_http(&server, &request).await;
        assert_eq!(status, 400, "{request}: {reply}");
        assert!(error_of(&reply).contains("UTF-8"), "{reply}");
    }
}

// ---------------------------------------------------------------------------
// Check targets
// ---------------------------------------------------------------------------

/// A TCP listener that answers every connection with an HTTP page holding
/// a secret, counting connections.
async fn secret_page() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nsecret-key=42")
                .await;
        }
    });
    (addr, count)
}

/// The attack: a check to the cloud metadata address reads the host's
/// credentials into `check_output`. Now a check to a denied literal
/// (link-local, metadata, by default) is refused at registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_to_metadata_and_link_local_addresses_are_refused() {
    let server = TestServer::start().await;
    for (check, field) in [
        (
            json!({"http": "http://169.254.169.254/latest/meta-data/iam/"}),
            "check.http",
        ),
        (json!({"tcp": "169.254.169.254:80"}), "check.tcp"),
        (json!({"tcp": "169.254.10.1:22"}), "check.tcp"),
        (
            json!({"http": "http://[fd00:ec2::254]/latest/"}),
            "check.http",
        ),
        (json!({"tcp": "[fe80::1]:80"}), "check.tcp"),
        (json!({"tcp": "[::ffff:169.254.169.254]:80"}), "check.tcp"),
        (
            json!({"http": "http://100.100.100.200/latest/"}),
            "check.http",
        ),
    ] {
        let (status, body) = server
            .try_register(&web("web-1", "10.0.0.5").check(check.clone()))
            .await;
        assert_eq!(status, 422, "{check}: {body}");
        let error = error_of(&body);
        assert!(
            error.starts_with(field) && error.contains("checks.deny"),
            "{check}: {body}"
        );
    }
    assert!(server.list("").await.is_empty());
    // A check elsewhere is still fine.
    let check = json!({"tcp": "127.0.0.1:9", "interval": 60});
    let (status, body) = server
        .try_register(&web("web-1", "10.0.0.5").check(check))
        .await;
    assert_eq!(status, 201, "{body}");
}

/// A host name is judged by what it resolves to, at every check: a name
/// that resolves to a denied address is never connected to, and the check
/// says why. `localhost` stands in for a name pointed at the metadata
/// service, with loopback denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_to_a_denied_address_is_not_checked() {
    let (page, connections) = secret_page().await;
    let server = TestServer::start_with(|config| {
        config.checks.deny = vec!["127.0.0.0/8".into(), "::1".into()];
    })
    .await;
    // The literal is refused at once.
    let literal = json!({"http": format!("http://{page}/"), "interval": 1});
    let (status, body) = server
        .try_register(&web("web-1", "10.0.0.5").check(literal))
        .await;
    assert_eq!(status, 422, "{body}");
    // The name is accepted, and refused when the check runs.
    let by_name = json!({"http": format!("http://localhost:{}/", page.port()), "interval": 1});
    let id = id_of(
        &server
            .register(&web("web-1", "10.0.0.5").check(by_name))
            .await,
    );
    let path = format!("/v1/services/{id}");
    let checked = eventually(Duration::from_secs(5), || async {
        server.get_ok(&path).await["check_output"].is_string()
    })
    .await;
    let view = server.get_ok(&path).await;
    assert!(checked, "{view}");
    assert_eq!(view["check_health"], "critical", "{view}");
    let output = view["check_output"].as_str().unwrap();
    assert!(
        output.contains("not checked") && output.contains("checks.deny"),
        "{output}"
    );
    assert!(!output.contains("secret"), "{output}");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// With `checks.allow`, only its networks may be checked; and a check
/// registered before a policy denied its literal (restored from the
/// store) is judged again when it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_narrows_and_a_restored_check_is_judged_when_it_runs() {
    let (page, connections) = secret_page().await;
    let dir = ScratchDir::new("targets");
    let (url, _) = dir.sqlite();
    let open = {
        let url = url.clone();
        TestServer::start_with(move |config| config.store.url = url).await
    };
    let check = json!({"http": format!("http://{page}/"), "interval": 1});
    let id = id_of(
        &open
            .register(&web("web-1", "10.0.0.5").ttl(60).check(check.clone()))
            .await,
    );
    open.stop().await;
    let narrow = TestServer::start_with(move |config| {
        config.store.url = url;
        config.checks.allow = vec!["10.0.0.0/8".into()];
    })
    .await;
    let (status, body) = narrow
        .try_register(&web("web-2", "10.0.0.6").check(check))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(error_of(&body).contains("checks.allow"), "{body}");
    let before = connections.load(std::sync::atomic::Ordering::SeqCst);
    let path = format!("/v1/services/{id}");
    let checked = eventually(Duration::from_secs(5), || async {
        narrow.get_ok(&path).await["check_output"].is_string()
    })
    .await;
    let view = narrow.get_ok(&path).await;
    assert!(checked, "{view}");
    let output = view["check_output"].as_str().unwrap();
    assert!(output.contains("checks.allow"), "{output}");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        before
    );
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/// Certificates for the TLS tests, as PEM files in a scratch directory: a
/// CA, the server's certificate (localhost, 127.0.0.1) it signed, a client
/// certificate it signed (no CommonName) and one with a CommonName
/// (`named`), a client certificate of another CA, and a certificate for
/// both ends (`peer`: an etcd member presents it as a server, and to
/// itself as a client).
pub(crate) struct Pki {
    dir: ScratchDir,
    ca: rustls::pki_types::CertificateDer<'static>,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
            ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let dir = ScratchDir::new("tls");
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        let ca_params = || {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
        };
        let ca = CertifiedIssuer::self_signed(ca_params(), KeyPair::generate().unwrap()).unwrap();
        let other =
            CertifiedIssuer::self_signed(ca_params(), KeyPair::generate().unwrap()).unwrap();
        write("ca.pem", ca.pem());
        write("other-ca.pem", other.pem());
        let local = || vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (server, client) = (
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        for (name, issuer, sans, usages) in [
            ("server", &ca, local(), vec![server.clone()]),
            ("client", &ca, vec![], vec![client.clone()]),
            ("stranger", &other, vec![], vec![client.clone()]),
            ("named", &ca, vec![], vec![client.clone()]),
            ("peer", &ca, local(), vec![server, client]),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.extended_key_usages = usages;
            params.distinguished_name = DistinguishedName::new();
            if name == "named" {
                params
                    .distinguished_name
                    .push(DnType::CommonName, "node-b.example");
            }
            let cert = params.signed_by(&key, issuer).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        }
        Pki {
            ca: ca.der().clone(),
            dir,
        }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Sends `request` over TLS, trusting this CA (or `trust`), presenting
    /// the client certificate `client` ("client" or "stranger") when
    /// given; the status, or why there was none.
    async fn send(
        &self,
        server: &TestServer,
        request: &str,
        client: Option<&str>,
        trust: Option<&str>,
    ) -> Result<(u16, String), String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut roots = rustls::RootCertStore::empty();
        match trust {
            Some(file) => {
                for cert in CertificateDer::pem_file_iter(self.path(file)).unwrap() {
                    roots.add(cert.unwrap()).unwrap();
                }
            }
            None => roots.add(self.ca.clone()).unwrap(),
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some(name) => {
                let chain = CertificateDer::pem_file_iter(self.path(&format!("{name}.pem")))
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key =
                    PrivateKeyDer::from_pem_file(self.path(&format!("{name}-key.pem"))).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(server.admin).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let exchange = async {
            let mut tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tls.write_all(request.as_bytes())
                .await
                .map_err(|e| format!("write: {e}"))?;
            let mut reply = Vec::new();
            tls.read_to_end(&mut reply)
                .await
                .map_err(|e| format!("read: {e}"))?;
            let reply = String::from_utf8_lossy(&reply).into_owned();
            let status = reply
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("no HTTP answer: {reply:?}"))?;
            Ok((status, reply))
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .map_err(|_| "no answer within 5 s".to_string())?
    }

    /// `GET /v1/health` over TLS.
    async fn health(
        &self,
        server: &TestServer,
        client: Option<&str>,
    ) -> Result<(u16, String), String> {
        let request = "GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        self.send(server, request, client, None).await
    }
}

/// The admin API over TLS: HTTPS answers, with a token too; plain HTTP
/// on the same port gets no answer; a client that does not trust the
/// server's CA fails the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_speaks_tls() {
    let pki = Pki::new();
    let server = TestServer::start_with(|config| {
        config.admin.tls.cert = pki.path("server.pem");
        config.admin.tls.key = pki.path("server-key.pem");
        config.admin.tokens = vec![token("team-a", "team-a-secret", "register", &["web"])];
    })
    .await;
    let (status, reply) = pki.health(&server, None).await.expect("an answer");
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("\"status\":\"ok\""), "{reply}");
    let body = r#"{"name":"web-1","type":"web","host":"10.0.0.5","port":80}"#;
    let register = format!(
        "POST /v1/services HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer team-a-secret\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, reply) = pki.send(&server, &register, None, None).await.unwrap();
    assert_eq!(status, 201, "{reply}");
    assert!(reply.contains("\"owner\":\"team-a\""), "{reply}");
    // Plain HTTP to the TLS port: no HTTP answer comes back.
    let plain = server.http.get(server.url("/v1/health")).send().await;
    assert!(plain.is_err(), "{plain:?}");
    // A client that trusts another CA refuses the server.
    let error = pki
        .send(
            &server,
            "GET / HTTP/1.0\r\n\r\n",
            None,
            Some("other-ca.pem"),
        )
        .await
        .unwrap_err();
    assert!(error.contains("handshake"), "{error}");
}

/// With `admin.tls.client_ca`, only clients with a certificate that CA
/// signed get through: none, or one of another CA, fail the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_against_the_ca() {
    let pki = Pki::new();
    let server = TestServer::start_with(|config| {
        config.admin.tls.cert = pki.path("server.pem");
        config.admin.tls.key = pki.path("server-key.pem");
        config.admin.tls.client_ca = pki.path("ca.pem");
    })
    .await;
    let (status, _) = pki
        .health(&server, Some("client"))
        .await
        .expect("an answer");
    assert_eq!(status, 200);
    for client in [None, Some("stranger")] {
        let refused = pki.health(&server, client).await;
        assert!(refused.is_err(), "{client:?}: {refused:?}");
    }
    // The server still serves the right client after refusing others.
    assert_eq!(pki.health(&server, Some("client")).await.unwrap().0, 200);
}

/// A TLS setting that cannot work stops the start, naming the setting.
#[test]
fn bad_tls_settings_are_refused_naming_them() {
    let pki = Pki::new();
    let with = |cert: &str, key: &str, client_ca: &str| {
        let mut config = signpost::Config::default();
        config.admin.tls.cert = cert.into();
        config.admin.tls.key = key.into();
        config.admin.tls.client_ca = client_ca.into();
        config.validate().map(|_| ()).map_err(|e| e.to_string())
    };
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server-key.pem"),
        pki.path("ca.pem"),
    );
    assert!(with(&cert, &key, "").is_ok());
    assert!(with(&cert, &key, &ca).is_ok());
    for ((c, k, a), setting, why) in [
        ((cert.as_str(), "", ""), "admin.tls.key", "needs its key"),
        (
            ("", key.as_str(), ""),
            "admin.tls.cert",
            "needs its certificate",
        ),
        (("", "", ca.as_str()), "admin.tls.client_ca", "need TLS"),
        (
            ("/nonexistent.pem", key.as_str(), ""),
            "admin.tls.cert",
            "cannot read",
        ),
        (
            (cert.as_str(), cert.as_str(), ""),
            "admin.tls.key",
            "private key",
        ),
        (
            (cert.as_str(), pki.path("client-key.pem").as_str(), ""),
            "admin.tls.key",
            "does not go with",
        ),
        (
            (key.as_str(), key.as_str(), ""),
            "admin.tls.cert",
            "no PEM certificate",
        ),
        (
            (cert.as_str(), key.as_str(), key.as_str()),
            "admin.tls.client_ca",
            "no PEM",
        ),
    ] {
        let error = with(c, k, a).unwrap_err();
        assert!(
            error.contains(setting) && error.contains(why),
            "{c} {k} {a}: {error}"
        );
    }
}
