//! Active health checks (README "Health checks") against real endpoints on
//! loopback: an HTTP server the test flips between 200, 429, 500, silence
//! and a closed port, and a TCP listener it opens and closes. What is
//! asserted is what a user sees: the instance leaving and rejoining DNS, the
//! health the API shows, the bound on how long that takes.
//!
//! The bounds allow [`SLACK`] beyond what the check's own timing explains:
//! on a loaded machine the scheduler and the test's polling both run late.
//! The thresholds themselves are tested to the millisecond, without a clock
//! or a probe, in `checks::thresholds`. A check expected to pass gets a
//! timeout of a whole interval where the test allows, so that a slow
//! moment on a loaded machine does not read as a failing endpoint.

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::support::{
    Endpoint, EventStream, Mode, Registration, ScratchDir, TestServer, TlsEndpoint, eventually,
    id_of, ipv4s,
};

/// What a bound allows beyond interval × failures + timeout.
const SLACK: Duration = Duration::from_secs(2);

/// `name` of type `web` at 10.0.0.N, port 8080, with `ttl` and `check`.
pub(crate) fn checked(name: &str, n: u8, ttl: u32, check: Value) -> Registration {
    let host = format!("10.0.0.{n}");
    Registration::new(name, "web", &host, 8080)
        .ttl(ttl)
        .check(check)
}

/// The addresses DNS serves for `web.svc.local` now.
async fn served(server: &TestServer) -> Vec<String> {
    let answer = server.query("web.svc.local", RecordType::A).await;
    let mut addresses: Vec<String> = ipv4s(&answer.answers)
        .iter()
        .map(|a| a.to_string())
        .collect();
    addresses.sort();
    addresses
}

/// Polls DNS until `address` is (`present`) or is not served, at most
/// `limit`; returns how long it took.
async fn until_served(
    server: &TestServer,
    address: &str,
    present: bool,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let reached = eventually(limit, || async {
        served(server).await.iter().any(|a| a == address) == present
    })
    .await;
    assert!(
        reached,
        "{address} {} DNS within {limit:?}",
        if present { "rejoins" } else { "leaves" }
    );
    started.elapsed()
}

async fn health_of(server: &TestServer, id: &str) -> Value {
    server.get_ok(&format!("/v1/services/{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_follows_the_endpoint_through_500_429_closed_and_back() {
    let server = TestServer::start().await;
    let mut endpoint = Endpoint::start(Mode::Status(200)).await;
    server
        .register(&Registration::new("steady", "web", "10.0.0.1", 8080).ttl(300))
        .await;
    let check = json!({"http": endpoint.url(), "interval": 1, "timeout": 0.5});
    let id = id_of(&server.register(&checked("checked", 2, 300, check)).await);
    // The first check runs within one interval and passes.
    assert!(
        eventually(Duration::from_secs(10), || async {
            endpoint.requests() > 0
        })
        .await,
        "the endpoint is checked"
    );
    let service = health_of(&server, &id).await;
    assert_eq!(service["check"]["http"], json!(endpoint.url()));
    assert_eq!(service["check"]["interval"], json!(1));
    assert_eq!(service["check"]["timeout"], json!(0.5));
    assert_eq!(service["check_health"], "passing");
    assert_eq!(served(&server).await, ["10.0.0.1", "10.0.0.2"]);

    // interval × failures_before_critical + timeout + slack.
    let bound = Duration::from_millis(1000 + 500) + SLACK;
    endpoint.set(Mode::Status(500)).await;
    let took = until_served(&server, "10.0.0.2", false, Duration::from_secs(10)).await;
    assert!(
        took <= bound,
        "left DNS {took:?} after the 500, bound {bound:?}"
    );
    let service = health_of(&server, &id).await;
    assert_eq!(service["health"], "critical");
    assert_eq!(service["check_health"], "critical");
    let output = service["check_output"].as_str().unwrap();
    assert!(
        output.contains("500"),
        "check_output says what happened: {output}"
    );
    assert_eq!(
        served(&server).await,
        ["10.0.0.1"],
        "the other instance stays"
    );

    endpoint.set(Mode::Status(200)).await;
    let took = until_served(&server, "10.0.0.2", true, Duration::from_secs(10)).await;
    assert!(took <= bound, "came back {took:?} after recovery");

    // 429 is warning: still served, shown as warning.
    endpoint.set(Mode::Status(429)).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            health_of(&server, &id).await["health"] == "warning"
        })
        .await,
        "429 turns the instance warning"
    );
    assert_eq!(
        served(&server).await,
        ["10.0.0.1", "10.0.0.2"],
        "warning is served"
    );
    let (status, listed) = server.get("/v1/services?health=passing").await;
    assert_eq!(status, 200);
    assert_eq!(listed["services"].as_array().unwrap().len(), 2);

    // A closed port is critical too.
    endpoint.set(Mode::Closed).await;
    let took = until_served(&server, "10.0.0.2", false, Duration::from_secs(10)).await;
    assert!(took <= bound, "left DNS {took:?} after the port closed");
    assert!(
        server
            .metric("signpost_check_failures_total{kind=\"refused\"}")
            .await
            >= Some(1.0)
    );
    assert!(
        server
            .metric("signpost_check_failures_total{kind=\"status\"}")
            .await
            >= Some(1.0)
    );
    assert!(server.metric("signpost_checks_total").await >= Some(3.0));
    assert_eq!(
        server
            .metric("signpost_instances_by_health{health=\"critical\"}")
            .await,
        Some(1.0)
    );
    endpoint.set(Mode::Status(204)).await;
    until_served(&server, "10.0.0.2", true, Duration::from_secs(10)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endpoint_times_out_within_the_bound() {
    let server = TestServer::start().await;
    let mut endpoint = Endpoint::start(Mode::Status(200)).await;
    let check = json!({"http": endpoint.url(), "interval": 1, "timeout": 0.3});
    let id = id_of(&server.register(&checked("slow", 3, 300, check)).await);
    until_served(&server, "10.0.0.3", true, Duration::from_secs(10)).await;
    endpoint.set(Mode::Hang).await;
    let took = until_served(&server, "10.0.0.3", false, Duration::from_secs(10)).await;
    let bound = Duration::from_millis(1000 + 300) + SLACK;
    assert!(
        took <= bound,
        "left DNS {took:?} after the endpoint went silent"
    );
    assert!(
        server
            .metric("signpost_check_failures_total{kind=\"timeout\"}")
            .await
            >= Some(1.0)
    );
    let output = health_of(&server, &id).await["check_output"].clone();
    assert!(output.as_str().unwrap().contains("no answer"), "{output}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_check_follows_a_listener_opening_and_closing() {
    let server = TestServer::start().await;
    let mut listener = Endpoint::start(Mode::Status(200)).await;
    let check = json!({"tcp": listener.addr.to_string(), "interval": 1, "timeout": 0.5});
    let id = id_of(&server.register(&checked("db", 4, 300, check)).await);
    assert!(
        eventually(Duration::from_secs(10), || async {
            listener.requests() > 0
        })
        .await,
        "the listener is connected to"
    );
    assert_eq!(health_of(&server, &id).await["check_health"], "passing");
    let bound = Duration::from_millis(1000 + 500) + SLACK;
    listener.set(Mode::Closed).await;
    let took = until_served(&server, "10.0.0.4", false, Duration::from_secs(10)).await;
    assert!(took <= bound, "left DNS {took:?} after the listener closed");
    listener.set(Mode::Status(200)).await;
    let took = until_served(&server, "10.0.0.4", true, Duration::from_secs(10)).await;
    assert!(
        took <= bound,
        "came back {took:?} after the listener reopened"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_absorb_a_lost_check_and_delay_recovery() {
    let server = TestServer::start().await;
    let mut endpoint = Endpoint::start(Mode::Status(200)).await;
    let check = json!({"http": endpoint.url(), "interval": 1, "timeout": 0.5,
                       "failures_before_critical": 3, "successes_before_passing": 2});
    let id = id_of(&server.register(&checked("calm", 5, 300, check)).await);
    assert!(
        eventually(Duration::from_secs(10), || async {
            endpoint.requests() > 0
        })
        .await
    );

    // One failed check: still served throughout.
    let seen = endpoint.requests();
    endpoint.set(Mode::Status(500)).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            endpoint.requests() > seen
        })
        .await
    );
    endpoint.set(Mode::Status(200)).await;
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(
            served(&server).await,
            ["10.0.0.5"],
            "one lost check does not flap DNS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Failing for good: out after three failures.
    endpoint.set(Mode::Status(503)).await;
    let took = until_served(&server, "10.0.0.5", false, Duration::from_secs(10)).await;
    let bound = Duration::from_millis(3 * 1000 + 500) + SLACK;
    assert!(took <= bound, "left DNS {took:?}, bound {bound:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "not before the third failure: {took:?}"
    );

    // Recovering: one success is not enough. Its output shows once it is
    // recorded; the second success is an interval away.
    endpoint.set(Mode::Status(200)).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            health_of(&server, &id).await["check_output"]
                .as_str()
                .is_some_and(|output| output.contains("200"))
        })
        .await,
        "a successful check after the failures"
    );
    assert_eq!(
        health_of(&server, &id).await["check_health"],
        "critical",
        "still critical after one success of two"
    );
    until_served(&server, "10.0.0.5", true, Duration::from_secs(10)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_check_keeps_an_instance_alive_without_heartbeats() {
    let server = TestServer::start().await;
    let mut endpoint = Endpoint::start(Mode::Status(200)).await;
    // A TTL of three intervals, and a timeout of one: a check that a
    // loaded machine runs late, or one lost to a slow moment, still leaves
    // time for the next to renew it.
    let check =
        json!({"http": endpoint.url(), "interval": 1, "timeout": 1, "failures_before_critical": 2});
    let id = id_of(&server.register(&checked("kept", 6, 3, check)).await);
    let registered = health_of(&server, &id).await["last_heartbeat"]
        .as_f64()
        .unwrap();
    // Over two TTLs with no heartbeat at all.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        assert_eq!(served(&server).await, ["10.0.0.6"], "renewed by its check");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let service = health_of(&server, &id).await;
    let renewed = service["last_heartbeat"].as_f64().unwrap();
    assert!(
        renewed > registered + 3.0,
        "renewed past its first TTL: {service}"
    );
    let left = service["expires_at"].as_f64().unwrap() - renewed;
    assert!(
        (left - 3.0).abs() < 0.01,
        "the check renews by the instance's own ttl: {left}"
    );

    // With the check failing nothing renews it: it expires one TTL later.
    endpoint.set(Mode::Closed).await;
    assert!(
        server.gone_within(&id, Duration::from_secs(15)).await,
        "expired once the check stopped passing"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_and_check_health_combine_to_the_worse() {
    let server = TestServer::start().await;
    let mut endpoint = Endpoint::start(Mode::Status(200)).await;
    let check = json!({"http": endpoint.url(), "interval": 1, "timeout": 1});
    let id = id_of(&server.register(&checked("both", 7, 300, check)).await);
    assert!(
        eventually(Duration::from_secs(10), || async {
            endpoint.requests() > 0
        })
        .await
    );
    assert_eq!(server.heartbeat_reporting(&id, "warning").await.0, 200);
    let service = health_of(&server, &id).await;
    assert_eq!(service["health"], "warning");
    assert_eq!(service["check_health"], "passing");

    endpoint.set(Mode::Status(500)).await;
    until_served(&server, "10.0.0.7", false, Duration::from_secs(10)).await;
    // A passing heartbeat cannot override a failing check.
    assert_eq!(server.heartbeat(&id, None).await.0, 200);
    let service = health_of(&server, &id).await;
    assert_eq!(service["health"], "critical");
    assert!(served(&server).await.is_empty());

    endpoint.set(Mode::Status(200)).await;
    until_served(&server, "10.0.0.7", true, Duration::from_secs(10)).await;
    // Nor can a passing check override a critical heartbeat.
    assert_eq!(server.heartbeat_reporting(&id, "critical").await.0, 200);
    assert!(served(&server).await.is_empty());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(health_of(&server, &id).await["health"], "critical");

    // Both critical, then the heartbeat recovers first: still out. When the
    // check recovers last, the instance is back in the very next answers.
    endpoint.set(Mode::Status(500)).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            health_of(&server, &id).await["check_health"] == "critical"
        })
        .await
    );
    assert_eq!(server.heartbeat(&id, None).await.0, 200);
    assert!(served(&server).await.is_empty());
    endpoint.set(Mode::Status(200)).await;
    until_served(&server, "10.0.0.7", true, Duration::from_secs(10)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_after_removes_an_instance_that_stays_critical() {
    let server = TestServer::start().await;
    let endpoint = Endpoint::start(Mode::Status(500)).await;
    let (_, mut events) = EventStream::open(&server, "").await;
    let mut events = events.take().unwrap();
    let check =
        json!({"http": endpoint.url(), "interval": 1, "timeout": 0.5, "deregister_after": 2});
    let id = id_of(&server.register(&checked("doomed", 8, 300, check)).await);
    assert!(
        server.gone_within(&id, Duration::from_secs(15)).await,
        "removed after staying critical"
    );
    assert_eq!(
        server.metric("signpost_deregistered_critical_total").await,
        Some(1.0)
    );
    let kinds: Vec<Value> = {
        let mut kinds = Vec::new();
        while let Some(event) = events.next_event(Duration::from_secs(2)).await {
            kinds.push(event.clone());
            if event["type"] == "deregister" {
                break;
            }
        }
        kinds
    };
    let types: Vec<&str> = kinds.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["register", "health", "deregister"], "{kinds:?}");
    let reason = kinds[2]["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("critical"), "{reason}");
    assert_eq!(kinds[1]["data"]["service_info"]["health"], "critical");
    // By the server's own clock (the events' timestamps): removed at the
    // first check that found it critical for 2 s, never sooner; that check
    // is due about an interval after the one before, so at most about
    // 2 + 1 s, plus the timeout and slack for a loaded machine.
    let critical_for =
        kinds[2]["timestamp"].as_f64().unwrap() - kinds[1]["timestamp"].as_f64().unwrap();
    assert!(
        critical_for >= 2.0,
        "not before deregister_after: {critical_for:.3} s"
    );
    assert!(
        critical_for <= 5.0,
        "removed {critical_for:.3} s after turning critical"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistering_or_replacing_stops_the_check_at_once() {
    let server = TestServer::start().await;
    let endpoint = Endpoint::start(Mode::Status(200)).await;
    let check = json!({"http": endpoint.url(), "interval": 1, "timeout": 0.5});
    let gone = checked("gone", 9, 300, check.clone());
    let id = id_of(&server.register(&gone).await);
    assert!(
        eventually(Duration::from_secs(10), || async {
            endpoint.requests() > 0
        })
        .await
    );
    // Once the scheduler is told, nothing more is started; one check may
    // have started while the news was on its way. More than one in the
    // next 2.5 s (two intervals) would be a check still scheduled.
    assert_eq!(server.deregister(&id).await.0, 204);
    let seen = endpoint.requests();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        endpoint.requests() <= seen + 1,
        "no check after the deregistration: {} after {seen}",
        endpoint.requests()
    );

    // Replaced in place without a check: the check stops too.
    server.register(&checked("swap", 10, 300, check)).await;
    let seen = endpoint.requests();
    assert!(
        eventually(Duration::from_secs(10), || async {
            endpoint.requests() > seen
        })
        .await
    );
    let (status, body) = server
        .try_register(&Registration::new("swap", "web", "10.0.0.10", 8080).ttl(300))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("check").is_none(), "{body}");
    let seen = endpoint.requests();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        endpoint.requests() <= seen + 1,
        "no check after the replacement dropped it: {} after {seen}",
        endpoint.requests()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_resume_after_a_restart_on_the_same_store() {
    let dir = ScratchDir::new("checks");
    let (store, _) = dir.sqlite();
    let mut endpoint = Endpoint::start(Mode::Status(200)).await;
    let check =
        json!({"http": endpoint.url(), "interval": 1, "timeout": 0.5, "deregister_after": 600});

    let server = TestServer::start_with(|c| c.store.url = store.clone()).await;
    let id = id_of(&server.register(&checked("durable", 11, 300, check)).await);
    let registered = health_of(&server, &id).await["check"].clone();
    server.stop().await;

    let server = TestServer::start_with(|c| c.store.url = store.clone()).await;
    assert_eq!(
        health_of(&server, &id).await["check"],
        registered,
        "the check is kept"
    );
    let seen = endpoint.requests();
    assert!(
        eventually(Duration::from_secs(10), || async {
            endpoint.requests() > seen
        })
        .await,
        "checks resume after the restart"
    );
    endpoint.set(Mode::Status(500)).await;
    until_served(&server, "10.0.0.11", false, Duration::from_secs(10)).await;
    server.stop().await;
}

/// Every `check` rule: a 4xx naming the field, and nothing registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_rule_is_enforced() {
    let server = TestServer::start().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "check"),
        (
            json!({"http": "http://10.0.0.1/", "tcp": "10.0.0.1:80"}),
            "check",
        ),
        (json!({"http": "ftp://10.0.0.1/"}), "check.http"),
        (json!({"http": "10.0.0.1:80/health"}), "check.http"),
        (json!({"http": "http:///health"}), "check.http"),
        (
            json!({"http": "http://user:secret@10.0.0.1/"}),
            "check.http",
        ),
        (json!({"http": "http://bad_host/"}), "check.http"),
        (json!({"http": "http://10.0.0.1:70000/"}), "check.http"),
        (
            json!({"http": format!("http://10.0.0.1/{}", "a".repeat(3000))}),
            "check.http",
        ),
        (json!({"http": 42}), "check.http"),
        (json!({"tcp": "10.0.0.1"}), "check.tcp"),
        (json!({"tcp": "10.0.0.1:0"}), "check.tcp"),
        (json!({"tcp": "10.0.0.1:http"}), "check.tcp"),
        (json!({"tcp": "::1:80"}), "check.tcp"),
        (json!({"tcp": "bad host:80"}), "check.tcp"),
        (json!({"tcp": "h:1", "interval": 0}), "check.interval"),
        (json!({"tcp": "h:1", "interval": 0.5}), "check.interval"),
        (json!({"tcp": "h:1", "interval": 3601}), "check.interval"),
        (json!({"tcp": "h:1", "interval": "10s"}), "check.interval"),
        (json!({"tcp": "h:1", "timeout": 3601}), "check.timeout"),
        (json!({"tcp": "h:1", "timeout": 0}), "check.timeout"),
        (json!({"tcp": "h:1", "timeout": -1}), "check.timeout"),
        (
            json!({"tcp": "h:1", "failures_before_critical": 0}),
            "failures_before_critical",
        ),
        (
            json!({"tcp": "h:1", "failures_before_critical": 101}),
            "failures_before_critical",
        ),
        (
            json!({"tcp": "h:1", "successes_before_passing": 0}),
            "successes_before_passing",
        ),
        (
            json!({"tcp": "h:1", "deregister_after": 0}),
            "deregister_after",
        ),
        (
            json!({"tcp": "h:1", "deregister_after": 1e9}),
            "deregister_after",
        ),
        (json!({"tcp": "h:1", "script": "rm -rf /"}), "script"),
        (
            json!({"http": "http://10.0.0.1/", "tls_skip_verify": true}),
            "tls_skip_verify",
        ),
        (
            json!({"http": "https://10.0.0.1/", "tls_skip_verify": "yes"}),
            "tls_skip_verify",
        ),
        (json!("http://10.0.0.1/"), "check"),
    ];
    for (check, field) in cases {
        let body = Registration::new("x", "web", "10.0.0.1", 80).check(check.clone());
        let (status, reply) = server.try_register(&body).await;
        assert!(
            status == 400 || status == 422,
            "check {check}: expected 400/422, got {status} {reply}"
        );
        let message = reply["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(field),
            "check {check}: error {message:?} names {field:?}"
        );
    }
    let (_, listed) = server.get("/v1/services").await;
    assert_eq!(listed["services"], json!([]), "nothing was registered");

    // The defaults, as shown back.
    let (status, body) = server
        .try_register(
            &Registration::new("x", "web", "10.0.0.1", 80).check(json!({"tcp": "[::1]:9"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["check"],
        json!({"tcp": "[::1]:9", "interval": 10, "timeout": 5,
               "failures_before_critical": 1, "successes_before_passing": 1})
    );
    // A fetched object, sent back as is, is accepted.
    let (status, again) = server.try_register(&body).await;
    assert_eq!(status, 200, "{again}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_checks_verify_the_certificate_unless_told_not_to() {
    let server = TestServer::start().await;
    let tls = TlsEndpoint::start().await;
    let plain = Endpoint::start(Mode::Status(200)).await;
    let url = format!("https://{}/health", tls.addr);
    let check = json!({"http": url, "interval": 1, "timeout": 1, "tls_skip_verify": true});
    let trusting = id_of(&server.register(&checked("trusting", 12, 300, check)).await);
    let check = json!({"http": url, "interval": 1, "timeout": 1});
    let verifying = id_of(&server.register(&checked("verifying", 13, 300, check)).await);
    let plain_url = format!("https://{}/", plain.addr);
    let check = json!({"http": plain_url, "interval": 1, "timeout": 0.5, "tls_skip_verify": true});
    let mismatched = id_of(
        &server
            .register(&checked("mismatched", 14, 300, check))
            .await,
    );
    until_served(&server, "10.0.0.13", false, Duration::from_secs(10)).await;
    until_served(&server, "10.0.0.14", false, Duration::from_secs(10)).await;
    // Its first run is jittered over the interval: it may come after the
    // others have already failed. (The endpoint counts a request before it
    // answers: wait for the verdict itself.)
    assert!(
        eventually(Duration::from_secs(10), || async {
            health_of(&server, &trusting).await["check_output"]
                .as_str()
                .is_some_and(|output| output.contains("200 OK"))
        })
        .await,
        "the skip-verify check got through"
    );
    assert!(tls.requests() > 0);
    let service = health_of(&server, &trusting).await;
    assert_eq!(service["check_health"], "passing", "{service}");
    assert_eq!(service["check"]["tls_skip_verify"], true);
    assert_eq!(served(&server).await, ["10.0.0.12"]);
    // A self-signed certificate is not trusted by default.
    let output = health_of(&server, &verifying).await["check_output"].clone();
    assert!(output.as_str().unwrap().contains("certificate"), "{output}");
    // TLS spoken to a plain HTTP port (which waits for a request line that
    // never comes) fails the check.
    assert_eq!(
        health_of(&server, &mismatched).await["check_health"],
        "critical"
    );
    server.stop().await;
}

/// A host that takes connections and never answers: a listener on
/// 127.0.0.2 that never accepts (the kernel completes the handshakes), so
/// every HTTP check against it holds its slot for its whole timeout.
pub(crate) fn silent_host() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    (listener, url)
}

/// `count` instances of type `spam`, each checked against `url` every 5 s
/// with a 5 s timeout.
pub(crate) async fn register_spam(server: &TestServer, url: &str, count: usize) {
    for n in 0..count {
        let check = json!({"http": url, "interval": 5, "timeout": 5});
        let host = format!("10.1.{}.{}", n / 256, n % 256);
        let spam = Registration::new(&format!("s{n}"), "spam", &host, 80)
            .ttl(300)
            .check(check);
        server.register(&spam).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_against_a_host_that_never_answers_leave_slots_for_the_others() {
    let server = TestServer::start_with(|config| {
        config.checks.max_in_flight = 8;
        config.checks.max_in_flight_per_target = 4;
    })
    .await;
    let (_silent, url) = silent_host();
    register_spam(&server, &url, 100).await;
    let endpoint = Endpoint::start(Mode::Status(200)).await;
    for n in 1..=5 {
        let check = json!({"http": endpoint.url(), "interval": 1, "timeout": 1});
        server
            .register(&checked(&format!("h{n}"), n, 300, check))
            .await;
    }
    let before = endpoint.requests();
    tokio::time::sleep(Duration::from_secs(6)).await;
    // 5 checks a second: about 30 in 6 s. Starved behind the silent host
    // (8 slots held 5 s at a time by 100 checks), they would get a handful.
    let ran = endpoint.requests() - before;
    assert!(ran >= 15, "the honest checks ran {ran} times in 6 s");
    assert_eq!(served(&server).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_check_waits_for_a_slot_is_not_expired_for_it() {
    // Every slot is held by checks against the silent host, whose queue
    // never empties: the honest checks wait for a slot for seconds at a time.
    let server = TestServer::start_with(|config| {
        config.checks.max_in_flight = 2;
        config.checks.max_in_flight_per_target = 2;
    })
    .await;
    let (_silent, url) = silent_host();
    register_spam(&server, &url, 200).await;
    let endpoint = Endpoint::start(Mode::Status(200)).await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        let check = json!({"http": endpoint.url(), "interval": 1, "timeout": 1});
        // Kept alive by its check alone: no heartbeat, a 2 s TTL.
        let service = server
            .register(&checked(&format!("h{n}"), n, 2, check))
            .await;
        ids.push(id_of(&service));
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    for id in &ids {
        let (status, body) = server.get(&format!("/v1/services/{id}")).await;
        assert_eq!(status, 200, "still registered after 3 TTLs: {body}");
    }
    // And the spam itself, critical once its checks time out, is not held
    // alive by waiting: that rule only covers instances a result would
    // renew. (Its TTL is 300 s, so it is still listed; its health shows.)
    let spam = server.list("?type=spam").await;
    assert_eq!(spam.len(), 200);
}
