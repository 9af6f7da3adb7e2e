//! Lifetime and health seen from outside: an instance lives one TTL past its
//! registration or its last heartbeat, then is gone from DNS and the admin
//! API at once and must register again; `critical` keeps it registered but
//! out of DNS (README "The admin API", "Heartbeats" and "Record TTLs").
//! Tested here: TTL expiry in DNS and the admin API, heartbeats keeping an
//! instance alive, health changes, record TTLs capped by the remaining
//! lifetime, and deregistration.
//!
//! TTLs are short (1-3 s), so the file stays fast. Whether an instance must
//! be served, or must not be, is decided only from bounds the server's own
//! times give: its lifetime starts while the server handles the request
//! (after the client sent it, before the answer came back) on the clock the
//! test reads too, or ends at the `expires_at` it reports. A slow machine
//! then makes a test check less, or wait longer, but never fail by being
//! slow; every other wait is a poll with a generous deadline.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use serde_json::json;

use crate::support::{Registration, TestServer, eventually, id_of, ipv4s, unix_now};

/// `<type>.svc.local A`: the addresses served, or an empty list when the
/// answer is the negative one (asserting it is NXDOMAIN then: no serving
/// instance is left under the name).
async fn served(server: &TestServer, service_type: &str) -> Vec<Ipv4Addr> {
    let response = server
        .query(&format!("{service_type}.svc.local."), RecordType::A)
        .await;
    let rcode = response.metadata.response_code;
    if response.answers.is_empty() {
        assert_eq!(rcode, ResponseCode::NXDomain, "{response:?}");
    } else {
        assert_eq!(rcode, ResponseCode::NoError, "{response:?}");
    }
    ipv4s(&response.answers)
}

const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// Waits half a sweep interval (125 ms) after the server started. The
/// sweep runs every 250 ms from the start, so an instance registered at
/// once with a whole-second TTL lapses just as a sweep runs, which would
/// remove it before a test could see whether DNS still served it; one
/// registered now lapses halfway between two sweeps.
async fn half_a_sweep_later() {
    tokio::time::sleep(Duration::from_millis(125)).await;
}

// ---------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_heartbeats_expires_everywhere() {
    let server = TestServer::start().await;
    half_a_sweep_later().await;
    let ttl = Duration::from_secs(1);
    let asked = Instant::now();
    let service = server
        .register(&Registration::new("web-1", "web", "10.0.0.1", 8080).ttl(1))
        .await;
    let registered = Instant::now();
    let id = id_of(&service);
    let path = &format!("/v1/services/{id}");

    // There right after registering, for whatever was answered before the
    // lifetime (which started after `asked`) can have ended.
    let live = |now: Instant| now + Duration::from_millis(10) < asked + ttl;
    let addresses = served(&server, "web").await;
    if live(Instant::now()) {
        assert_eq!(addresses, vec![ADDR]);
    }
    let (status, body) = server.get(path).await;
    if live(Instant::now()) {
        assert_eq!(status, 200, "{body}");
    }
    let count = server.list("").await.len();
    if live(Instant::now()) {
        assert_eq!(count, 1);
    }

    // Gone once the lifetime (which started before `registered`) is over:
    // from DNS, GET and the list, at once, sweep or no sweep.
    tokio::time::sleep_until((registered + ttl + Duration::from_millis(10)).into()).await;
    let server = &server;
    assert!(served(server, "web").await.is_empty(), "not in DNS");
    assert_eq!(server.get(path).await.0, 404, "not by id");
    assert!(server.list("").await.is_empty(), "not listed");
    let (status, body) = server.get("/v1/types").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"types": []}), "no type left");
    let (status, _) = server.get("/v1/discover/web").await;
    assert_eq!(status, 404);

    // The client must register again.
    let (status, body) = server.heartbeat_reporting(&id, "passing").await;
    assert_eq!(status, 404, "heartbeat after expiry: {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains(&id)),
        "{body}"
    );
    assert_eq!(
        server.deregister(&id).await.0,
        404,
        "nothing left to delete"
    );

    // The sweep removed it and counted it (it runs every 250 ms), even
    // though the DELETE above may have reached it first.
    let expired = eventually(Duration::from_secs(10), || async move {
        server.metric("signpost_expired_total").await == Some(1.0)
    })
    .await;
    assert!(expired, "expiry counted:\n{}", server.metrics().await);
    assert!(served(server, "web").await.is_empty(), "and it stays gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_serves_until_expiry_and_never_after() {
    let server = TestServer::start().await;
    // Five instances (one type each) whose expiries are spread over 250 ms,
    // so that some lapse well before the next sweep: the answer must follow
    // the lifetime itself, not wait for the sweep to remove the instance.
    // The server's clock and ours are the same machine's; allow a little for
    // rounding and clock reads.
    let margin = 0.02;
    let mut pending = Vec::new();
    for i in 0..5 {
        let service_type = format!("t{i}");
        let service = server
            .register(&Registration::new("web-1", &service_type, "10.0.0.1", 8080).ttl(2))
            .await;
        let expires_at = service["expires_at"].as_f64().unwrap();
        // Served right after registering (however long the others took).
        let addresses = served(&server, &service_type).await;
        let before = if unix_now() < expires_at - margin {
            assert_eq!(
                addresses,
                vec![ADDR],
                "{service_type} right after registering"
            );
            1
        } else {
            0
        };
        pending.push((service_type, expires_at, before, 0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while pending.iter().any(|(_, _, _, after)| *after < 3) {
        for (service_type, expires_at, before, after) in &mut pending {
            let sent = unix_now();
            let addresses = served(&server, service_type).await;
            let received = unix_now();
            if received < *expires_at - margin {
                // Answered before expiry: it must be served.
                assert_eq!(
                    addresses,
                    vec![ADDR],
                    "{service_type}: not served {:.3} s before expiry",
                    *expires_at - received
                );
                *before += 1;
            }
            if sent > *expires_at + margin {
                // Asked after expiry: never served, sweep or no sweep.
                assert!(
                    addresses.is_empty(),
                    "{service_type}: served {:.3} s after expiry",
                    sent - *expires_at
                );
                *after += 1;
            }
        }
        assert!(
            Instant::now() < deadline,
            "every expiry observed within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (service_type, _, before, _) in &pending {
        assert!(*before > 0, "{service_type} was served before expiry");
    }
}

/// The names a tag makes follow the lifetime too: served before expiry,
/// gone (NXDOMAIN) right after it, sweep or no sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_names_serve_until_expiry_and_never_after() {
    let server = TestServer::start().await;
    half_a_sweep_later().await;
    let body = server
        .register(
            &Registration::new("web-1", "web", "10.0.0.1", 8080)
                .ttl(2)
                .tag("canary"),
        )
        .await;
    let expires_at = body["expires_at"].as_f64().unwrap();
    let margin = 0.02;
    let (mut before, mut after) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while after < 3 {
        let sent = unix_now();
        let a = server
            .query("_canary._sub.web.svc.local.", RecordType::A)
            .await;
        let ptr = server
            .query("_canary._sub._web._tcp.svc.local.", RecordType::PTR)
            .await;
        let received = unix_now();
        if received < expires_at - margin {
            assert_eq!(ipv4s(&a.answers), vec![ADDR], "tag served before expiry");
            assert_eq!(ptr.answers.len(), 1, "subtype PTR before expiry");
            before += 1;
        }
        if sent > expires_at + margin {
            for (name, response) in [("A", &a), ("PTR", &ptr)] {
                assert_eq!(
                    response.metadata.response_code,
                    ResponseCode::NXDomain,
                    "{name}: gone {:.3} s after expiry",
                    sent - expires_at
                );
            }
            after += 1;
        }
        assert!(Instant::now() < deadline, "expiry observed within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(before > 0, "served before expiry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_short_ttl_instance_alive() {
    const TTL: Duration = Duration::from_secs(2);
    let server = TestServer::start().await;
    let asked = Instant::now();
    let service = server
        .register(&Registration::new("web-1", "web", "10.0.0.1", 8080).ttl(2))
        .await;
    let registered = Instant::now();
    let id = id_of(&service);
    // Each 200 renews the lifetime from when the server handled it, after
    // the heartbeat was sent: the instance is alive at least until the last
    // such `sent + TTL`, and whatever is answered before then must show it.
    // A heartbeat every 300 ms leaves 1.7 s for a loaded machine to get the
    // next one through; if it cannot, the lapse is not the server's fault.
    let mut alive_until = asked + TTL;
    let mut last_heartbeat = service["last_heartbeat"].as_f64().unwrap();
    let (mut beats, mut checked) = (0, 0);
    let (mut last_sent, mut last_answered) = (asked, registered);
    // Until a heartbeat sent two TTLs after registering was accepted.
    while last_sent < registered + 2 * TTL {
        let addresses = served(&server, "web").await;
        if Instant::now() < alive_until {
            assert_eq!(
                addresses,
                vec![ADDR],
                "not served {:?} before its lifetime could end",
                alive_until - Instant::now()
            );
            checked += 1;
        }
        let sent = Instant::now();
        let (status, body) = server.heartbeat_reporting(&id, "passing").await;
        let answered = Instant::now();
        if status != 200 && answered >= alive_until {
            // The heartbeat may have reached the server after the lifetime
            // ended: the machine is too slow for this test to say anything.
            eprintln!("heartbeat answered {status} after the instance may have lapsed; stopping");
            return;
        }
        assert_eq!(
            status,
            200,
            "heartbeat refused {:?} before the instance could lapse: {body}",
            alive_until - answered
        );
        assert_eq!(body["id"], service["id"]);
        let renewed = body["last_heartbeat"].as_f64().unwrap();
        assert!(
            renewed >= last_heartbeat,
            "{renewed} after {last_heartbeat}"
        );
        assert_eq!(body["expires_at"].as_f64().unwrap(), renewed + 2.0);
        last_heartbeat = renewed;
        alive_until = sent + TTL;
        (last_sent, last_answered) = (sent, answered);
        beats += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        beats >= 2 && checked >= 2,
        "{beats} heartbeats, {checked} checked"
    );
    let (status, body) = server.get(&format!("/v1/services/{id}")).await;
    if Instant::now() < alive_until {
        assert_eq!(status, 200);
        assert_eq!(body["registered_at"], service["registered_at"]);
    }
    // Renewed past two TTLs after it was registered, by the server's clock
    // (the same monotonic clock; a few ms for its whole milliseconds).
    assert!(
        last_heartbeat > service["last_heartbeat"].as_f64().unwrap() + 3.99,
        "last_heartbeat moved on: {last_heartbeat}"
    );

    // Once the heartbeats stop, it lapses: one TTL after the last one was
    // handled, which was before its answer came back.
    tokio::time::sleep_until((last_answered + TTL + Duration::from_millis(10)).into()).await;
    assert!(
        served(&server, "web").await.is_empty(),
        "expires after the heartbeats stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_again_after_expiry_gives_a_new_id() {
    let server = TestServer::start().await;
    let first = server
        .register(&Registration::new("web-1", "web", "10.0.0.1", 8080).ttl(1))
        .await;
    let id = id_of(&first);
    let server = &server;
    assert!(
        server.gone_within(&id, Duration::from_secs(10)).await,
        "expired"
    );
    let (status, second) = server
        .try_register(&Registration::new("web-1", "web", "10.0.0.2", 8080).ttl(30))
        .await;
    assert_eq!(
        status, 201,
        "a registration after expiry is a new one: {second}"
    );
    assert_ne!(second["id"], first["id"], "with a new id");
    assert_eq!(
        served(server, "web").await,
        vec![Ipv4Addr::new(10, 0, 0, 2)]
    );
    assert_eq!(
        server.heartbeat_reporting(&id, "passing").await.0,
        404,
        "the old id stays dead"
    );
    assert_eq!(
        server
            .heartbeat_reporting(&id_of(&second), "passing")
            .await
            .0,
        200
    );
    assert_eq!(server.list("").await.len(), 1);

    // The first one's expiry is reported even when the new registration
    // reached it before the sweep did.
    let counted = eventually(Duration::from_secs(10), || async move {
        server.metric("signpost_expired_total").await == Some(1.0)
    })
    .await;
    assert!(counted, "expiry counted once:\n{}", server.metrics().await);
    assert_eq!(server.list("").await.len(), 1, "the new one is not swept");
}

// ---------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_instances_are_not_served_but_still_listed() {
    let server = TestServer::start().await;
    let service = server
        .register(&Registration::new("web-1", "web", "10.0.0.1", 8080).ttl(30))
        .await;
    let id = id_of(&service);
    let path = format!("/v1/services/{id}");
    assert_eq!(served(&server, "web").await, vec![ADDR]);

    let (status, body) = server.heartbeat_reporting(&id, "critical").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        served(&server, "web").await.is_empty(),
        "critical: not in DNS"
    );
    let srv = server.query("web.svc.local.", RecordType::SRV).await;
    assert!(srv.answers.is_empty(), "nor in SRV: {srv:?}");
    let (status, body) = server.get(&path).await;
    assert_eq!(status, 200, "GET still shows it: {body}");
    assert_eq!(body["health"], "critical");
    let (status, body) = server.get("/v1/services?health=critical").await;
    assert_eq!(status, 200);
    assert_eq!(body["services"].as_array().unwrap().len(), 1);
    let (status, body) = server.get("/v1/services?health=passing").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["services"],
        json!([]),
        "not among what DNS would serve"
    );
    assert_eq!(server.get("/v1/discover/web").await.0, 404);

    let (status, body) = server.heartbeat_reporting(&id, "passing").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        served(&server, "web").await,
        vec![ADDR],
        "passing again: back"
    );
    assert_eq!(server.get(&path).await.1["health"], "passing");

    let (status, body) = server.heartbeat_reporting(&id, "warning").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        served(&server, "web").await,
        vec![ADDR],
        "warning is still served"
    );
    assert_eq!(server.get(&path).await.1["health"], "warning");
    assert_eq!(server.get("/v1/discover/web").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_instance_still_expires() {
    let server = TestServer::start().await;
    let asked = Instant::now();
    let service = server
        .register(&Registration::new("web-1", "web", "10.0.0.1", 8080).ttl(1))
        .await;
    let id = id_of(&service);
    let (status, body) = server.heartbeat_reporting(&id, "critical").await;
    if Instant::now() < asked + Duration::from_millis(990) {
        assert_eq!(status, 200, "{body}");
    }
    let server = &server;
    assert!(
        server.gone_within(&id, Duration::from_secs(10)).await,
        "a critical instance lapses like any other"
    );
    assert_eq!(
        server.heartbeat_reporting(&id, "passing").await.0,
        404,
        "and cannot be revived"
    );
    assert!(served(server, "web").await.is_empty());
}

// ---------------------------------------------------------------------------
// Record TTLs and deregistration
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_ttl_never_exceeds_the_remaining_lifetime() {
    let server = TestServer::start().await;
    let short = server
        .register(&Registration::new("short", "short", "10.0.0.1", 8080).ttl(3))
        .await;
    server
        .register(&Registration::new("long", "long", "10.0.0.2", 8080).ttl(300))
        .await;
    let expires_at = short["expires_at"].as_f64().unwrap();

    /// Queries `name`; returns the TTLs of its answer and address glue, and
    /// the lifetime left when the query was sent (an upper bound of what is
    /// left when the server answers).
    async fn ask(
        server: &TestServer,
        name: &str,
        qtype: RecordType,
        expires_at: f64,
    ) -> (Vec<u32>, f64) {
        let left = expires_at - unix_now();
        let response = server.query(name, qtype).await;
        if unix_now() < expires_at - 0.02 {
            assert!(!response.answers.is_empty(), "{name} {qtype}: {response:?}");
        }
        let glue = response
            .additionals
            .iter()
            .filter(|r| matches!(r.data, RData::A(_) | RData::AAAA(_)));
        (
            response.answers.iter().chain(glue).map(|r| r.ttl).collect(),
            left,
        )
    }

    /// Every TTL the short registration's names answer with is at most
    /// `most` (`when` says why) and within the lifetime left.
    async fn assert_short_ttls(server: &TestServer, expires_at: f64, most: u32, when: &str) {
        for name in ["short.svc.local.", "short.short.svc.local."] {
            for qtype in [RecordType::A, RecordType::SRV] {
                let (ttls, left) = ask(server, name, qtype, expires_at).await;
                for ttl in ttls {
                    assert!(ttl <= most, "{name} {qtype}: ttl {ttl} {when}");
                    assert!(
                        f64::from(ttl) <= left + 0.02,
                        "{name} {qtype}: ttl {ttl} with {left:.3} s left"
                    );
                }
            }
        }
    }

    assert_short_ttls(&server, expires_at, 3, "within a 3 s registration").await;

    // A long registration gets the configured DNS TTL (5 s).
    let (ttls, _) = ask(&server, "long.svc.local.", RecordType::A, f64::MAX).await;
    assert_eq!(ttls, vec![5], "capped by the configured TTL");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let when = "after 1.5 s of a 3 s registration";
    assert_short_ttls(&server, expires_at, 2, when).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_removes_from_dns_in_the_next_answer() {
    let server = TestServer::start().await;
    let one = server
        .register(&Registration::new("web-1", "web", "10.0.0.1", 8080).ttl(30))
        .await;
    let two = server
        .register(&Registration::new("web-2", "web", "10.0.0.2", 8080).ttl(30))
        .await;
    let mut both = served(&server, "web").await;
    both.sort();
    assert_eq!(both, vec![ADDR, Ipv4Addr::new(10, 0, 0, 2)]);

    assert_eq!(server.deregister(&id_of(&one)).await.0, 204);
    assert_eq!(
        served(&server, "web").await,
        vec![Ipv4Addr::new(10, 0, 0, 2)],
        "the very next answer has only web-2"
    );
    let gone = server.query("web-1.web.svc.local.", RecordType::A).await;
    assert_eq!(
        gone.metadata.response_code,
        ResponseCode::NXDomain,
        "{gone:?}"
    );

    assert_eq!(server.deregister(&id_of(&two)).await.0, 204);
    assert!(
        served(&server, "web").await.is_empty(),
        "none left: NXDOMAIN"
    );
    assert!(server.list("").await.is_empty());
}
