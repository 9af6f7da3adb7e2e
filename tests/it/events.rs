//! `GET /v1/events` (README "Watching events"): server-sent events read off
//! a raw socket, the way `curl -N` would see them.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::support::{EventStream, Registration, Sse, TestServer, eventually, id_of, unix_now};

const WAIT: Duration = Duration::from_secs(5);

/// Opens a stream that must be accepted.
async fn open(server: &TestServer, query: &str) -> EventStream {
    let (status, stream) = EventStream::open(server, query).await;
    assert_eq!(status, 200, "GET /v1/events{query}");
    stream.unwrap()
}

/// Asserts the shape every event has and returns `(type, name, id)`.
fn summary(event: &Value) -> (String, String, String) {
    let kind = event["type"]
        .as_str()
        .unwrap_or_else(|| panic!("type: {event}"));
    let timestamp = event["timestamp"]
        .as_f64()
        .unwrap_or_else(|| panic!("timestamp: {event}"));
    assert!(
        (timestamp - unix_now()).abs() < 30.0,
        "timestamp is unix seconds: {event}"
    );
    let data = &event["data"];
    let id = data["service_id"]
        .as_str()
        .unwrap_or_else(|| panic!("service_id: {event}"));
    let info = &data["service_info"];
    assert_eq!(
        info["id"],
        json!(id),
        "service_info is the service object: {event}"
    );
    let name = info["name"].as_str().unwrap().to_string();
    (kind.to_string(), name, id.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_health_deregister_and_expire_arrive_in_order() {
    let server = TestServer::start().await;
    let mut events = open(&server, "").await;

    let first = server
        .register(&Registration::new("a", "web", "10.0.0.1", 80).ttl(60))
        .await;
    let first_id = id_of(&first);
    assert_eq!(
        server.heartbeat_reporting(&first_id, "warning").await.0,
        200
    );
    // A heartbeat that changes nothing is no event.
    assert_eq!(
        server.heartbeat_reporting(&first_id, "warning").await.0,
        200
    );
    assert_eq!(server.deregister(&first_id).await.0, 204);
    let second = server
        .register(&Registration::new("a", "web", "10.0.0.1", 80).ttl(1))
        .await;
    let second_id = id_of(&second);

    let mut seen = Vec::new();
    while seen.len() < 5 {
        let event = events
            .next_event(WAIT)
            .await
            .unwrap_or_else(|| panic!("five events within {WAIT:?}; got {seen:?}"));
        seen.push(event);
    }
    let summaries: Vec<_> = seen.iter().map(summary).collect();
    let expected = [
        ("register", &first_id),
        ("health", &first_id),
        ("deregister", &first_id),
        ("register", &second_id),
        ("expire", &second_id),
    ];
    for ((kind, name, id), (want_kind, want_id)) in summaries.iter().zip(expected) {
        assert_eq!((kind.as_str(), id), (want_kind, want_id), "{seen:?}");
        assert_eq!(name, "a");
    }
    let health = &seen[1]["data"];
    assert_eq!(health["service_info"]["health"], "warning");
    assert_eq!(health["previous"], "passing");
    assert!(seen[2]["data"]["reason"].is_string(), "{}", seen[2]);
    assert!(seen[4]["data"]["reason"].is_string(), "{}", seen[4]);
    assert_eq!(seen[0]["data"]["replaced"], false);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_type_filter_keeps_one_type() {
    let server = TestServer::start().await;
    let mut web = open(&server, "?type=WEB").await;
    let mut all = open(&server, "").await;
    for (name, service_type, host, port) in [
        ("db-1", "db", "10.0.0.1", 5432),
        ("web-1", "web", "10.0.0.2", 80),
        ("db-2", "db", "10.0.0.3", 5432),
        ("web-2", "web", "10.0.0.4", 80),
    ] {
        let registration = Registration::new(name, service_type, host, port).ttl(60);
        server.register(&registration).await;
    }

    let mut names = Vec::new();
    for _ in 0..4 {
        let event = all.next_event(WAIT).await.expect("every event");
        names.push(summary(&event).1);
    }
    assert_eq!(names, ["db-1", "web-1", "db-2", "web-2"]);
    let mut names = Vec::new();
    for _ in 0..2 {
        let event = web.next_event(WAIT).await.expect("web events");
        names.push(summary(&event).1);
    }
    assert_eq!(names, ["web-1", "web-2"]);
    assert!(
        web.next_event(Duration::from_millis(500)).await.is_none(),
        "nothing of another type"
    );

    for (query, needle) in [("?type=-bad", "type"), ("?kind=web", "kind")] {
        let (status, stream) = EventStream::open(&server, query).await;
        assert_eq!(status, 400, "{query}");
        assert!(stream.is_none());
        let (_, body) = server.get(&format!("/v1/events{query}")).await;
        assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_comments_flow_on_an_idle_stream() {
    let server = TestServer::start_with(|c| c.admin.events_keep_alive = 1).await;
    let mut events = open(&server, "").await;
    for _ in 0..2 {
        match events.next_within(Duration::from_secs(3)).await {
            Some(Sse::Comment(_)) => {}
            other => panic!("a keep-alive comment every second, got {other:?}"),
        }
    }
    assert_eq!(server.metric("signpost_event_subscribers").await, Some(1.0));
    drop(events);
    assert!(
        eventually(WAIT, || async {
            server.metric("signpost_event_subscribers").await == Some(0.0)
        })
        .await,
        "a closed stream is no longer counted"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_gets_lagged_and_slows_nothing() {
    const COUNT: usize = 600;
    let server = TestServer::start_with(|c| c.admin.events_buffer = 16).await;
    // A consumer that reads nothing, with a small receive window.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let (status, stalled) = EventStream::open_on(socket, &server, "").await;
    assert_eq!(status, 200);
    let mut stalled = stalled.unwrap();

    // Big events (about 16 KiB each) fill every socket buffer quickly.
    let metadata: serde_json::Map<String, Value> = (0..60)
        .map(|n| (format!("key{n:02}"), json!("v".repeat(240))))
        .collect();
    let registrations = async {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..8 {
            let api = server.api.clone();
            let metadata = Value::Object(metadata.clone());
            tasks.spawn(async move {
                for n in (worker..COUNT).step_by(8) {
                    let registration =
                        Registration::new(&format!("i{n:04}"), "web", "10.0.0.1", 80)
                            .ttl(300)
                            .set("metadata", metadata.clone());
                    api.register(&registration).await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), registrations)
        .await
        .expect("registrations complete while the consumer is stalled");
    let answer = server.query("i0000.web.svc.local", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        answer.answers.len(),
        1,
        "DNS answers while the consumer is stalled"
    );

    let marker = server
        .register(&Registration::new("marker", "web", "10.0.0.2", 80))
        .await;
    // Now read: first what the buffers held, then a lagged notice, then on.
    let mut registered = 0;
    let mut missed = 0;
    loop {
        let event = stalled
            .next_event(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| {
                panic!("the stream goes on ({registered} registers, {missed} missed)")
            });
        match event["type"].as_str().unwrap() {
            "lagged" => {
                let n = event["data"]["missed"].as_u64().expect("missed is a count");
                assert!(n > 0, "{event}");
                missed += n;
            }
            "register" if event["data"]["service_id"] == marker["id"] => break,
            "register" => registered += 1,
            other => panic!("unexpected {other}: {event}"),
        }
    }
    assert!(missed > 0, "the stalled consumer was told it missed events");
    assert_eq!(
        registered + missed as usize,
        COUNT,
        "every event was either delivered or counted as missed"
    );
    assert_eq!(
        server.metric("signpost_events_missed_total").await,
        Some(missed as f64)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams() {
    let server = TestServer::start().await;
    let mut events = open(&server, "").await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), server.stop()).await;
    assert!(
        stopped.is_ok(),
        "an open event stream does not hold up shutdown"
    );
    assert!(
        events.ends_within(Duration::from_secs(2)).await,
        "the stream is closed"
    );
}
