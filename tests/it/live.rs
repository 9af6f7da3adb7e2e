//! Answers are live: whatever the fast answer path keeps between queries
//! (prepared wire forms, per-thread buffers) never outlives a change. Each
//! test hammers a name first, so that anything cached would be warm, then
//! changes the registry and asserts that the very next answer, over UDP and
//! over TCP, shows the change: registration, replacement, deregistration,
//! health going critical and back, and expiry before the sweep runs.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::support::{Registration, TestServer, id_of, ipv4s, query_tcp, query_udp};

/// Queries `name` over UDP and over TCP; both answers, UDP first.
async fn both(server: SocketAddr, name: &str, qtype: RecordType) -> [Message; 2] {
    [
        query_udp(server, name, qtype, Some(1232)).await,
        query_tcp(server, name, qtype, Some(1232)).await,
    ]
}

/// What an answer says about instance names: the SRV targets' first labels,
/// the PTR instance labels, or the A addresses' last octet as `aN`.
fn members(response: &Message) -> BTreeSet<String> {
    response
        .answers
        .iter()
        .map(|record| match &record.data {
            RData::A(a) => format!("a{}", a.0.octets()[3]),
            RData::SRV(srv) => first_label(&srv.target.to_string()),
            RData::PTR(ptr) => first_label(&ptr.0.to_string()),
            other => panic!("unexpected record {other:?}"),
        })
        .collect()
}

fn first_label(name: &str) -> String {
    name.split('.').next().unwrap_or_default().to_string()
}

/// Asserts that every way of asking for type `web` shows exactly `expected`
/// (instance names `aN` at 10.0.0.N), over UDP and TCP.
async fn assert_served(server: &TestServer, expected: &[u8], context: &str) {
    let want: BTreeSet<String> = expected.iter().map(|n| format!("a{n}")).collect();
    for qtype in [RecordType::A, RecordType::SRV] {
        for response in both(server.dns, "web.svc.local.", qtype).await {
            assert_eq!(members(&response), want, "{context}: web {qtype}");
            let rcode = if want.is_empty() {
                ResponseCode::NXDomain
            } else {
                ResponseCode::NoError
            };
            assert_eq!(
                response.metadata.response_code, rcode,
                "{context}: web {qtype}"
            );
        }
    }
    for response in both(server.dns, "_web._tcp.svc.local.", RecordType::PTR).await {
        assert_eq!(members(&response), want, "{context}: _web._tcp PTR");
    }
    for n in 1..=3u8 {
        let name = format!("a{n}.web.svc.local.");
        for response in both(server.dns, &name, RecordType::A).await {
            let served = expected.contains(&n);
            let want = if served {
                vec![Ipv4Addr::new(10, 0, 0, n)]
            } else {
                vec![]
            };
            assert_eq!(ipv4s(&response.answers), want, "{context}: {name}");
        }
    }
}

/// Asks for the type often enough that anything cached would be warm.
async fn warm(server: &TestServer) {
    for _ in 0..50 {
        for qtype in [RecordType::A, RecordType::SRV] {
            query_udp(server.dns, "web.svc.local.", qtype, Some(1232)).await;
        }
        query_udp(
            server.dns,
            "_web._tcp.svc.local.",
            RecordType::PTR,
            Some(1232),
        )
        .await;
    }
}

/// Instance `a<n>` of type `web` at 10.0.0.n, port 8000 + n.
fn instance(n: u8, ttl: u32) -> Registration {
    let (name, host) = (format!("a{n}"), format!("10.0.0.{n}"));
    Registration::new(&name, "web", &host, 8000 + u16::from(n)).ttl(ttl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_shows_in_the_very_next_answer() {
    let server = TestServer::start().await;
    assert_served(&server, &[], "empty").await;
    let a1 = server.register(&instance(1, 60)).await;
    assert_served(&server, &[1], "after registering a1").await;
    warm(&server).await;
    let a2 = server.register(&instance(2, 60)).await;
    assert_served(&server, &[1, 2], "after registering a2").await;
    warm(&server).await;

    let (status, _) = server.heartbeat_reporting(&id_of(&a1), "critical").await;
    assert_eq!(status, 200);
    assert_served(&server, &[2], "a1 critical").await;
    warm(&server).await;
    let (status, _) = server.heartbeat_reporting(&id_of(&a1), "warning").await;
    assert_eq!(status, 200);
    assert_served(&server, &[1, 2], "a1 warning again").await;
    warm(&server).await;

    assert_eq!(server.deregister(&id_of(&a2)).await.0, 204);
    assert_served(&server, &[1], "a2 deregistered").await;
    warm(&server).await;

    // Replacing a1 in place with another address: the old one is gone at once.
    let body = Registration::new("a1", "web", "10.0.0.3", 8001).ttl(60);
    let (status, _) = server.try_register(&body).await;
    assert_eq!(status, 200, "a replacement");
    let [udp, tcp] = both(server.dns, "web.svc.local.", RecordType::A).await;
    for response in [udp, tcp] {
        assert_eq!(members(&response), BTreeSet::from(["a3".to_string()]));
    }
    assert_eq!(server.deregister(&id_of(&a1)).await.0, 204);
    assert_served(&server, &[], "all gone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_instance_is_never_answered_even_before_the_sweep() {
    let server = TestServer::start().await;
    server.register(&instance(2, 60)).await;
    // The server starts a1's lifetime while it handles the registration,
    // between these two instants, on the same monotonic clock: the
    // lifetime ends no sooner than `asked + TTL` and no later than
    // `registered + TTL` (give or take the server's whole milliseconds).
    let asked = Instant::now();
    let a1 = server.register(&instance(1, 1)).await;
    let registered = Instant::now();
    let lifetime = Duration::from_secs(1);
    let slack = Duration::from_millis(10);
    let served_until = asked + lifetime - slack;
    let gone_from = registered + lifetime + slack;
    let response = query_udp(server.dns, "a1.web.svc.local.", RecordType::A, Some(1232)).await;
    if Instant::now() < served_until {
        assert_eq!(ipv4s(&response.answers), [Ipv4Addr::new(10, 0, 0, 1)]);
    }
    warm(&server).await;
    // Query as fast as we can across the expiry, until ten queries were
    // sent after it. The sweep runs every 250 ms; answers must not wait
    // for it. A query sent after the lifetime must not show a1; one
    // answered before it must. Only those two bounds are assumed, so a
    // slow machine asks fewer questions in each window but cannot fail
    // the test by being slow.
    let mut seen_after = 0;
    let deadline = registered + Duration::from_secs(30);
    while seen_after < 10 {
        let sent = Instant::now();
        let response = query_udp(server.dns, "web.svc.local.", RecordType::A, Some(1232)).await;
        let answered = Instant::now();
        let has_a1 = members(&response).contains("a1");
        if sent > gone_from {
            assert!(
                !has_a1,
                "a1 answered to a query sent {:?} after its lifetime ended",
                sent - (registered + lifetime)
            );
            seen_after += 1;
        } else if answered < served_until {
            assert!(
                has_a1,
                "a1 missing {:?} before its lifetime could end",
                served_until - answered
            );
        }
        assert!(answered < deadline, "ten queries after expiry within 30 s");
    }
    let (status, _) = server.get(&format!("/v1/services/{}", id_of(&a1))).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_shuffled_afresh() {
    let server = TestServer::start().await;
    for n in 1..=8 {
        server.register(&instance(n, 60)).await;
    }
    for (name, qtype) in [
        ("web.svc.local.", RecordType::A),
        ("web.svc.local.", RecordType::SRV),
        ("_web._tcp.svc.local.", RecordType::PTR),
    ] {
        let mut orders = BTreeSet::new();
        for round in 0..20 {
            let response = if round % 2 == 0 {
                query_udp(server.dns, name, qtype, Some(1232)).await
            } else {
                query_tcp(server.dns, name, qtype, Some(1232)).await
            };
            assert_eq!(response.answers.len(), 8, "{name} {qtype}: the whole set");
            orders.insert(format!("{:?}", response.answers));
        }
        // 20 answers from 8! orders: a fair shuffle repeats one only rarely.
        assert!(
            orders.len() >= 15,
            "{name} {qtype}: only {} orders",
            orders.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_number_of_udp_threads_serves_the_same_port() {
    for threads in [1, 3] {
        let server = TestServer::start_with(|config| config.dns.threads = threads).await;
        server.register(&instance(1, 60)).await;
        // Many client sockets, so that SO_REUSEPORT spreads them over every
        // server socket: each must answer.
        for _ in 0..24 {
            let [udp, tcp] = both(server.dns, "a1.web.svc.local.", RecordType::A).await;
            assert_eq!(
                members(&udp),
                BTreeSet::from(["a1".to_string()]),
                "{threads}"
            );
            assert_eq!(
                members(&tcp),
                BTreeSet::from(["a1".to_string()]),
                "{threads}"
            );
        }
        server.stop().await;
    }
}
