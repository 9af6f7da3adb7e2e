//! The zone is consistent about its own name server (README "DNS", apex
//! NS): the NS target answers its address, and no registration can take
//! its name over.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::{Registration, TestServer};

fn data(message: &hickory_proto::op::Message) -> Vec<String> {
    message.answers.iter().map(|r| r.data.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ns_target_answers_the_dns_listen_address_and_cannot_be_taken_over() {
    let server = TestServer::start().await;
    let ns = server.query("svc.local.", RecordType::NS).await;
    assert_eq!(data(&ns), ["ns.svc.local."]);
    // Its name resolves, to where signpost answers DNS (127.0.0.1 here).
    let a = server.query("ns.svc.local.", RecordType::A).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert_eq!(data(&a), ["127.0.0.1"]);
    assert!(a.metadata.authoritative);
    // No IPv6 address: NODATA, not NXDOMAIN.
    let aaaa = server.query("NS.svc.local.", RecordType::AAAA).await;
    assert_eq!(
        (aaaa.metadata.response_code, aaaa.answers.len()),
        (ResponseCode::NoError, 0)
    );
    assert!(matches!(aaaa.authorities[0].data, RData::SOA(_)));
    // A type named like it is refused, and nothing changes.
    let (status, body) = server
        .try_register(&Registration::new("web-1", "ns", "10.0.0.1", 80))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("dns.nameserver"),
        "{body}"
    );
    let again = server.query("ns.svc.local.", RecordType::A).await;
    assert_eq!(data(&again), ["127.0.0.1"]);
    // Other names are unaffected: an instance called ns of another type.
    server
        .register(&Registration::new("ns", "web", "10.0.0.2", 80))
        .await;
    let web = server.query("ns.web.svc.local.", RecordType::A).await;
    assert_eq!(data(&web), ["10.0.0.2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_addresses_and_a_name_server_outside_the_zone() {
    let server = TestServer::start_with(|config| {
        config.dns.nameserver = "dns1.svc.local".into();
        config.dns.nameserver_addresses = vec!["192.0.2.53".into(), "2001:db8::53".into()];
    })
    .await;
    let a = server.query("dns1.svc.local.", RecordType::A).await;
    assert_eq!(data(&a), ["192.0.2.53"]);
    let aaaa = server.query("dns1.svc.local.", RecordType::AAAA).await;
    assert_eq!(data(&aaaa), ["2001:db8::53"]);
    let txt = server.query("dns1.svc.local.", RecordType::TXT).await;
    assert_eq!(
        (txt.metadata.response_code, txt.answers.len()),
        (ResponseCode::NoError, 0)
    );
    // ns.svc.local is an ordinary name now: nothing there.
    let ns = server.query("ns.svc.local.", RecordType::A).await;
    assert_eq!(ns.metadata.response_code, ResponseCode::NXDomain);
    server
        .register(&Registration::new("web-1", "ns", "10.0.0.1", 80))
        .await;

    let outside = TestServer::start_with(|config| {
        config.dns.nameserver = "ns1.example.net".into();
    })
    .await;
    let ns = outside.query("svc.local.", RecordType::NS).await;
    assert_eq!(data(&ns), ["ns1.example.net."]);
    outside
        .register(&Registration::new("web-1", "ns1", "10.0.0.1", 80))
        .await;
}
