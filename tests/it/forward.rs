//! Forwarding (`dns.forward`) against a real upstream: a Knot DNS started
//! by each test in a directory of its own, serving `example.test` (with a
//! TXT answer too big for 512 bytes), the reverse zone
//! `2.0.192.in-addr.arpa` and a `svc.local` of its own (which signpost must
//! never ask it about), and upstreams that never answer or lie: UDP
//! sockets the test holds.
//!
//! Knot is installed by `.ci/run` (Debian package `knot`); without
//! `/usr/sbin/knotd` these tests fail, never skip.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

use crate::support::{Registration, TestServer, query_message, tcp_exchange};

const KNOTD: &str = "/usr/sbin/knotd";

/// A Knot DNS on 127.0.0.1 and a free port, stopped (and its directory
/// removed) when dropped.
struct Knot {
    addr: SocketAddr,
    dir: PathBuf,
    _process: tokio::process::Child,
}

impl Knot {
    async fn start() -> Knot {
        assert!(
            std::path::Path::new(KNOTD).exists(),
            "the forwarding tests need Knot DNS ({KNOTD}) as a real upstream: \
             apt-get install knot"
        );
        let dir = std::env::temp_dir().join(format!(
            "signpost-forward-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        for sub in ["run", "db", "zones"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let soa = "@ SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 300\n\
                   @ NS ns.example.test.\n";
        // Four strings of 200 characters: about 850 bytes of answer.
        let big: String = (0..4)
            .map(|n| {
                format!(
                    "big TXT \"{}\"\n",
                    char::from(b'a' + n).to_string().repeat(200)
                )
            })
            .collect();
        let zones = [
            (
                "example.test",
                format!(
                    "{soa}ns A 127.0.0.1\nwww A 192.0.2.10\nwww A 192.0.2.11\n\
                     txt TXT \"hello from knot\"\n{big}"
                ),
            ),
            (
                "2.0.192.in-addr.arpa",
                format!("{soa}10 PTR www.example.test.\n20 PTR knot-says.example.test.\n"),
            ),
            (
                "svc.local",
                format!("{soa}web A 203.0.113.1\nnothing A 203.0.113.2\n"),
            ),
        ];
        let mut domains = String::new();
        for (zone, records) in &zones {
            let file = dir.join("zones").join(format!("{zone}.zone"));
            std::fs::write(file, format!("$ORIGIN {zone}.\n$TTL 300\n{records}")).unwrap();
            domains.push_str(&format!("  - domain: {zone}\n"));
        }
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let d = dir.display();
        let config = format!(
            "server:\n    rundir: \"{d}/run\"\n    listen: 127.0.0.1@{port}\n    \
             udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
             database:\n    storage: \"{d}/db\"\n\
             log:\n  - target: stderr\n    any: warning\n\
             template:\n  - id: default\n    storage: \"{d}/zones\"\n    file: \"%s.zone\"\n    \
             zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\n\
             zone:\n{domains}"
        );
        let conf = dir.join("knot.conf");
        std::fs::write(&conf, config).unwrap();
        let log = std::fs::File::create(dir.join("knot.log")).unwrap();
        let mut process = tokio::process::Command::new(KNOTD)
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("knotd starts");
        // Up once it answers for every zone.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut up = true;
            for (zone, _) in &zones {
                let asked = query_message(&format!("{zone}."), RecordType::SOA, None);
                let reply = exchange(addr, &asked, Duration::from_millis(200)).await;
                up &= reply.is_some_and(|r| r.metadata.response_code == ResponseCode::NoError);
            }
            if up {
                break;
            }
            let exited = process.try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("knot.log")).unwrap_or_default();
                panic!("knotd did not come up on {addr} ({exited:?}): {log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Knot {
            addr,
            dir,
            _process: process,
        }
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free for UDP and TCP on 127.0.0.1 (for a moment: another
/// program could take it before Knot does).
pub(crate) fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// An upstream that takes queries and never answers.
async fn silent() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// signpost forwarding to `upstreams`, each given `timeout_s` seconds.
async fn forwarding(upstreams: &[SocketAddr], timeout_s: u64) -> TestServer {
    let upstreams: Vec<String> = upstreams.iter().map(SocketAddr::to_string).collect();
    TestServer::start_with(|config| {
        config.dns.forward = upstreams;
        config.dns.forward_timeout = timeout_s;
    })
    .await
}

/// Sends `request` over UDP from a fresh socket and waits up to `wait` for
/// the reply, which must carry the request's id.
async fn exchange(server: SocketAddr, request: &Message, wait: Duration) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&request.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buffer = vec![0; 65535];
    let (len, _) = tokio::time::timeout(wait, socket.recv_from(&mut buffer))
        .await
        .ok()?
        .unwrap();
    let reply = Message::from_vec(&buffer[..len]).expect("reply parses");
    assert_eq!(reply.metadata.id, request.metadata.id, "reply id");
    Some(reply)
}

/// Asks `server` over UDP (with EDNS 1232 when `edns`); the reply within 5 s.
async fn udp(server: SocketAddr, name: &str, qtype: RecordType, edns: bool) -> Message {
    let request = query_message(name, qtype, edns.then_some(1232));
    exchange(server, &request, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no answer from {server} to {name} {qtype}"))
}

/// Asks `server` over TCP (no EDNS).
async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let request = query_message(name, qtype, None);
    let reply = tcp_exchange(server, &request.to_vec().unwrap())
        .await
        .expect("an answer over tcp");
    let reply = Message::from_vec(&reply).expect("reply parses");
    assert_eq!(reply.metadata.id, request.metadata.id, "reply id");
    reply
}

/// What an answer says, for comparing two servers': rcode, flags that an
/// upstream sets, and every section but the OPT record.
fn said(message: &Message) -> (ResponseCode, bool, bool, Vec<Record>, Vec<Record>) {
    (
        message.metadata.response_code,
        message.metadata.authoritative,
        message.metadata.truncation,
        message.answers.clone(),
        message.authorities.clone(),
    )
}

async fn forwarded(server: &TestServer, result: &str) -> f64 {
    let series = format!("signpost_dns_forwarded_total{{result=\"{result}\"}}");
    server.metric(&series).await.unwrap_or(0.0)
}

#[tokio::test]
async fn names_outside_the_zone_get_the_upstreams_answers() {
    let knot = Knot::start().await;
    let server = forwarding(&[knot.addr], 1).await;
    for (name, qtype) in [
        ("www.example.test.", RecordType::A),
        ("txt.example.test.", RecordType::TXT),
        ("nope.example.test.", RecordType::A),
        ("www.example.test.", RecordType::AAAA),
    ] {
        let through = udp(server.dns, name, qtype, true).await;
        let direct = udp(knot.addr, name, qtype, true).await;
        assert_eq!(said(&through), said(&direct), "{name} {qtype}");
        let through = tcp(server.dns, name, qtype).await;
        let direct = tcp(knot.addr, name, qtype).await;
        assert_eq!(said(&through), said(&direct), "{name} {qtype} over tcp");
    }
    let www = udp(server.dns, "www.example.test.", RecordType::A, false).await;
    assert_eq!(www.answers.len(), 2);
    let nope = udp(server.dns, "nope.example.test.", RecordType::A, false).await;
    assert_eq!(nope.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(nope.authorities[0].data, RData::SOA(_)));
    assert_eq!(forwarded(&server, "answered").await, 10.0);
    assert_eq!(forwarded(&server, "failed").await, 0.0);
}

#[tokio::test]
async fn a_big_answer_comes_truncated_over_udp_and_whole_over_tcp() {
    let knot = Knot::start().await;
    let server = forwarding(&[knot.addr], 1).await;
    let name = "big.example.test.";
    // Without EDNS, 512 bytes: header and question, TC, to ask again over
    // TCP (signpost itself got the whole answer from Knot over TCP).
    let cut = udp(server.dns, name, RecordType::TXT, false).await;
    assert!(cut.metadata.truncation, "{cut:?}");
    assert_eq!(cut.metadata.response_code, ResponseCode::NoError);
    assert_eq!(cut.queries.len(), 1);
    assert!(cut.answers.is_empty() && cut.authorities.is_empty());
    let whole = tcp(server.dns, name, RecordType::TXT).await;
    assert!(!whole.metadata.truncation);
    assert_eq!(whole.answers.len(), 4);
    assert_eq!(
        said(&whole),
        said(&tcp(knot.addr, name, RecordType::TXT).await)
    );
    // With EDNS 1232 it fits.
    let fits = udp(server.dns, name, RecordType::TXT, true).await;
    assert!(!fits.metadata.truncation);
    assert_eq!(said(&fits), said(&whole));
    assert_eq!(
        server.metric("signpost_dns_truncated_total").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_skipped_after_the_timeout() {
    let knot = Knot::start().await;
    let dead = silent().await;
    let server = forwarding(&[dead.local_addr().unwrap(), knot.addr], 1).await;
    let direct = udp(knot.addr, "www.example.test.", RecordType::A, true).await;
    // The first query starts at the first upstream, and waits it out.
    let started = Instant::now();
    let first = udp(server.dns, "www.example.test.", RecordType::A, true).await;
    let waited = started.elapsed();
    assert_eq!(said(&first), said(&direct));
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let mut buffer = [0; 512];
    let asked = dead.try_recv_from(&mut buffer);
    assert!(
        asked.is_ok(),
        "the dead upstream was asked first: {asked:?}"
    );
    // The next starts at the next upstream, which answers: the dead one is
    // not asked again.
    let second = udp(server.dns, "www.example.test.", RecordType::A, true).await;
    assert_eq!(said(&second), said(&direct));
    let asked = dead.try_recv_from(&mut buffer);
    assert!(
        asked.is_err(),
        "the dead upstream was asked again: {asked:?}"
    );
    assert_eq!(forwarded(&server, "answered").await, 2.0);
}

#[tokio::test]
async fn when_no_upstream_answers_the_client_gets_servfail() {
    let (one, two) = (silent().await, silent().await);
    let upstreams = [one.local_addr().unwrap(), two.local_addr().unwrap()];
    let server = forwarding(&upstreams, 1).await;
    let started = Instant::now();
    let (over_udp, over_tcp) = tokio::join!(
        udp(server.dns, "www.example.test.", RecordType::A, true),
        tcp(server.dns, "www.example.test.", RecordType::A),
    );
    let waited = started.elapsed();
    for reply in [&over_udp, &over_tcp] {
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert_eq!(reply.queries[0].name().to_ascii(), "www.example.test.");
        assert!(reply.answers.is_empty());
    }
    // One second for each upstream.
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(forwarded(&server, "failed").await, 2.0);
}

#[tokio::test]
async fn beyond_the_in_flight_limit_queries_get_servfail_at_once() {
    let dead = silent().await;
    let upstream = dead.local_addr().unwrap().to_string();
    let server = TestServer::start_with(|config| {
        config.dns.forward = vec![upstream];
        config.dns.forward_timeout = 2;
        config.dns.forward_max_in_flight = 1;
    })
    .await;
    let waiting = tokio::spawn(udp(server.dns, "one.example.test.", RecordType::A, true));
    let mut buffer = [0; 512];
    tokio::time::timeout(Duration::from_secs(2), dead.recv_from(&mut buffer))
        .await
        .expect("the first query reaches the upstream")
        .unwrap();
    // While the first waits out its 2 s, the next are answered at once.
    let started = Instant::now();
    let refused = udp(server.dns, "two.example.test.", RecordType::A, true).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::ServFail);
    let over_tcp = tcp(server.dns, "three.example.test.", RecordType::A).await;
    assert_eq!(over_tcp.metadata.response_code, ResponseCode::ServFail);
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    assert!(!waiting.is_finished());
    let first = waiting.await.unwrap();
    assert_eq!(first.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(forwarded(&server, "refused").await, 2.0);
    assert_eq!(forwarded(&server, "failed").await, 1.0);
}

#[tokio::test]
async fn without_forward_names_outside_the_zone_are_refused() {
    let server = TestServer::start().await;
    for (name, qtype) in [
        ("www.example.test.", RecordType::A),
        ("10.2.0.192.in-addr.arpa.", RecordType::PTR),
    ] {
        let reply = udp(server.dns, name, qtype, true).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
        let reply = tcp(server.dns, name, qtype).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
    }
    assert_eq!(forwarded(&server, "answered").await, 0.0);
}

#[tokio::test]
async fn the_zone_and_known_reverse_names_are_never_forwarded() {
    let knot = Knot::start().await;
    let server = forwarding(&[knot.addr], 1).await;
    server
        .register(&Registration::new("w1", "web", "10.0.0.1", 80))
        .await;
    server
        .register(&Registration::new("r1", "rev", "192.0.2.20", 80))
        .await;
    // Knot's svc.local says 203.0.113.1 and has `nothing`; signpost's
    // zone is signpost's.
    let web = udp(server.dns, "web.svc.local.", RecordType::A, true).await;
    assert_eq!(web.answers.len(), 1);
    assert_eq!(web.answers[0].data, RData::A(A::new(10, 0, 0, 1)));
    let nothing = udp(server.dns, "nothing.svc.local.", RecordType::A, true).await;
    assert_eq!(nothing.metadata.response_code, ResponseCode::NXDomain);
    let RData::SOA(soa) = &nothing.authorities[0].data else {
        panic!("{nothing:?}");
    };
    assert_eq!(soa.mname.to_ascii(), "ns.svc.local.");
    // A reverse name of an instance signpost serves is signpost's; one it
    // does not know is Knot's.
    let known = udp(
        server.dns,
        "20.2.0.192.in-addr.arpa.",
        RecordType::PTR,
        true,
    )
    .await;
    let ptr = PTR(Name::from_ascii("r1.rev.svc.local.").unwrap());
    assert_eq!(known.answers[0].data, RData::PTR(ptr));
    let unknown = udp(
        server.dns,
        "10.2.0.192.in-addr.arpa.",
        RecordType::PTR,
        true,
    )
    .await;
    let ptr = PTR(Name::from_ascii("www.example.test.").unwrap());
    assert_eq!(unknown.answers.len(), 1);
    assert_eq!(unknown.answers[0].data, RData::PTR(ptr));
    assert_eq!(forwarded(&server, "answered").await, 1.0);
}

#[tokio::test]
async fn replies_from_elsewhere_or_to_another_question_are_ignored() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let elsewhere = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = forwarding(&[upstream.local_addr().unwrap()], 2).await;
    let liar = tokio::spawn(async move {
        let mut buffer = vec![0; 65535];
        let (len, asker) = upstream.recv_from(&mut buffer).await.unwrap();
        let query = Message::from_vec(&buffer[..len]).unwrap();
        let reply = |id: u16, name: &str, address: [u8; 4]| {
            let mut reply = Message::new(id, MessageType::Response, OpCode::Query);
            let name = Name::from_ascii(name).unwrap();
            reply.add_query(Query::query(name.clone(), RecordType::A));
            let [a, b, c, d] = address;
            reply.add_answer(Record::from_rdata(name, 60, RData::A(A::new(a, b, c, d))));
            reply.to_vec().unwrap()
        };
        let id = query.metadata.id;
        let asked = "www.example.test.";
        // The right id and question, from another address.
        let forged = reply(id, asked, [6, 6, 6, 6]);
        elsewhere.send_to(&forged, asker).await.unwrap();
        // From the upstream: another id, then another question.
        let other_id = reply(id.wrapping_add(1), asked, [6, 6, 6, 7]);
        upstream.send_to(&other_id, asker).await.unwrap();
        let other_name = reply(id, "www.example.tesu.", [6, 6, 6, 8]);
        upstream.send_to(&other_name, asker).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The answer, with the question in another case.
        let real = reply(id, "WWW.Example.Test.", [198, 51, 100, 7]);
        upstream.send_to(&real, asker).await.unwrap();
    });
    let answer = udp(server.dns, "www.example.test.", RecordType::A, true).await;
    liar.await.unwrap();
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer.answers.len(), 1, "{answer:?}");
    assert_eq!(answer.answers[0].data, RData::A(A::new(198, 51, 100, 7)));
}
