//! DNS over real sockets (README "DNS"): what every name in the zone answers,
//! negative answers, request checks, EDNS, size limits and truncation,
//! shuffling, TTLs and the TCP transport.
//!
//! The helpers marked `pub(crate)` are shared with `fuzz.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    Registration, TestServer, frame, id_of, ipv4s, many_ip, query_message, query_tcp, query_udp,
    read_frame, register_many, tcp_exchange, tcp_exchange_on, udp_exchange,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The default zone apex.
pub(crate) const APEX: &str = "svc.local.";

pub(crate) fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("valid test name")
}

/// A name as lowercase text with the trailing dot, for comparisons.
pub(crate) fn text(name: &Name) -> String {
    let mut ascii = name.to_lowercase().to_ascii();
    if !ascii.ends_with('.') {
        ascii.push('.');
    }
    ascii
}

/// Parses a reply that must be exactly one DNS message: no bytes may follow
/// the last record its header counts.
pub(crate) fn decode_whole(reply: &[u8]) -> Message {
    let mut decoder = BinDecoder::new(reply);
    let message = Message::read(&mut decoder)
        .unwrap_or_else(|e| panic!("reply does not parse ({e}): {reply:?}"));
    assert_eq!(
        decoder.len(),
        0,
        "{} stray bytes after the message ({} bytes in all): {message:?}",
        decoder.len(),
        reply.len()
    );
    message
}

/// Sends `request` over UDP; returns the raw reply and its parse, after
/// checking the id.
pub(crate) async fn udp_ask(server: SocketAddr, request: &Message) -> (Vec<u8>, Message) {
    udp_ask_raw(server, &request.to_vec().expect("request encodes")).await
}

/// Sends raw request bytes over UDP; returns the raw reply and its parse,
/// after checking the id.
pub(crate) async fn udp_ask_raw(server: SocketAddr, request: &[u8]) -> (Vec<u8>, Message) {
    let reply = udp_exchange(server, request)
        .await
        .expect("server answers over udp");
    let message = decode_whole(&reply);
    assert_eq!(&reply[..2], &request[..2], "reply id matches");
    (reply, message)
}

/// Sends `request` over a new TCP connection; returns the raw reply and its
/// parse, after checking the id.
pub(crate) async fn tcp_ask(server: SocketAddr, request: &Message) -> (Vec<u8>, Message) {
    let reply = tcp_exchange(server, &request.to_vec().expect("request encodes"))
        .await
        .expect("server answers over tcp");
    let message = decode_whole(&reply);
    assert_eq!(message.metadata.id, request.metadata.id, "reply id matches");
    (reply, message)
}

/// Header bits every response shares: QR set, RA and AD clear, the rcode
/// (extended rcodes merged from the OPT record) and AA as given.
pub(crate) fn assert_header(response: &Message, rcode: ResponseCode, authoritative: bool) {
    let m = &response.metadata;
    assert_eq!(
        m.message_type,
        MessageType::Response,
        "QR set: {response:?}"
    );
    assert_eq!(m.response_code, rcode, "rcode: {response:?}");
    assert_eq!(m.authoritative, authoritative, "AA: {response:?}");
    assert!(!m.recursion_available, "RA must be clear: {response:?}");
    assert!(!m.authentic_data, "AD must be clear: {response:?}");
}

/// A complete, authoritative, positive answer (NOERROR, AA, TC clear) with
/// no authority section, owned by the question name.
fn assert_positive(response: &Message, qname: &str) {
    assert_header(response, ResponseCode::NoError, true);
    assert!(!response.metadata.truncation, "TC clear: {response:?}");
    assert!(
        !response.answers.is_empty(),
        "answer expected: {response:?}"
    );
    assert!(
        response.authorities.is_empty(),
        "no authority: {response:?}"
    );
    for record in &response.answers {
        assert_eq!(text(&record.name), qname.to_lowercase(), "owner name");
        assert_eq!(record.dns_class, DNSClass::IN);
    }
}

/// NXDOMAIN or NODATA: no answers, exactly the zone SOA in the authority
/// section with TTL = the negative TTL (also its MINIMUM field).
fn assert_negative(response: &Message, rcode: ResponseCode, negative_ttl: u32) {
    assert_header(response, rcode, true);
    assert!(!response.metadata.truncation, "TC clear: {response:?}");
    assert!(response.answers.is_empty(), "no answers: {response:?}");
    assert_eq!(response.authorities.len(), 1, "one SOA: {response:?}");
    let soa_record = &response.authorities[0];
    assert_eq!(text(&soa_record.name), APEX, "SOA owner is the apex");
    assert_eq!(soa_record.ttl, negative_ttl, "SOA TTL = negative TTL");
    let RData::SOA(soa) = &soa_record.data else {
        panic!("authority is not a SOA: {soa_record:?}");
    };
    assert_eq!(soa.minimum, negative_ttl, "SOA MINIMUM = negative TTL");
    assert!(
        response.additionals.is_empty(),
        "no additionals: {response:?}"
    );
}

fn assert_nodata(response: &Message) {
    assert_negative(response, ResponseCode::NoError, 5);
}

fn assert_nxdomain(response: &Message) {
    assert_negative(response, ResponseCode::NXDomain, 5);
}

/// REFUSED / NOTIMP / FORMERR style: not authoritative, nothing in any
/// section but (maybe) the question.
fn assert_error(response: &Message, rcode: ResponseCode) {
    assert_header(response, rcode, false);
    assert!(response.answers.is_empty(), "no answers: {response:?}");
    assert!(
        response.authorities.is_empty(),
        "no authority: {response:?}"
    );
    assert!(
        response.additionals.is_empty(),
        "no additionals: {response:?}"
    );
}

fn ipv6s(records: &[Record]) -> Vec<Ipv6Addr> {
    records
        .iter()
        .map(|r| match &r.data {
            RData::AAAA(aaaa) => aaaa.0,
            other => panic!("expected AAAA, got {other:?}"),
        })
        .collect()
}

/// SRV records as (priority, weight, port, target).
pub(crate) fn srvs(records: &[Record]) -> Vec<(u16, u16, u16, String)> {
    records
        .iter()
        .map(|r| match &r.data {
            RData::SRV(srv) => (srv.priority, srv.weight, srv.port, text(&srv.target)),
            other => panic!("expected SRV, got {other:?}"),
        })
        .collect()
}

fn ptrs(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| match &r.data {
            RData::PTR(ptr) => text(&ptr.0),
            other => panic!("expected PTR, got {other:?}"),
        })
        .collect()
}

/// The strings of one TXT record, as bytes in order.
fn txt_strings(record: &Record) -> Vec<Vec<u8>> {
    match &record.data {
        RData::TXT(txt) => txt.txt_data.iter().map(|s| s.to_vec()).collect(),
        other => panic!("expected TXT, got {other:?}"),
    }
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

/// A server with three `web` instances: `w4` (IPv4, tag api, metadata),
/// `w6` (IPv6, tags api and v6, no metadata), `wh` (hostname host, metadata).
async fn web_fixture() -> TestServer {
    let server = TestServer::start().await;
    let w4 = Registration::new("w4", "web", "10.0.0.1", 8080)
        .priority(1)
        .weight(10)
        .tag("api")
        .meta("version", "1.0")
        .meta("zone", "a");
    let w6 = Registration::new("w6", "web", "fd00::1", 8081)
        .priority(2)
        .weight(20)
        .tags(&["api", "v6"]);
    let wh = Registration::new("wh", "web", "db.example.com", 8082)
        .priority(3)
        .weight(30)
        .meta("role", "primary");
    for registration in [w4, w6, wh] {
        server.register(&registration).await;
    }
    server
}

/// The SRV set of the web fixture.
fn web_srvs() -> Vec<(u16, u16, u16, String)> {
    vec![
        (1, 10, 8080, "w4.web.svc.local.".to_string()),
        (2, 20, 8081, "w6.web.svc.local.".to_string()),
        (3, 30, 8082, "db.example.com.".to_string()),
    ]
}

/// Checks that the additional section holds exactly the address glue of the
/// fixture's IP-host targets.
fn assert_web_glue(additionals: &[Record]) {
    let mut glue: Vec<(String, String)> = additionals
        .iter()
        .map(|r| (text(&r.name), format!("{:?}", r.record_type())))
        .collect();
    glue.sort();
    assert_eq!(
        glue,
        vec![
            ("w4.web.svc.local.".to_string(), "A".to_string()),
            ("w6.web.svc.local.".to_string(), "AAAA".to_string()),
        ],
        "glue for the IP targets only"
    );
    for record in additionals {
        match &record.data {
            RData::A(a) => assert_eq!(a.0, Ipv4Addr::new(10, 0, 0, 1)),
            RData::AAAA(aaaa) => assert_eq!(aaaa.0, "fd00::1".parse::<Ipv6Addr>().unwrap()),
            other => panic!("unexpected glue {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// What each name answers
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_name_answers_a_aaaa_and_srv_by_family() {
    let server = web_fixture().await;

    let a = server.query("web.svc.local.", RecordType::A).await;
    assert_positive(&a, "web.svc.local.");
    assert_eq!(
        ipv4s(&a.answers),
        vec![Ipv4Addr::new(10, 0, 0, 1)],
        "IPv4 only"
    );
    assert!(a.additionals.is_empty());

    let aaaa = server.query("web.svc.local.", RecordType::AAAA).await;
    assert_positive(&aaaa, "web.svc.local.");
    assert_eq!(
        ipv6s(&aaaa.answers),
        vec!["fd00::1".parse::<Ipv6Addr>().unwrap()],
        "IPv6 only"
    );

    let srv = server.query("web.svc.local.", RecordType::SRV).await;
    assert_positive(&srv, "web.svc.local.");
    assert_eq!(sorted(srvs(&srv.answers)), web_srvs());
    assert_web_glue(&srv.additionals);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_instance_is_only_in_srv() {
    let server = TestServer::start().await;
    server
        .register(&Registration::new("db1", "db", "Db.Example.COM", 5432))
        .await;

    let srv = server.query("db.svc.local.", RecordType::SRV).await;
    assert_positive(&srv, "db.svc.local.");
    assert_eq!(
        srvs(&srv.answers),
        vec![(0, 1, 5432, "db.example.com.".to_string())],
        "the hostname is the SRV target (default priority 0, weight 1)"
    );
    assert!(srv.additionals.is_empty(), "no glue for a hostname target");

    // The type exists but has no address: NODATA, not NXDOMAIN.
    for qtype in [RecordType::A, RecordType::AAAA] {
        assert_nodata(&server.query("db.svc.local.", qtype).await);
        assert_nodata(&server.query("db1.db.svc.local.", qtype).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnssd_service_answers_srv_and_ptr_with_extras() {
    let server = web_fixture().await;

    let srv = server.query("_web._tcp.svc.local.", RecordType::SRV).await;
    assert_positive(&srv, "_web._tcp.svc.local.");
    assert_eq!(sorted(srvs(&srv.answers)), web_srvs());
    assert_web_glue(&srv.additionals);

    let ptr = server.query("_web._tcp.svc.local.", RecordType::PTR).await;
    assert_positive(&ptr, "_web._tcp.svc.local.");
    let instances: BTreeSet<String> = ["w4", "w6", "wh"]
        .iter()
        .map(|n| format!("{n}._web._tcp.svc.local."))
        .collect();
    assert_eq!(ptr.answers.len(), 3);
    assert_eq!(ptrs(&ptr.answers), instances);

    // RFC 6763 §12.1: SRV and TXT of every instance, and their addresses.
    let mut extra_srv = BTreeMap::new();
    let mut extra_txt = BTreeMap::new();
    let mut addresses = BTreeSet::new();
    for record in &ptr.additionals {
        let owner = text(&record.name);
        match &record.data {
            RData::SRV(_) => {
                extra_srv.insert(owner, srvs(std::slice::from_ref(record))[0].clone());
            }
            RData::TXT(_) => {
                extra_txt.insert(owner, txt_strings(record));
            }
            RData::A(a) => {
                addresses.insert((owner, a.0.to_string()));
            }
            RData::AAAA(aaaa) => {
                addresses.insert((owner, aaaa.0.to_string()));
            }
            other => panic!("unexpected additional {other:?}"),
        }
    }
    assert_eq!(ptr.additionals.len(), 8, "3 SRV + 3 TXT + 2 addresses");
    assert_eq!(
        extra_srv.keys().cloned().collect::<BTreeSet<_>>(),
        instances
    );
    assert_eq!(
        extra_txt.keys().cloned().collect::<BTreeSet<_>>(),
        instances
    );
    assert_eq!(
        extra_srv["w4._web._tcp.svc.local."],
        (1, 10, 8080, "w4.web.svc.local.".to_string())
    );
    assert_eq!(
        extra_srv["wh._web._tcp.svc.local."],
        (3, 30, 8082, "db.example.com.".to_string())
    );
    assert_eq!(
        sorted(extra_txt["w4._web._tcp.svc.local."].clone()),
        vec![b"version=1.0".to_vec(), b"zone=a".to_vec()]
    );
    assert_eq!(extra_txt["w6._web._tcp.svc.local."], vec![Vec::<u8>::new()]);
    assert_eq!(
        addresses,
        BTreeSet::from([
            ("w4.web.svc.local.".to_string(), "10.0.0.1".to_string()),
            ("w6.web.svc.local.".to_string(), "fd00::1".to_string()),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_subdomains_filter_instances() {
    let server = web_fixture().await;

    let a = server
        .query("_api._sub.web.svc.local.", RecordType::A)
        .await;
    assert_positive(&a, "_api._sub.web.svc.local.");
    assert_eq!(ipv4s(&a.answers), vec![Ipv4Addr::new(10, 0, 0, 1)]);

    let srv = server
        .query("_api._sub.web.svc.local.", RecordType::SRV)
        .await;
    assert_positive(&srv, "_api._sub.web.svc.local.");
    assert_eq!(
        sorted(srvs(&srv.answers)),
        web_srvs()[..2].to_vec(),
        "only the instances tagged api"
    );
    assert_web_glue(&srv.additionals);

    let v6 = server
        .query("_v6._sub.web.svc.local.", RecordType::SRV)
        .await;
    assert_eq!(
        srvs(&v6.answers),
        vec![(2, 20, 8081, "w6.web.svc.local.".to_string())]
    );
    // The tag exists, but its only instance has no IPv4 address.
    assert_nodata(&server.query("_v6._sub.web.svc.local.", RecordType::A).await);
    // No instance carries that tag.
    assert_nxdomain(
        &server
            .query("_nope._sub.web.svc.local.", RecordType::A)
            .await,
    );

    // DNS-SD subtype (RFC 6763 §7.1).
    let ptr = server
        .query("_api._sub._web._tcp.svc.local.", RecordType::PTR)
        .await;
    assert_positive(&ptr, "_api._sub._web._tcp.svc.local.");
    assert_eq!(
        ptrs(&ptr.answers),
        BTreeSet::from([
            "w4._web._tcp.svc.local.".to_string(),
            "w6._web._tcp.svc.local.".to_string()
        ])
    );
    let ptr = server
        .query("_v6._sub._web._tcp.svc.local.", RecordType::PTR)
        .await;
    assert_eq!(
        ptrs(&ptr.answers),
        BTreeSet::from(["w6._web._tcp.svc.local.".to_string()])
    );
    assert_nxdomain(
        &server
            .query("_nope._sub._web._tcp.svc.local.", RecordType::PTR)
            .await,
    );
}

/// A type larger than the sampling threshold, with one instance unlike the
/// others: A/AAAA and tag questions find it by family and tag, and when a
/// re-registration moves it to the other family or drops its tag, the very
/// next answer follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registering_with_another_family_or_tags_shows_at_once() {
    let server = TestServer::start().await;
    register_many(&server, "big", 300).await;
    let odd =
        |host: &str, tags: &[&str]| Registration::new("odd", "big", host, 9).ttl(60).tags(tags);
    server.register(&odd("fd00::9", &["canary"])).await;

    let aaaa = server.query("big.svc.local.", RecordType::AAAA).await;
    assert_eq!(
        ipv6s(&aaaa.answers),
        vec!["fd00::9".parse::<Ipv6Addr>().unwrap()]
    );
    let tagged = server
        .query("_canary._sub.big.svc.local.", RecordType::AAAA)
        .await;
    assert_eq!(ipv6s(&tagged.answers).len(), 1);
    assert_nodata(
        &server
            .query("_canary._sub.big.svc.local.", RecordType::A)
            .await,
    );

    // Now IPv4, still tagged: no AAAA left in the type, the tag answers A.
    assert_eq!(
        server.try_register(&odd("10.99.0.9", &["canary"])).await.0,
        200
    );
    assert_nodata(&server.query("big.svc.local.", RecordType::AAAA).await);
    let tagged = server
        .query("_canary._sub.big.svc.local.", RecordType::A)
        .await;
    assert_eq!(ipv4s(&tagged.answers), vec![Ipv4Addr::new(10, 99, 0, 9)]);
    assert_nodata(
        &server
            .query("_canary._sub.big.svc.local.", RecordType::AAAA)
            .await,
    );

    // Untagged: the tag's names are gone; the instance still answers.
    assert_eq!(server.try_register(&odd("10.99.0.9", &[])).await.0, 200);
    assert_nxdomain(
        &server
            .query("_canary._sub.big.svc.local.", RecordType::A)
            .await,
    );
    assert_nxdomain(
        &server
            .query("_canary._sub._big._tcp.svc.local.", RecordType::PTR)
            .await,
    );
    let one = server.query("odd.big.svc.local.", RecordType::A).await;
    assert_eq!(ipv4s(&one.answers), vec![Ipv4Addr::new(10, 99, 0, 9)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_names_answer_that_instance() {
    let server = web_fixture().await;

    let a = server.query("w4.web.svc.local.", RecordType::A).await;
    assert_positive(&a, "w4.web.svc.local.");
    assert_eq!(ipv4s(&a.answers), vec![Ipv4Addr::new(10, 0, 0, 1)]);
    let aaaa = server.query("w6.web.svc.local.", RecordType::AAAA).await;
    assert_eq!(
        ipv6s(&aaaa.answers),
        vec!["fd00::1".parse::<Ipv6Addr>().unwrap()]
    );
    assert_nodata(&server.query("w4.web.svc.local.", RecordType::AAAA).await);
    assert_nodata(&server.query("wh.web.svc.local.", RecordType::A).await);

    for owner in ["w4.web.svc.local.", "w4._web._tcp.svc.local."] {
        let srv = server.query(owner, RecordType::SRV).await;
        assert_positive(&srv, owner);
        assert_eq!(
            srvs(&srv.answers),
            vec![(1, 10, 8080, "w4.web.svc.local.".to_string())]
        );
        assert_eq!(srv.additionals.len(), 1, "glue: {srv:?}");
        assert_eq!(text(&srv.additionals[0].name), "w4.web.svc.local.");
        assert_eq!(ipv4s(&srv.additionals), vec![Ipv4Addr::new(10, 0, 0, 1)]);

        let txt = server.query(owner, RecordType::TXT).await;
        assert_positive(&txt, owner);
        assert_eq!(txt.answers.len(), 1, "one TXT record");
        assert_eq!(
            sorted(txt_strings(&txt.answers[0])),
            vec![b"version=1.0".to_vec(), b"zone=a".to_vec()],
            "one key=value string per metadata pair"
        );
    }

    for owner in ["w6.web.svc.local.", "w6._web._tcp.svc.local."] {
        let txt = server.query(owner, RecordType::TXT).await;
        assert_positive(&txt, owner);
        assert_eq!(txt.answers.len(), 1);
        assert_eq!(
            txt_strings(&txt.answers[0]),
            vec![Vec::<u8>::new()],
            "no metadata: a single empty string (RFC 6763 §6.1)"
        );
    }

    let srv = server
        .query("wh._web._tcp.svc.local.", RecordType::SRV)
        .await;
    assert_eq!(
        srvs(&srv.answers),
        vec![(3, 30, 8082, "db.example.com.".to_string())]
    );
    assert!(srv.additionals.is_empty());
    let a = server.query("w4._web._tcp.svc.local.", RecordType::A).await;
    assert_eq!(ipv4s(&a.answers), vec![Ipv4Addr::new(10, 0, 0, 1)]);

    assert_nxdomain(&server.query("nobody.web.svc.local.", RecordType::A).await);
    assert_nxdomain(
        &server
            .query("nobody._web._tcp.svc.local.", RecordType::SRV)
            .await,
    );
    assert_nxdomain(&server.query("w4.other.svc.local.", RecordType::A).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_lists_types_with_a_serving_instance() {
    let server = TestServer::start().await;
    server
        .register(&Registration::new("w1", "web", "10.0.0.1", 80).ttl(60))
        .await;
    server
        .register(&Registration::new("a1", "api", "10.0.0.2", 80).ttl(60))
        .await;
    let sick = server
        .register(&Registration::new("c1", "crit", "10.0.0.3", 80).ttl(60))
        .await;
    let browse = "_services._dns-sd._udp.svc.local.";

    let before = server.query(browse, RecordType::PTR).await;
    assert_positive(&before, browse);
    assert_eq!(
        ptrs(&before.answers),
        BTreeSet::from([
            "_api._tcp.svc.local.".to_string(),
            "_crit._tcp.svc.local.".to_string(),
            "_web._tcp.svc.local.".to_string(),
        ])
    );
    assert_eq!(before.answers.len(), 3, "one PTR per type");

    let id = &id_of(&sick);
    assert_eq!(server.heartbeat_reporting(id, "critical").await.0, 200);
    let after = server.query(browse, RecordType::PTR).await;
    assert_eq!(
        ptrs(&after.answers),
        BTreeSet::from([
            "_api._tcp.svc.local.".to_string(),
            "_web._tcp.svc.local.".to_string(),
        ]),
        "a type whose only instance is critical is not listed"
    );
    assert_nxdomain(&server.query("crit.svc.local.", RecordType::A).await);
    assert_nxdomain(&server.query("_crit._tcp.svc.local.", RecordType::PTR).await);
    assert_nodata(&server.query(browse, RecordType::A).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apex_answers_soa_and_ns() {
    let server = TestServer::start().await;

    let soa = server.query("svc.local.", RecordType::SOA).await;
    assert_positive(&soa, APEX);
    assert_eq!(soa.answers.len(), 1);
    assert_eq!(soa.answers[0].ttl, 5);
    let RData::SOA(data) = &soa.answers[0].data else {
        panic!("not a SOA: {soa:?}");
    };
    assert_eq!(text(&data.mname), "ns.svc.local.");
    assert_eq!(text(&data.rname), "hostmaster.svc.local.");
    assert_eq!(data.minimum, 5, "SOA MINIMUM = negative TTL");

    let ns = server.query("svc.local.", RecordType::NS).await;
    assert_positive(&ns, APEX);
    assert_eq!(ns.answers.len(), 1);
    let RData::NS(target) = &ns.answers[0].data else {
        panic!("not an NS: {ns:?}");
    };
    assert_eq!(text(&target.0), "ns.svc.local.");

    assert_nodata(&server.query("svc.local.", RecordType::A).await);
    assert_nodata(&server.query("svc.local.", RecordType::TXT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_and_nodata_carry_the_soa() {
    let server = web_fixture().await;
    // Nothing registered under these names.
    for missing in [
        "nothing.svc.local.",
        "a.b.c.d.e.svc.local.",
        "_web.svc.local.",
        "_nothing._tcp.svc.local.",
        "x._nothing._tcp.svc.local.",
    ] {
        assert_nxdomain(&server.query(missing, RecordType::A).await);
    }
    // Existing names, other types.
    assert_nodata(&server.query("web.svc.local.", RecordType::TXT).await);
    assert_nodata(&server.query("web.svc.local.", RecordType::PTR).await);
    assert_nodata(&server.query("_web._tcp.svc.local.", RecordType::A).await);
    assert_nodata(&server.query("w4.web.svc.local.", RecordType::PTR).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_ttl_is_its_own_setting() {
    let server = TestServer::start_with(|config| {
        config.dns.ttl = 7;
        config.dns.negative_ttl = 3;
    })
    .await;
    server
        .register(&Registration::new("w1", "web", "10.0.0.1", 80).ttl(60))
        .await;
    let a = server.query("web.svc.local.", RecordType::A).await;
    assert_eq!(a.answers[0].ttl, 7, "records carry dns.ttl");
    assert_negative(
        &server.query("nothing.svc.local.", RecordType::A).await,
        ResponseCode::NXDomain,
        3,
    );
    assert_negative(
        &server.query("web.svc.local.", RecordType::TXT).await,
        ResponseCode::NoError,
        3,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_non_terminals_are_nodata() {
    let server = web_fixture().await;
    for ent in [
        "_tcp.svc.local.",
        "_udp.svc.local.",
        "_dns-sd._udp.svc.local.",
        "_sub.web.svc.local.",
        "_sub._web._tcp.svc.local.",
    ] {
        for qtype in [RecordType::A, RecordType::PTR, RecordType::SRV] {
            let response = server.query(ent, qtype).await;
            assert_nodata(&response);
        }
    }
    // No serving instance of that type: nothing exists under it.
    assert_nxdomain(&server.query("_sub.nothing.svc.local.", RecordType::A).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_zone_and_other_classes_are_refused() {
    let server = web_fixture().await;
    for outside in [
        "example.com.",
        "svc.local.evil.com.",
        "local.",
        "xsvc.local.",
        ".",
    ] {
        let response = server.query(outside, RecordType::A).await;
        assert_error(&response, ResponseCode::Refused);
        assert_eq!(response.queries.len(), 1, "question echoed");
        assert_eq!(text(response.queries[0].name()), outside);
    }
    for (qname, qtype) in [
        ("web.svc.local.", RecordType::A),
        ("version.bind.", RecordType::TXT),
    ] {
        let mut request = query_message(qname, qtype, None);
        request.queries[0].set_query_class(DNSClass::CH);
        let (_, response) = udp_ask(server.dns, &request).await;
        assert_error(&response, ResponseCode::Refused);
        assert_eq!(response.queries[0].query_class(), DNSClass::CH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_gets_the_rfc8482_answer() {
    let server = web_fixture().await;
    let check = |response: &Message| {
        assert_positive(response, "web.svc.local.");
        assert_eq!(response.answers.len(), 1, "a single record: {response:?}");
        let RData::HINFO(hinfo) = &response.answers[0].data else {
            panic!("not HINFO: {response:?}");
        };
        assert_eq!(&*hinfo.cpu, b"RFC8482");
        assert!(response.additionals.is_empty());
    };
    check(&server.query("web.svc.local.", RecordType::ANY).await);
    check(&query_tcp(server.dns, "web.svc.local.", RecordType::ANY, None).await);
    // A missing name stays NXDOMAIN.
    assert_nxdomain(&server.query("nothing.svc.local.", RecordType::ANY).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_transfers_are_refused() {
    let server = web_fixture().await;
    for qtype in [RecordType::AXFR, RecordType::IXFR] {
        let request = query_message("svc.local.", qtype, None);
        let (_, over_tcp) = tcp_ask(server.dns, &request).await;
        assert_error(&over_tcp, ResponseCode::Refused);
        let (_, over_udp) = udp_ask(server.dns, &request).await;
        assert_error(&over_udp, ResponseCode::Refused);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_opcodes_are_notimp() {
    let server = web_fixture().await;
    for op_code in [
        OpCode::Notify,
        OpCode::Status,
        OpCode::Update,
        OpCode::Unknown(3),
        OpCode::Unknown(15),
    ] {
        let mut request = query_message("web.svc.local.", RecordType::SOA, None);
        request.metadata.op_code = op_code;
        let (reply, response) = udp_ask(server.dns, &request).await;
        assert_error(&response, ResponseCode::NotImp);
        assert_eq!(response.metadata.op_code, op_code, "opcode echoed");
        assert_eq!((reply[2] >> 3) & 0x0f, u8::from(op_code));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_count_other_than_one_is_formerr() {
    let server = web_fixture().await;
    let mut none = query_message("web.svc.local.", RecordType::A, None);
    none.queries.clear();
    let (reply, response) = udp_ask(server.dns, &none).await;
    assert_error(&response, ResponseCode::FormErr);
    assert_eq!(&reply[4..6], &[0, 0], "QDCOUNT 0 echoed as 0");

    let mut two = query_message("web.svc.local.", RecordType::A, None);
    two.add_query(Query::query(name("w4.web.svc.local."), RecordType::A));
    let (_, response) = udp_ask(server.dns, &two).await;
    assert_error(&response, ResponseCode::FormErr);
    assert!(response.queries.len() <= 1, "{response:?}");

    let (_, response) = tcp_ask(server.dns, &two).await;
    assert_error(&response, ResponseCode::FormErr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_case_insensitive_and_echoed_as_asked() {
    let server = web_fixture().await;
    for (qname, qtype) in [
        ("WeB.SvC.LoCaL.", RecordType::A),
        ("W4._WEB._TCP.SVC.LOCAL.", RecordType::SRV),
        ("_Api._SUB.web.svc.LOCAL.", RecordType::A),
        ("NoThInG.svc.local.", RecordType::A),
    ] {
        let request = query_message(qname, qtype, None);
        let raw = request.to_vec().unwrap();
        let (reply, response) = udp_ask_raw(server.dns, &raw).await;
        // The question section is the header's 12 bytes, the name as sent,
        // then type and class: byte for byte the same.
        let question_len = name(qname).len() + 4;
        assert_eq!(
            &reply[12..12 + question_len],
            &raw[12..12 + question_len],
            "question echoed byte for byte for {qname}"
        );
        assert!(response.queries[0].name().eq_case(&name(qname)));
        if qname.starts_with("NoThInG") {
            assert_nxdomain(&response);
        } else {
            assert_positive(&response, qname);
        }
    }
    let a = server.query("WeB.SvC.LoCaL.", RecordType::A).await;
    assert_eq!(ipv4s(&a.answers), vec![Ipv4Addr::new(10, 0, 0, 1)]);
}

// ---------------------------------------------------------------------------
// EDNS
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edns_is_answered_with_opt_only_when_asked() {
    let server = web_fixture().await;
    for payload in [512u16, 1232, 4096, 65535] {
        for qname in ["web.svc.local.", "nothing.svc.local.", "example.com."] {
            let response = query_udp(server.dns, qname, RecordType::A, Some(payload)).await;
            let edns = response
                .edns
                .as_ref()
                .unwrap_or_else(|| panic!("OPT expected for {qname}: {response:?}"));
            assert_eq!(edns.max_payload(), 1232, "we advertise 1232");
            assert_eq!(edns.version(), 0);
            assert_eq!(edns.rcode_high(), 0);
        }
    }
    for qname in ["web.svc.local.", "nothing.svc.local.", "example.com."] {
        let response = query_udp(server.dns, qname, RecordType::A, None).await;
        assert!(response.edns.is_none(), "no OPT without EDNS: {response:?}");
        assert!(response.additionals.is_empty());
        let response = query_tcp(server.dns, qname, RecordType::A, None).await;
        assert!(response.edns.is_none(), "no OPT over TCP without EDNS");
    }
    let response = query_tcp(server.dns, "web.svc.local.", RecordType::A, Some(1232)).await;
    assert!(response.edns.is_some(), "OPT over TCP with EDNS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edns_version_1_is_badvers() {
    let server = web_fixture().await;
    let mut request = query_message("web.svc.local.", RecordType::A, Some(1232));
    let mut edns = Edns::new();
    edns.set_max_payload(1232).set_version(1);
    request.set_edns(edns);
    let (reply, response) = udp_ask(server.dns, &request).await;
    // 16 is both BADVERS and BADSIG; hickory decodes it as the latter.
    assert_eq!(u16::from(response.metadata.response_code), 16, "BADVERS");
    assert_eq!(reply[3] & 0x0f, 0, "low 4 bits of 16 in the header");
    let opt = response.edns.as_ref().expect("BADVERS comes with an OPT");
    assert_eq!(opt.rcode_high(), 1, "high bits of 16 in the OPT");
    assert_eq!(opt.version(), 0, "we speak version 0");
    assert!(response.answers.is_empty(), "no data with BADVERS");
    assert!(response.metadata.message_type == MessageType::Response);
}

// ---------------------------------------------------------------------------
// Size limits and truncation
// ---------------------------------------------------------------------------

/// Replaces the payload size of the OPT record that ends `packet` (an OPT
/// without options is the last 11 bytes: root, type, CLASS=payload, ...).
pub(crate) fn patch_payload(packet: &mut [u8], payload: u16) {
    let opt = packet.len() - 11;
    assert_eq!(&packet[opt..opt + 3], &[0, 0, 41], "OPT at the end");
    packet[opt + 3..opt + 5].copy_from_slice(&payload.to_be_bytes());
}

/// Checks a truncated UDP answer for type `big`: TC set, within `limit`,
/// not empty, every record distinct and registered.
fn assert_truncated(reply: &[u8], response: &Message, limit: usize, qtype: RecordType) {
    assert!(reply.len() <= limit, "{} bytes > {limit}", reply.len());
    assert_header(response, ResponseCode::NoError, true);
    assert!(response.metadata.truncation, "TC set at {limit}");
    assert!(
        !response.answers.is_empty(),
        "a truncated answer is not empty"
    );
    assert!(response.answers.len() < 100);
    let registered: BTreeSet<Ipv4Addr> = (0..100).map(many_ip).collect();
    match qtype {
        RecordType::A => {
            let got = ipv4s(&response.answers);
            let unique: BTreeSet<_> = got.iter().copied().collect();
            assert_eq!(unique.len(), got.len(), "no duplicates");
            assert!(unique.is_subset(&registered));
        }
        _ => {
            let got = srvs(&response.answers);
            let unique: BTreeSet<_> = got.iter().cloned().collect();
            assert_eq!(unique.len(), got.len(), "no duplicates");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_answers_fit_the_payload_size_with_tc() {
    let server = TestServer::start().await;
    register_many(&server, "big", 100).await;

    for qtype in [RecordType::A, RecordType::SRV] {
        // Without EDNS: 512.
        let (reply, response) =
            udp_ask(server.dns, &query_message("big.svc.local.", qtype, None)).await;
        assert_truncated(&reply, &response, 512, qtype);
        assert!(response.edns.is_none());

        // EDNS 1232.
        let (reply, response) = udp_ask(
            server.dns,
            &query_message("big.svc.local.", qtype, Some(1232)),
        )
        .await;
        assert_truncated(&reply, &response, 1232, qtype);
        assert!(reply.len() > 512, "uses the room EDNS gives");
        assert_eq!(response.edns.as_ref().map(Edns::max_payload), Some(1232));

        // EDNS 4096 is capped at 1232.
        let (reply, response) = udp_ask(
            server.dns,
            &query_message("big.svc.local.", qtype, Some(4096)),
        )
        .await;
        assert_truncated(&reply, &response, 1232, qtype);

        // EDNS 800 is honoured.
        let (reply, response) = udp_ask(
            server.dns,
            &query_message("big.svc.local.", qtype, Some(800)),
        )
        .await;
        assert_truncated(&reply, &response, 800, qtype);
        assert!(response.edns.is_some(), "OPT kept when truncating");

        // EDNS 100 is treated as 512 (RFC 6891 §6.2.5).
        let mut raw = query_message("big.svc.local.", qtype, Some(4096))
            .to_vec()
            .unwrap();
        patch_payload(&mut raw, 100);
        let (reply, response) = udp_ask_raw(server.dns, &raw).await;
        assert_truncated(&reply, &response, 512, qtype);
        assert!(response.edns.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_answers_the_whole_set() {
    let server = TestServer::start().await;
    register_many(&server, "big", 100).await;

    let (_, srv) = tcp_ask(
        server.dns,
        &query_message("big.svc.local.", RecordType::SRV, None),
    )
    .await;
    assert_positive(&srv, "big.svc.local.");
    let expected: BTreeSet<(u16, u16, u16, String)> = (0..100)
        .map(|i| (0, 1, 1000 + i as u16, format!("i{i:02}.big.svc.local.")))
        .collect();
    assert_eq!(
        srvs(&srv.answers).into_iter().collect::<BTreeSet<_>>(),
        expected
    );
    assert_eq!(srv.answers.len(), 100);
    assert_eq!(srv.additionals.len(), 100, "glue for every target");

    let (_, a) = tcp_ask(
        server.dns,
        &query_message("big.svc.local.", RecordType::A, Some(1232)),
    )
    .await;
    assert_positive(&a, "big.svc.local.");
    assert_eq!(
        sorted(ipv4s(&a.answers)),
        (0..100).map(many_ip).collect::<Vec<_>>(),
        "all 100 addresses, EDNS payload irrelevant over TCP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_srv_answers_are_random_subsets_with_matching_glue() {
    let server = TestServer::start().await;
    register_many(&server, "big", 100).await;

    let mut subsets = BTreeSet::new();
    for round in 0..10 {
        let payload = if round % 2 == 0 { None } else { Some(1232) };
        let (reply, response) = udp_ask(
            server.dns,
            &query_message("big.svc.local.", RecordType::SRV, payload),
        )
        .await;
        assert_truncated(
            &reply,
            &response,
            payload.map_or(512, usize::from),
            RecordType::SRV,
        );
        let targets: BTreeSet<String> = srvs(&response.answers)
            .into_iter()
            .map(|(_, _, port, target)| {
                let i = usize::from(port - 1000);
                assert_eq!(
                    target,
                    format!("i{i:02}.big.svc.local."),
                    "port and target agree"
                );
                target
            })
            .collect();
        for glue in &response.additionals {
            let owner = text(&glue.name);
            assert!(
                targets.contains(&owner),
                "glue {owner} for a target not in the answer"
            );
            let i: usize = owner[1..3].parse().unwrap();
            assert_eq!(ipv4s(std::slice::from_ref(glue)), vec![many_ip(i)]);
        }
        subsets.insert(targets);
    }
    assert!(
        subsets.len() >= 2,
        "10 truncated answers were all the same subset"
    );
}

// ---------------------------------------------------------------------------
// Shuffle and TTL
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_freshly_shuffled() {
    let server = TestServer::start().await;
    register_many(&server, "ten", 10).await;
    let mut firsts = BTreeSet::new();
    for _ in 0..30 {
        let response = server.query("ten.svc.local.", RecordType::A).await;
        assert_positive(&response, "ten.svc.local.");
        let got = ipv4s(&response.answers);
        assert_eq!(
            sorted(got.clone()),
            (0..10).map(many_ip).collect::<Vec<_>>(),
            "the whole set every time"
        );
        firsts.insert(got[0]);
    }
    // With a fair shuffle, 30 identical firsts has probability 10^-29.
    assert!(firsts.len() >= 2, "the first record never changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_ttl_is_capped_by_remaining_lifetime() {
    let server = TestServer::start().await;
    server
        .register(&Registration::new("long", "web", "10.0.0.1", 80).ttl(60))
        .await;

    for (qname, qtype) in [
        ("web.svc.local.", RecordType::A),
        ("web.svc.local.", RecordType::SRV),
        ("long.web.svc.local.", RecordType::TXT),
        ("_web._tcp.svc.local.", RecordType::PTR),
        ("_services._dns-sd._udp.svc.local.", RecordType::PTR),
    ] {
        let response = server.query(qname, qtype).await;
        assert_positive(&response, qname);
        for record in response.answers.iter().chain(&response.additionals) {
            assert_eq!(record.ttl, 5, "default TTL for {qname} {qtype}: {record:?}");
        }
    }

    server
        .register(&Registration::new("short", "brief", "10.0.0.2", 80).ttl(2))
        .await;
    for (qname, qtype) in [
        ("brief.svc.local.", RecordType::A),
        ("brief.svc.local.", RecordType::SRV),
        ("short.brief.svc.local.", RecordType::TXT),
        ("_brief._tcp.svc.local.", RecordType::PTR),
    ] {
        let response = server.query(qname, qtype).await;
        assert_positive(&response, qname);
        for record in response.answers.iter().chain(&response.additionals) {
            assert!(record.ttl <= 2, "TTL beyond the lifetime: {record:?}");
        }
    }

    // One RRset, one TTL (RFC 2181 §5.2): the smallest of its members'.
    server
        .register(&Registration::new("short", "web", "10.0.0.3", 80).ttl(2))
        .await;
    let response = server.query("web.svc.local.", RecordType::A).await;
    assert_eq!(response.answers.len(), 2);
    for record in &response.answers {
        assert!(record.ttl <= 2, "RRset TTL is the smallest: {response:?}");
    }
    assert_eq!(response.answers[0].ttl, response.answers[1].ttl);
}

// ---------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pipelined_queries_are_answered_in_order() {
    let server = web_fixture().await;
    let questions = [
        ("web.svc.local.", RecordType::A),
        ("web.svc.local.", RecordType::AAAA),
        ("nothing.svc.local.", RecordType::A),
        ("_web._tcp.svc.local.", RecordType::PTR),
        ("example.com.", RecordType::A),
        ("w4.web.svc.local.", RecordType::TXT),
    ];
    let requests: Vec<Message> = questions
        .iter()
        .enumerate()
        .map(|(i, (qname, qtype))| {
            let mut request = query_message(qname, *qtype, None);
            request.metadata.id = 1000 + i as u16;
            request
        })
        .collect();
    let mut all = Vec::new();
    for request in &requests {
        all.extend(frame(&request.to_vec().unwrap()));
    }
    let mut stream = TcpStream::connect(server.dns).await.unwrap();
    stream.write_all(&all).await.unwrap();

    let mut rcodes = Vec::new();
    for (request, (qname, qtype)) in requests.iter().zip(questions) {
        let reply = read_frame(&mut stream).await.expect("pipelined answer");
        let response = decode_whole(&reply);
        assert_eq!(response.metadata.id, request.metadata.id, "in order");
        assert_eq!(text(response.queries[0].name()), qname);
        assert_eq!(response.queries[0].query_type(), qtype);
        rcodes.push(response.metadata.response_code);
    }
    assert_eq!(
        rcodes,
        vec![
            ResponseCode::NoError,
            ResponseCode::NoError,
            ResponseCode::NXDomain,
            ResponseCode::NoError,
            ResponseCode::Refused,
            ResponseCode::NoError,
        ]
    );
    // The connection is still usable afterwards.
    let request = query_message("web.svc.local.", RecordType::A, None);
    let reply = tcp_exchange_on(&mut stream, &request.to_vec().unwrap())
        .await
        .unwrap();
    assert_eq!(&reply[..2], &request.metadata.id.to_be_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_queries_split_across_writes_and_long_pipelines_are_answered() {
    let server = web_fixture().await;
    // One query written a byte at a time: answered once it is whole.
    let request = query_message("w4.web.svc.local.", RecordType::A, None);
    let framed = frame(&request.to_vec().unwrap());
    let mut stream = TcpStream::connect(server.dns).await.unwrap();
    for byte in &framed {
        stream.write_all(std::slice::from_ref(byte)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let response = decode_whole(&read_frame(&mut stream).await.unwrap());
    assert_eq!(response.metadata.id, request.metadata.id);
    assert_eq!(ipv4s(&response.answers), vec![Ipv4Addr::new(10, 0, 0, 1)]);

    // 2 000 queries in one write, whose answers (about 300 KiB) are more
    // than the server buffers before writing: every one answered, in order.
    let mut all = Vec::new();
    for id in 0..2000u16 {
        let mut request = query_message("web.svc.local.", RecordType::SRV, None);
        request.metadata.id = id;
        all.extend(frame(&request.to_vec().unwrap()));
    }
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move { writer.write_all(&all).await });
    for id in 0..2000u16 {
        let len = usize::from(reader.read_u16().await.unwrap());
        let mut reply = vec![0u8; len];
        reader.read_exact(&mut reply).await.unwrap();
        let response = decode_whole(&reply);
        assert_eq!(response.metadata.id, id, "in order");
        assert_eq!(response.answers.len(), 3, "the whole SRV set");
    }
    writing.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_bytes_do_not_keep_a_tcp_connection_open() {
    let server = TestServer::start_with(|config| config.dns.tcp_idle_timeout = 1).await;
    let stream = TcpStream::connect(server.dns).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // A frame announcing 400 bytes, sent one byte every 100 ms: it would
    // take 40 s to complete. The idle timeout counts from the last
    // complete query, so the server closes within about 1 s regardless.
    let trickle = tokio::spawn(async move {
        writer.write_all(&[1, 144]).await?;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            writer.write_all(&[0]).await?;
        }
        #[allow(unreachable_code)]
        std::io::Result::Ok(())
    });
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(4), reader.read(&mut byte))
        .await
        .expect("closed while bytes still trickled in");
    // EOF, or a reset if a trickled byte arrived after the close.
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "closed too early"
    );
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connection_is_closed_after_the_timeout() {
    let server = TestServer::start_with(|config| config.dns.tcp_idle_timeout = 1).await;
    server
        .register(&Registration::new("w1", "web", "10.0.0.1", 80).ttl(60))
        .await;

    // Silent connection: still open well before the timeout...
    let mut silent = TcpStream::connect(server.dns).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), silent.read(&mut byte)).await;
    assert!(early.is_err(), "closed before the idle timeout: {early:?}");
    // ...and closed by the server within a few seconds.
    let late = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte))
        .await
        .expect("idle connection closed within 5 s");
    assert_eq!(late.expect("orderly close"), 0, "EOF from the server");

    // A connection with half a query is also closed.
    let mut partial = TcpStream::connect(server.dns).await.unwrap();
    partial.write_all(&[0, 40, 1, 2, 3]).await.unwrap();
    let late = tokio::time::timeout(Duration::from_secs(5), partial.read(&mut byte))
        .await
        .expect("stalled connection closed within 5 s");
    assert_eq!(late.expect("orderly close"), 0);

    // A connection in use is answered, and closed only once idle again.
    let mut busy = TcpStream::connect(server.dns).await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let request = query_message("web.svc.local.", RecordType::A, None);
        let reply = tcp_exchange_on(&mut busy, &request.to_vec().unwrap())
            .await
            .expect("answered while in use");
        let response = Message::from_vec(&reply).unwrap();
        assert_eq!(ipv4s(&response.answers), vec![Ipv4Addr::new(10, 0, 0, 1)]);
    }
    let late = tokio::time::timeout(Duration::from_secs(5), busy.read(&mut byte))
        .await
        .expect("closed once idle");
    assert_eq!(late.expect("orderly close"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_tcp_share_one_port() {
    let server = web_fixture().await;
    let over_udp = query_udp(server.dns, "web.svc.local.", RecordType::SRV, None).await;
    let over_tcp = query_tcp(server.dns, "web.svc.local.", RecordType::SRV, None).await;
    assert_positive(&over_udp, "web.svc.local.");
    assert_positive(&over_tcp, "web.svc.local.");
    assert_eq!(sorted(srvs(&over_udp.answers)), web_srvs());
    assert_eq!(sorted(srvs(&over_tcp.answers)), web_srvs());
    assert_web_glue(&over_tcp.additionals);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_label_is_an_ordinary_missing_name() {
    // There are no wildcard records: `*` is just a label nobody registered.
    let server = web_fixture().await;
    for (qname, qtype) in [
        ("*.svc.local.", RecordType::SOA),
        ("*.svc.local.", RecordType::NS),
        ("*.svc.local.", RecordType::A),
        ("*.web.svc.local.", RecordType::A),
        ("*._web._tcp.svc.local.", RecordType::SRV),
        ("*.w4.web.svc.local.", RecordType::A),
    ] {
        let response = server.query(qname, qtype).await;
        assert_nxdomain(&response);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_in_mixed_case_are_found_in_any_case() {
    let server = TestServer::start().await;
    server
        .register(&Registration::new("MixedCase", "WebApp", "10.0.0.9", 9).tag("Blue"))
        .await;
    for (qname, qtype) in [
        ("webapp.svc.local.", RecordType::A),
        ("WEBAPP.svc.local.", RecordType::A),
        ("mixedcase.webapp.svc.local.", RecordType::A),
        ("MixedCase.WebApp.svc.local.", RecordType::A),
        ("_blue._sub.webapp.svc.local.", RecordType::A),
        ("_BLUE._sub.WebApp.svc.local.", RecordType::A),
    ] {
        let response = server.query(qname, qtype).await;
        assert_positive(&response, qname);
        assert_eq!(ipv4s(&response.answers), vec![Ipv4Addr::new(10, 0, 0, 9)]);
    }
    let srv = server
        .query("_webapp._tcp.svc.local.", RecordType::SRV)
        .await;
    assert!(
        srvs(&srv.answers)[0].3 == "mixedcase.webapp.svc.local.",
        "{srv:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txt_carries_metadata_strings_up_to_255_bytes() {
    let server = TestServer::start().await;
    // "k=" plus 253 bytes: the longest allowed key=value, one full
    // character-string.
    let long = "v".repeat(253);
    let t1 = Registration::new("t1", "meta", "10.0.0.1", 1)
        .meta("k", &long)
        .meta("path", "/a=b c")
        .meta("empty", "");
    server.register(&t1).await;
    let response = server.query("t1.meta.svc.local.", RecordType::TXT).await;
    assert_positive(&response, "t1.meta.svc.local.");
    assert_eq!(response.answers.len(), 1);
    let strings = sorted(txt_strings(&response.answers[0]));
    assert_eq!(
        strings,
        sorted(vec![
            format!("k={long}").into_bytes(),
            b"path=/a=b c".to_vec(),
            b"empty=".to_vec(),
        ])
    );
    assert!(strings.iter().any(|s| s.len() == 255));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glue_that_does_not_fit_is_dropped_without_tc() {
    // 12 SRV records (37 bytes each, targets are not compressed) fit in 512
    // bytes; their 12 glue records (16 bytes each) do not all fit as well.
    let server = TestServer::start().await;
    register_many(&server, "mid", 12).await;

    let (full_reply, full) = tcp_ask(
        server.dns,
        &query_message("mid.svc.local.", RecordType::SRV, None),
    )
    .await;
    assert_eq!(full.additionals.len(), 12);
    assert!(
        full_reply.len() > 512,
        "precondition: the whole answer is too big"
    );

    let (reply, response) = udp_ask(
        server.dns,
        &query_message("mid.svc.local.", RecordType::SRV, None),
    )
    .await;
    assert!(reply.len() <= 512);
    assert_positive(&response, "mid.svc.local.");
    assert_eq!(response.answers.len(), 12, "every SRV record fits");
    assert!(
        !response.metadata.truncation,
        "missing additional records never set TC (RFC 2181 §9)"
    );
    assert!(response.additionals.len() < 12, "{response:?}");
    for glue in &response.additionals {
        let owner = text(&glue.name);
        let i: usize = owner[1..3].parse().unwrap();
        assert_eq!(owner, format!("i{i:02}.mid.svc.local."));
        assert_eq!(ipv4s(std::slice::from_ref(glue)), vec![many_ip(i)]);
    }
}
