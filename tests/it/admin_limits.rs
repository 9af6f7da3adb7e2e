//! Limits that keep one admin client from taking everything (README
//! "Security"): connections per source, an idle cap, a cap on event
//! streams, refusals logged at most once per ten seconds, caps on the
//! registry's size (507) and on registrations per source (429).
//!
//! A second client is told apart by its source address: loopback is a /8,
//! so binding 127.0.0.2 (or 127.0.1.2, another /24) is a different source.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{Process, Registration, ScratchDir, TestServer};

async fn connect_from(server: SocketAddr, from: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.into(), 0)).unwrap();
    socket.connect(server).await.unwrap()
}

/// Whether the server closes `stream` within `limit` (reading and
/// discarding whatever it sends first).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// An HTTP client whose connections come from `from`.
fn client_from(from: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(from))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `GET /v1/health` from `from`: its status, or `None` if the connection
/// was refused or closed.
async fn health_from(server: SocketAddr, from: Ipv4Addr) -> Option<u16> {
    let reply = client_from(from)
        .get(format!("http://{server}/v1/health"))
        .send()
        .await
        .ok()?;
    Some(reply.status().as_u16())
}

/// Registers `registration` with `client`: status, body and headers.
async fn register_with(
    client: &reqwest::Client,
    server: SocketAddr,
    registration: &Registration,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let reply = client
        .post(format!("http://{server}/v1/services"))
        .json(registration)
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    let headers = reply.headers().clone();
    let body = reply.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

fn web(name: &str) -> Registration {
    Registration::new(name, "web", "10.0.0.1", 80).ttl(300)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_hold_every_admin_slot() {
    let server = TestServer::start_with(|config| {
        config.admin.max_connections = 8;
        config.admin.max_connections_per_source = 4;
    })
    .await;
    let attacker = Ipv4Addr::new(127, 0, 0, 1);
    // The attack: open as many connections as it can and sit on them.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(server.admin, attacker).await);
    }
    let mut refused = 0;
    for _ in 0..20 {
        let mut extra = connect_from(server.admin, attacker).await;
        if closed_within(&mut extra, Duration::from_secs(2)).await {
            refused += 1;
        }
    }
    assert_eq!(refused, 20, "beyond its share, every connection is closed");
    // Everyone else is served: probes and registrations alike.
    let other = Ipv4Addr::new(127, 0, 0, 2);
    assert_eq!(health_from(server.admin, other).await, Some(200));
    let (status, body, _) = register_with(&client_from(other), server.admin, &web("w1")).await;
    assert_eq!(status, 201, "{body}");
    // The attacker gets its slots back as it closes them.
    held.pop();
    assert!(
        crate::support::eventually(Duration::from_secs(5), || async {
            health_from(server.admin, attacker).await == Some(200)
        })
        .await
    );
    let metrics = client_from(other)
        .get(format!("http://{}/metrics", server.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let closed = crate::support::metric(
        &metrics,
        "signpost_admin_connections_closed_total{reason=\"per_source\"}",
    );
    assert!(closed >= Some(20.0), "counted: {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_moves_no_byte_is_closed_but_an_event_stream_is_not() {
    let server = TestServer::start_with(|config| {
        config.admin.idle_timeout = 2;
        config.admin.events_keep_alive = 1;
        config.admin.header_read_timeout = 30;
    })
    .await;
    let here = Ipv4Addr::new(127, 0, 0, 1);
    // Connected, never a byte.
    let mut silent = connect_from(server.admin, here).await;
    // One request, then an idle keep-alive.
    let mut kept = connect_from(server.admin, here).await;
    kept.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let n = kept.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    // A stream whose keep-alive comments move bytes every second.
    let mut events = connect_from(server.admin, here).await;
    events
        .write_all(b"GET /v1/events HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();

    let started = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(6)).await);
    assert!(closed_within(&mut kept, Duration::from_secs(6)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "not before the idle time: {:?}",
        started.elapsed()
    );
    assert!(
        !closed_within(&mut events, Duration::from_secs(4)).await,
        "the event stream stays open past the idle time"
    );
    let closed = server
        .metric("signpost_admin_connections_closed_total{reason=\"idle\"}")
        .await;
    assert!(closed >= Some(2.0), "counted: {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_have_a_cap_of_their_own() {
    let server = TestServer::start_with(|config| {
        config.admin.events_max_streams = 2;
    })
    .await;
    let url = server.url("/v1/events");
    let http = reqwest::Client::new();
    let first = http.get(&url).send().await.unwrap();
    let second = http.get(&url).send().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = http.get(&url).send().await.unwrap();
    assert_eq!(third.status(), 503);
    assert_eq!(third.headers()["retry-after"], "1");
    let body: Value = third.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("admin.events_max_streams"), "{error}");
    // The rest of the API is untouched, and a closed stream frees its slot.
    assert_eq!(server.get("/v1/health").await.0, 200);
    drop(first);
    assert!(
        crate::support::eventually(Duration::from_secs(5), || async {
            http.get(&url).send().await.unwrap().status() == 200
        })
        .await
    );
    // At least the one refused above (the wait may have been refused too).
    let refused = server.metric("signpost_events_refused_total").await;
    assert!(refused >= Some(1.0), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_logged_once_per_ten_seconds_not_once_each() {
    let dir = ScratchDir::new("refusal-log");
    let config = dir.path().join("signpost.toml");
    std::fs::write(
        &config,
        "[dns]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         max_connections_per_source = 1\n[store]\nurl = \"memory\"\n",
    )
    .unwrap();
    let server = Process::start_in(dir.path(), &["--config", config.to_str().unwrap()]).await;
    let here = Ipv4Addr::new(127, 0, 0, 1);
    let _held = connect_from(server.admin, here).await;
    for _ in 0..300 {
        let mut extra = connect_from(server.admin, here).await;
        assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
    }
    assert_eq!(
        server.metric_from(Ipv4Addr::new(127, 0, 0, 2)).await,
        Some(300.0)
    );
    let lines = server.logs();
    let refusals = lines
        .lines()
        .filter(|line| line.contains("per source reached"))
        .count();
    assert_eq!(refusals, 1, "one line for 300 refusals:\n{lines}");
}

impl Process {
    /// The per-source refusals counted in `/metrics`, read from `from`.
    async fn metric_from(&self, from: Ipv4Addr) -> Option<f64> {
        let text = client_from(from)
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        crate::support::metric(
            &text,
            "signpost_admin_connections_closed_total{reason=\"per_source\"}",
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_registry_answers_507_and_still_takes_replacements() {
    let server = TestServer::start_with(|config| {
        config.registry.max_instances = 3;
        config.registry.max_types = 2;
    })
    .await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let service = server.register(&web(name)).await;
        ids.push(service["id"].as_str().unwrap().to_string());
    }
    let (status, body) = server.try_register(&web("d")).await;
    assert_eq!(status, 507, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("registry.max_instances"), "{error}");
    assert_eq!(server.list("").await.len(), 3, "nothing was added");
    // A replacement takes no room.
    let (status, body) = server
        .try_register(&Registration::new("a", "web", "10.0.0.9", 81))
        .await;
    assert_eq!(status, 200, "{body}");
    // Room comes back with a deregistration.
    assert_eq!(server.deregister(&ids[1]).await.0, 204);
    server
        .register(&Registration::new("x", "db", "10.0.0.2", 5432))
        .await;
    // Types: web and db exist; a third is refused even with room for it.
    assert_eq!(server.deregister(&ids[2]).await.0, 204);
    let (status, body) = server
        .try_register(&Registration::new("q", "queue", "10.0.0.3", 5672))
        .await;
    assert_eq!(status, 507, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("registry.max_types"), "{error}");
    server.register(&web("e")).await;
    let full = server
        .metric("signpost_registrations_total{result=\"full\"}")
        .await;
    assert_eq!(full, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_over_the_rate_of_a_source_are_answered_429() {
    let server = TestServer::start_with(|config| {
        config.registry.registrations_per_source = 5;
    })
    .await;
    let flooder = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let mut accepted = 0;
    let mut limited = None;
    for n in 0..30 {
        let (status, body, headers) =
            register_with(&flooder, server.admin, &web(&format!("f{n}"))).await;
        match status {
            201 => accepted += 1,
            429 => {
                limited = Some((body, headers));
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let (body, headers) = limited.expect("the flood is limited");
    // At most two seconds' worth, if the flood straddled a second.
    assert!(accepted <= 10, "{accepted} accepted before the first 429");
    assert_eq!(headers["retry-after"], "1");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("registry.registrations_per_source"),
        "{error}"
    );
    // Another source (another /24) is not held back; the flooder may go on
    // after a second.
    let other = client_from(Ipv4Addr::new(127, 0, 1, 2));
    let (status, body, _) = register_with(&other, server.admin, &web("other")).await;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body, _) = register_with(&flooder, server.admin, &web("later")).await;
    assert_eq!(status, 201, "{body}");
    let limited = server
        .metric("signpost_registrations_total{result=\"limited\"}")
        .await;
    assert_eq!(limited, Some(1.0));
}
