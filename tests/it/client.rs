//! The client library, `signpost::client`, against a real server: typed
//! errors, a registration that keeps itself alive (and registers again,
//! and leaves), the event stream with its resyncs, and the blocking
//! wrapper.

use std::time::Duration;

use serde_json::json;
use signpost::client::{
    self, ChangeKind, Client, Error, Event, Filter, Health, NewService, ResyncCause,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::commands::{closed_port, subscribed};
use crate::support::{Registration, TestServer, eventually, id_of};

fn client_of(server: &TestServer) -> Client {
    Client::new(&format!("http://{}", server.admin)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_return_typed_results_and_errors() {
    let server = TestServer::start().await;
    let client = client_of(&server);
    let view = client
        .register_once(
            &NewService::new("web-1", "web", "10.0.0.5", 8080)
                .tag("api")
                .ttl(60),
        )
        .await
        .unwrap();
    assert_eq!(
        (view.name.as_str(), view.ttl, view.health),
        ("web-1", 60, Health::Passing)
    );
    assert_eq!(client.service(view.id).await.unwrap(), view);
    let found = client.discover("web", Some("api")).await.unwrap();
    assert_eq!(found.id, view.id);
    let listed = client.list(&Filter::of_type("web")).await.unwrap();
    assert_eq!(listed.len(), 1);
    let types = client.types().await.unwrap();
    assert_eq!(
        (types[0].service_type.as_str(), types[0].serving),
        ("web", 1)
    );
    assert_eq!(client.health().await.unwrap().instances, 1);
    let beat = client
        .heartbeat(view.id, Health::Warning, Some("slow"))
        .await
        .unwrap();
    assert_eq!(
        (beat.health, beat.output.as_deref()),
        (Health::Warning, Some("slow"))
    );
    client.deregister(view.id).await.unwrap();

    let gone = client.deregister(view.id).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone:?}");
    let none = client.discover("web", None).await.unwrap_err();
    assert_eq!(none.to_string(), "no serving instance of type \"web\"");
    let refused = client
        .register_once(&NewService::new("web-1", "web", "10.0.0.5", 0))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Refused { status: 422, message } if message.contains("port")),
        "{refused:?}"
    );

    let address = closed_port();
    let away = Client::new(&address.to_string())
        .unwrap()
        .list(&Filter::all())
        .await
        .unwrap_err();
    match away {
        Error::Unreachable { address: tried, .. } => assert_eq!(tried, format!("http://{address}")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_heartbeats_registers_again_and_deregisters_on_close() {
    let server = TestServer::start().await;
    let client = client_of(&server);
    let registration = client
        .register(NewService::new("web-1", "web", "10.0.0.5", 8080).ttl(1))
        .await
        .unwrap();
    let first = registration.id().unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        server.get(&format!("/v1/services/{first}")).await.0,
        200,
        "alive past 2 TTLs"
    );

    registration.report(Health::Critical, Some("draining".into()));
    let reported = eventually(Duration::from_secs(2), || async {
        server.get_ok(&format!("/v1/services/{first}")).await["health"] == "critical"
    })
    .await;
    assert!(reported, "a report is sent at once");

    // Removed behind its back: the next heartbeat is a 404, and it
    // registers again (a new id), reporting what it reported before.
    server.deregister(&first.to_string()).await;
    let again = eventually(Duration::from_secs(3), || async {
        registration.id().is_some_and(|id| id != first)
    })
    .await;
    assert!(again, "registered again");
    let second = registration.id().unwrap();
    let critical = eventually(Duration::from_secs(2), || async {
        server.get_ok(&format!("/v1/services/{second}")).await["health"] == "critical"
    })
    .await;
    assert!(critical);

    registration.close().await.unwrap();
    assert!(
        server
            .gone_within(&second.to_string(), Duration::ZERO)
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_registration_deregisters_and_keep_registered_waits_for_the_registry() {
    let admin = closed_port();
    let client = Client::new(&admin.to_string()).unwrap();
    let registration =
        client.keep_registered(NewService::new("job-1", "job", "10.0.0.7", 80).ttl(5));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(registration.id(), None);
    let server = TestServer::start_with(|config| config.admin.listen = admin).await;
    let view = tokio::time::timeout(Duration::from_secs(8), registration.registered())
        .await
        .expect("registered once the registry is up");
    assert_eq!(server.list("").await.len(), 1);
    drop(registration);
    assert!(
        server
            .gone_within(&view.id.to_string(), Duration::from_secs(2))
            .await
    );
}

/// The next event, within 5 s.
async fn next(events: &mut client::Events) -> Event {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event within 5 s")
        .expect("not refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_typed_and_a_restart_gives_a_resync() {
    let server = TestServer::start().await;
    let (admin, dns) = (server.admin, server.dns);
    let client = client_of(&server);
    let mut events = client.events(Some("web")).await.unwrap();
    subscribed(&server).await;
    let id = id_of(
        &server
            .register(&Registration::new("web-1", "web", "10.0.0.5", 80))
            .await,
    );
    server.heartbeat_reporting(&id, "warning").await;
    let Event::Change(registered) = next(&mut events).await else {
        panic!("a change")
    };
    assert_eq!(registered.kind, ChangeKind::Register);
    assert_eq!(registered.service.as_ref().unwrap().name, "web-1");
    assert!(
        registered.json.contains("\"type\":\"register\""),
        "{}",
        registered.json
    );
    let Event::Change(health) = next(&mut events).await else {
        panic!("a change")
    };
    assert_eq!(
        (&health.kind, health.previous()),
        (&ChangeKind::Health, Some(Health::Passing))
    );

    server.stop().await;
    let server = TestServer::start_with(|config| {
        config.admin.listen = admin;
        config.dns.listen = dns;
    })
    .await;
    let Event::Resync(resync) = tokio::time::timeout(Duration::from_secs(15), events.next())
        .await
        .unwrap()
        .unwrap()
    else {
        panic!("a resync")
    };
    assert_eq!(resync.cause, ResyncCause::Reconnected);
    assert_eq!(
        resync.services,
        Some(vec![]),
        "the restarted server is empty"
    );
    server
        .register(&Registration::new("web-2", "web", "10.0.0.6", 80))
        .await;
    let Event::Change(again) = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
    else {
        panic!("a change")
    };
    assert_eq!(again.service.unwrap().name, "web-2");
}

/// A stand-in server: `/v1/events` sends a keep-alive and a `lagged`
/// event, then closes; `/v1/services` lists one instance.
async fn lagging_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = json!({"id": uuid::Uuid::new_v4(), "name": "web-1", "type": "web",
        "host": "10.0.0.5", "port": 80, "tags": [], "metadata": {}, "ttl": 30, "priority": 0,
        "weight": 1, "registered_at": 1.0, "last_heartbeat": 1.0, "expires_at": 31.0,
        "health": "passing"});
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let service = service.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let n = stream.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..n]).to_string();
                let reply = if request.starts_with("GET /v1/events") {
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n: keep-alive\n\n\
                     data: {\"type\":\"lagged\",\"timestamp\":2.5,\"data\":{\"missed\":5}}\n\n"
                        .to_string()
                } else {
                    let body = json!({ "services": [service] }).to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagged_gives_a_resync_with_the_full_state() {
    let addr = lagging_server().await;
    let client = Client::new(&addr.to_string()).unwrap();
    let mut events = client.events(None).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    let Event::Resync(resync) = next else {
        panic!("a resync: {next:?}")
    };
    assert_eq!(resync.cause, ResyncCause::Lagged { missed: 5 });
    assert_eq!(resync.services.unwrap()[0].name, "web-1");
    assert!(resync.json.unwrap().contains("lagged"));
    // The stand-in closed the stream: the client reconnects and resyncs.
    let next = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(next, Event::Resync(ref r) if r.cause == ResyncCause::Reconnected),
        "{next:?}"
    );

    let mut quiet = client.events(None).await.unwrap().resync(false);
    let next = tokio::time::timeout(Duration::from_secs(5), quiet.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(next, Event::Resync(ref r) if r.services.is_none()),
        "{next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_client_works_without_a_runtime() {
    let server = TestServer::start().await;
    let address = format!("http://{}", server.admin);
    let thread = std::thread::spawn(move || {
        let client = client::blocking::Client::new(&address).unwrap();
        let registration = client
            .register(NewService::new("worker-1", "worker", "10.0.0.9", 9000).ttl(1))
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let found = client.discover("worker", None).unwrap();
        assert_eq!(Some(found.id), registration.id(), "kept alive past its TTL");
        let listed = client.list(&Filter::all()).unwrap();
        assert_eq!(listed.len(), 1);
        let mut events = client.events(Some("worker")).unwrap();
        registration.close().unwrap();
        let event = events.next().unwrap().unwrap();
        assert!(
            matches!(event, Event::Change(ref c) if c.kind == ChangeKind::Deregister),
            "{event:?}"
        );
        client.list(&Filter::all()).unwrap()
    });
    let left = tokio::task::spawn_blocking(move || thread.join())
        .await
        .unwrap()
        .expect("the blocking client's thread did not panic");
    assert!(left.is_empty(), "{left:?}");
}
