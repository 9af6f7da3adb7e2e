//! Answers that steer traffic (README "Steering traffic"), over real
//! sockets: failover by priority as primaries fail one by one, weights
//! deciding which address comes first, a client's locality (by its address
//! and by the EDNS client subnet a forwarder sends), panic mode entered and
//! left, discovery steered the same way, and reverse names of the
//! addresses instances serve at.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{RData, RecordType};
use serde_json::json;
use signpost::config::LocalityConfig;

use crate::support::{
    EventStream, Registration, TestServer, id_of, ipv4s, query_message, query_tcp, query_udp,
    udp_exchange,
};

/// `name` of type `web` at `host`, port 80, TTL 60.
fn web(name: &str, host: &str) -> Registration {
    Registration::new(name, "web", host, 80).ttl(60)
}

async fn set_health(server: &TestServer, id: &str, status: &str) {
    let (beat, body) = server.heartbeat_reporting(id, status).await;
    assert_eq!(beat, 200, "heartbeat {status}: {body}");
}

/// The A records of an answer, in order.
fn addresses(response: &Message) -> Vec<String> {
    ipv4s(&response.answers)
        .iter()
        .map(|a| a.to_string())
        .collect()
}

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

/// `web` A over UDP and TCP: the same set of addresses both ways.
async fn served(server: &TestServer) -> Vec<String> {
    let udp = addresses(&query_udp(server.dns, "web.svc.local.", RecordType::A, Some(1232)).await);
    let tcp = addresses(&query_tcp(server.dns, "web.svc.local.", RecordType::A, Some(1232)).await);
    assert_eq!(sorted(udp.clone()), sorted(tcp), "UDP and TCP agree");
    sorted(udp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primaries_fail_one_by_one_and_traffic_moves_to_the_backups() {
    let server = TestServer::start().await;
    let p1 = id_of(&server.register(&web("p1", "10.0.0.1").priority(0)).await);
    let p2 = id_of(&server.register(&web("p2", "10.0.0.2").priority(0)).await);
    let b1 = id_of(&server.register(&web("b1", "10.0.0.11").priority(10)).await);
    server.register(&web("c1", "10.0.0.21").priority(20)).await;
    assert_eq!(served(&server).await, ["10.0.0.1", "10.0.0.2"]);
    set_health(&server, &p1, "critical").await;
    assert_eq!(served(&server).await, ["10.0.0.2"], "the next answer moves");
    set_health(&server, &p2, "critical").await;
    assert_eq!(
        served(&server).await,
        ["10.0.0.11"],
        "backups when no primary serves"
    );
    assert_eq!(server.deregister(&b1).await.0, 204);
    assert_eq!(
        served(&server).await,
        ["10.0.0.21"],
        "then the next priority"
    );
    set_health(&server, &p1, "passing").await;
    assert_eq!(
        served(&server).await,
        ["10.0.0.1"],
        "a primary back takes it all"
    );

    // SRV holds every serving instance, lowest priority first.
    let srv = query_udp(server.dns, "web.svc.local.", RecordType::SRV, Some(1232)).await;
    let priorities: Vec<(u16, String)> = srv
        .answers
        .iter()
        .map(|record| match &record.data {
            RData::SRV(srv) => (srv.priority, srv.target.to_string()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        priorities,
        [
            (0, "p1.web.svc.local.".to_string()),
            (20, "c1.web.svc.local.".to_string())
        ]
    );
    // The instance's own name answers whatever its priority.
    let own = query_udp(server.dns, "c1.web.svc.local.", RecordType::A, Some(1232)).await;
    assert_eq!(addresses(&own), ["10.0.0.21"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_decide_which_address_comes_first() {
    let server = TestServer::start().await;
    server.register(&web("big", "10.0.0.1").weight(3)).await;
    server.register(&web("small", "10.0.0.2").weight(1)).await;
    server.register(&web("spare", "10.0.0.3").weight(0)).await;
    let rounds = 2000;
    let mut first: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..rounds {
        let response = query_udp(server.dns, "web.svc.local.", RecordType::A, None).await;
        let order = addresses(&response);
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], "10.0.0.3", "weight 0 comes last");
        *first.entry(order[0].clone()).or_default() += 1;
    }
    // Expected 3/4 and 1/4 of 2000: 1500 and 500. Five standard deviations
    // of a binomial of 2000 draws at p = 1/4: 5 * sqrt(2000 * 3/16) ≈ 97.
    let big = f64::from(first["10.0.0.1"]);
    assert!((big - 1500.0).abs() < 97.0, "{first:?}");
    assert!(!first.contains_key("10.0.0.3"), "{first:?}");
}

/// A query for `web` A carrying an EDNS client subnet.
fn with_subnet(address: &str, prefix: u8) -> Message {
    let mut query = query_message("web.svc.local.", RecordType::A, Some(1232));
    let subnet = ClientSubnet::new(address.parse().unwrap(), prefix, 0);
    query
        .edns
        .as_mut()
        .unwrap()
        .options_mut()
        .insert(EdnsOption::Subnet(subnet));
    query
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_answered_from_its_own_locality_while_enough_of_it_serves() {
    let server = TestServer::start_with(|config| {
        config.dns.locality_min_serving = 2;
        config.dns.locality = vec![
            LocalityConfig {
                name: "here".into(),
                networks: vec!["127.0.0.0/8".into()],
            },
            LocalityConfig {
                name: "there".into(),
                networks: vec!["10.9.0.0/16".into()],
            },
        ];
    })
    .await;
    let h1 = id_of(
        &server
            .register(&web("h1", "10.0.0.1").locality("here"))
            .await,
    );
    let h2 = id_of(
        &server
            .register(&web("h2", "10.0.0.2").locality("HERE"))
            .await,
    );
    server
        .register(&web("t1", "10.0.0.11").locality("there"))
        .await;
    server
        .register(&web("t2", "10.0.0.12").locality("there"))
        .await;
    server.register(&web("n1", "10.0.0.21")).await;
    let (_, listed) = server.get(&format!("/v1/services/{h2}")).await;
    assert_eq!(listed["locality"], "here", "stored lowercase");

    // The tests ask from 127.0.0.1: locality "here".
    assert_eq!(served(&server).await, ["10.0.0.1", "10.0.0.2"]);

    // A forwarder's client subnet decides instead, and is echoed with the
    // scope the answer holds for.
    let query = with_subnet("10.9.1.0", 24);
    let reply = udp_exchange(server.dns, &query.to_vec().unwrap())
        .await
        .unwrap();
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(sorted(addresses(&reply)), ["10.0.0.11", "10.0.0.12"]);
    let echoed = reply.edns.as_ref().unwrap().options().get(EdnsCode::Subnet);
    let Some(EdnsOption::Subnet(echoed)) = echoed else {
        panic!("no client subnet echoed: {:?}", reply.edns)
    };
    assert_eq!(echoed.addr(), "10.9.1.0".parse::<IpAddr>().unwrap());
    assert_eq!((echoed.source_prefix(), echoed.scope_prefix()), (24, 24));
    // A subnet in no locality: the normal answer.
    let query = with_subnet("192.0.2.0", 24);
    let reply = udp_exchange(server.dns, &query.to_vec().unwrap())
        .await
        .unwrap();
    assert_eq!(addresses(&Message::from_vec(&reply).unwrap()).len(), 5);

    // The locality thins below its minimum: everything, its own first.
    set_health(&server, &h1, "critical").await;
    for _ in 0..20 {
        let response = query_udp(server.dns, "web.svc.local.", RecordType::A, Some(1232)).await;
        let order = addresses(&response);
        assert_eq!(order[0], "10.0.0.2", "{order:?}");
        assert_eq!(
            sorted(order[1..].to_vec()),
            ["10.0.0.11", "10.0.0.12", "10.0.0.21"]
        );
    }

    // Discovery steers the same way, by the caller's address or by name.
    set_health(&server, &h1, "passing").await;
    for _ in 0..10 {
        let (status, chosen) = server.get("/v1/discover/web").await;
        assert_eq!(status, 200);
        assert_eq!(chosen["locality"], "here", "{chosen}");
        let (_, chosen) = server.get("/v1/discover/web?locality=there").await;
        assert_eq!(chosen["locality"], "there", "{chosen}");
    }
    let (status, _) = server.get("/v1/discover/web?locality=not_a_label").await;
    assert_eq!(status, 400);
    let (status, body) = server
        .try_register(&Registration::new("x", "web", "10.0.0.9", 1).locality("-bad"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("locality"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_enters_and_leaves_panic_mode() {
    let server = TestServer::start_with(|config| config.dns.panic_threshold = 50).await;
    let (status, stream) = EventStream::open(&server, "?type=web").await;
    assert_eq!(status, 200);
    let mut stream = stream.unwrap();
    let mut ids = Vec::new();
    for n in 1..=4 {
        let registration = web(&format!("i{n}"), &format!("10.0.0.{n}"));
        ids.push(id_of(&server.register(&registration).await));
    }
    for id in &ids[..2] {
        set_health(&server, id, "critical").await;
    }
    // Two of four not critical: 50 % is not below 50 %.
    assert_eq!(served(&server).await, ["10.0.0.3", "10.0.0.4"]);
    set_health(&server, &ids[2], "critical").await;
    // One of four: below. Every unexpired instance is answered.
    assert_eq!(
        served(&server).await,
        ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    );
    let panics = server.metric("signpost_dns_panic_answers_total").await;
    assert!(panics.unwrap_or(0.0) >= 2.0, "{panics:?}");
    set_health(&server, &ids[0], "passing").await;
    assert_eq!(served(&server).await, ["10.0.0.1", "10.0.0.4"]);

    // The stream says when it entered and when it left.
    let mut seen = Vec::new();
    while let Some(event) = stream.next_event(Duration::from_secs(2)).await {
        if event["type"] == "panic" {
            seen.push((
                event["data"]["panic"].clone(),
                event["data"]["not_critical"].clone(),
            ));
        }
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, [(json!(true), json!(1)), (json!(false), json!(2))]);
    // Critical instances are answered in panic mode, not their names'
    // non-existence hidden: each instance's own name follows its health.
    let own = query_udp(server.dns, "i2.web.svc.local.", RecordType::A, Some(1232)).await;
    assert_eq!(own.metadata.response_code, ResponseCode::NXDomain);
}

/// The PTR records of an answer, sorted.
fn pointers(response: &Message) -> Vec<String> {
    let mut names: Vec<String> = response
        .answers
        .iter()
        .map(|record| match &record.data {
            RData::PTR(ptr) => ptr.0.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_names_of_serving_addresses_say_who_is_there() {
    let server = TestServer::start().await;
    server.register(&web("web-1", "10.0.0.5")).await;
    server
        .register(&Registration::new("db-1", "db", "10.0.0.5", 5432))
        .await;
    let six = id_of(&server.register(&web("web-6", "fd00::5")).await);
    let ask = |name: &'static str, qtype| async move {
        query_udp(server.dns, name, qtype, Some(1232)).await
    };
    // Several instances on one address: a PTR each, to their own names.
    let v4 = ask("5.0.0.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(v4.metadata.response_code, ResponseCode::NoError);
    assert!(v4.metadata.authoritative);
    assert_eq!(
        pointers(&v4),
        ["db-1.db.svc.local.", "web-1.web.svc.local."]
    );
    assert!(v4.answers.iter().all(|r| r.ttl <= 5));
    let v6_name = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    let v6 = ask(v6_name, RecordType::PTR).await;
    assert_eq!(pointers(&v6), ["web-6.web.svc.local."]);
    // Only serving instances: critical is gone from the next answer.
    set_health(&server, &six, "critical").await;
    let v6 = ask(v6_name, RecordType::PTR).await;
    assert_eq!(v6.metadata.response_code, ResponseCode::Refused);
    // What signpost does not know is not its to deny: REFUSED, so a
    // resolver asks elsewhere (or signpost forwards, when told to).
    for (name, qtype) in [
        ("6.0.0.10.in-addr.arpa.", RecordType::PTR),
        ("0.0.10.in-addr.arpa.", RecordType::PTR),
        ("5.0.0.10.in-addr.arpa.", RecordType::A),
    ] {
        let response = ask(name, qtype).await;
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::Refused,
            "{name} {qtype}"
        );
    }
}
