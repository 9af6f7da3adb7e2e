//! Malformed input never stops the server: a packet shorter than a header,
//! or with QR set, is dropped, and anything else that does not parse is
//! answered FORMERR (README "Other queries"). Bounded, seeded fuzzing over
//! real UDP and TCP sockets: random bytes, mutated valid queries and hostile
//! framing, each reply checked for well-formedness, then a valid query must
//! still get a correct answer.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::dns::{APEX, assert_header, decode_whole, tcp_ask, text, udp_ask_raw};
use crate::support::{
    Registration, TestServer, frame, ipv4s, query_message, query_tcp, query_udp, read_frame,
    tcp_exchange_on,
};

/// Ids at or above this are sentinels; fuzz packets get ids below it.
const SENTINEL_BASE: u16 = 0xF000;

/// A server with one instance of `web` at 10.0.0.1.
async fn fixture() -> TestServer {
    let server = TestServer::start().await;
    server
        .register(&Registration::new("w1", "web", "10.0.0.1", 80).ttl(300))
        .await;
    server
}

/// Asserts the server still answers `web.svc.local A` correctly over UDP
/// and TCP.
async fn assert_still_serving(server: SocketAddr) {
    let over_udp = query_udp(server, "web.svc.local.", RecordType::A, None).await;
    assert_header(&over_udp, ResponseCode::NoError, true);
    assert_eq!(ipv4s(&over_udp.answers), vec![Ipv4Addr::new(10, 0, 0, 1)]);
    let over_tcp = query_tcp(server, "web.svc.local.", RecordType::A, Some(1232)).await;
    assert_header(&over_tcp, ResponseCode::NoError, true);
    assert_eq!(ipv4s(&over_tcp.answers), vec![Ipv4Addr::new(10, 0, 0, 1)]);
}

/// Valid queries the mutations start from.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (qname, qtype) in [
        ("web.svc.local.", RecordType::A),
        ("web.svc.local.", RecordType::SRV),
        ("_web._tcp.svc.local.", RecordType::PTR),
        ("w1._web._tcp.svc.local.", RecordType::TXT),
        ("_services._dns-sd._udp.svc.local.", RecordType::PTR),
        ("svc.local.", RecordType::SOA),
        ("nothing.svc.local.", RecordType::AAAA),
        ("example.com.", RecordType::A),
    ] {
        for payload in [None, Some(1232)] {
            seeds.push(query_message(qname, qtype, payload).to_vec().unwrap());
        }
    }
    seeds
}

/// What a packet must get back, judged as the server's parser would.
enum Expect {
    /// Too short or QR=1: no reply at all.
    Drop,
    /// Unparseable body behind a usable header: FORMERR.
    FormErr,
    /// Parses: some answer; `limit` is the largest allowed UDP size and
    /// `query` the question to echo, when there is exactly one.
    Answer {
        limit: usize,
        op_code: OpCode,
        queries: usize,
    },
}

fn expect_for(packet: &[u8]) -> Expect {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return Expect::Drop;
    }
    match Message::from_vec(packet) {
        Err(_) => Expect::FormErr,
        Ok(request) => Expect::Answer {
            limit: request
                .edns
                .as_ref()
                .map_or(512, |edns| usize::from(edns.max_payload().clamp(512, 1232))),
            op_code: request.metadata.op_code,
            queries: request.queries.len(),
        },
    }
}

/// Checks one reply against what its request deserved.
fn check_reply(request: &[u8], reply: &[u8], udp: bool) {
    assert!(reply.len() >= 12, "reply shorter than a header: {reply:?}");
    assert_eq!(&reply[..2], &request[..2], "reply id is the request id");
    let response = decode_whole(reply);
    assert_eq!(response.metadata.message_type, MessageType::Response);
    assert!(!response.metadata.recursion_available);
    assert_eq!(
        response.metadata.recursion_desired,
        request[2] & 0x01 != 0,
        "RD copied"
    );
    match expect_for(request) {
        Expect::Drop => panic!("answered a packet that must be dropped: {request:?}"),
        Expect::FormErr => {
            assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
            assert!(response.queries.is_empty() && response.answers.is_empty());
            assert!(reply.len() <= 512);
        }
        Expect::Answer {
            limit,
            op_code,
            queries,
        } => {
            if udp {
                assert!(reply.len() <= limit, "{} > {limit} bytes", reply.len());
            }
            assert_eq!(response.metadata.op_code, op_code, "opcode echoed");
            let rcode = response.metadata.response_code;
            if op_code != OpCode::Query {
                assert_eq!(rcode, ResponseCode::NotImp);
            } else if queries != 1 {
                assert_eq!(rcode, ResponseCode::FormErr);
            }
            if queries >= 1 {
                let asked = Message::from_vec(request).unwrap().queries[0].clone();
                let echoed = response.queries.first().expect("question echoed");
                assert!(echoed.name().eq_case(asked.name()), "name echoed as asked");
                assert_eq!(echoed.query_type(), asked.query_type());
                assert_eq!(echoed.query_class(), asked.query_class());
            }
        }
    }
}

/// A UDP prober: sends a packet followed by a sentinel query and collects
/// replies by id. With several UDP workers a reply may overtake another, so
/// replies are matched by id (every fuzz packet gets a unique one) rather
/// than by order.
struct UdpProber {
    socket: UdpSocket,
    server: SocketAddr,
    /// Fuzz packets sent, by id.
    sent: HashMap<u16, Vec<u8>>,
    /// Replies received, by id.
    replies: HashMap<u16, Vec<u8>>,
    next_id: u16,
    next_sentinel: u16,
}

impl UdpProber {
    async fn new(server: SocketAddr) -> UdpProber {
        UdpProber {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            sent: HashMap::new(),
            replies: HashMap::new(),
            next_id: 1,
            next_sentinel: SENTINEL_BASE,
        }
    }

    /// Sends `packet` (its id overwritten with a fresh one when it has
    /// room for one), then a sentinel, and waits for the sentinel's answer.
    async fn probe(&mut self, mut packet: Vec<u8>) {
        if packet.len() >= 2 {
            assert!(self.next_id < SENTINEL_BASE, "too many probes");
            packet[..2].copy_from_slice(&self.next_id.to_be_bytes());
            self.sent.insert(self.next_id, packet.clone());
            self.next_id += 1;
        }
        self.socket.send_to(&packet, self.server).await.unwrap();
        self.sync().await;
    }

    /// Sends a sentinel query and reads replies until its answer arrives.
    async fn sync(&mut self) {
        let mut sentinel = query_message(APEX, RecordType::SOA, None);
        sentinel.metadata.id = self.next_sentinel;
        self.next_sentinel = self.next_sentinel.wrapping_add(1).max(SENTINEL_BASE);
        let bytes = sentinel.to_vec().unwrap();
        self.socket.send_to(&bytes, self.server).await.unwrap();
        let mut buffer = vec![0u8; 65535];
        loop {
            let (len, _) =
                tokio::time::timeout(Duration::from_secs(5), self.socket.recv_from(&mut buffer))
                    .await
                    .expect("server still answers (sentinel query timed out)")
                    .unwrap();
            let reply = buffer[..len].to_vec();
            assert!(len >= 2, "empty datagram from the server");
            let id = u16::from_be_bytes([reply[0], reply[1]]);
            if id == sentinel.metadata.id {
                let response = Message::from_vec(&reply).expect("sentinel reply parses");
                assert_header(&response, ResponseCode::NoError, true);
                assert_eq!(response.answers.len(), 1, "sentinel SOA");
                return;
            }
            if id >= SENTINEL_BASE {
                continue; // an earlier sentinel's answer, overtaken
            }
            let request = self
                .sent
                .get(&id)
                .unwrap_or_else(|| panic!("reply with unknown id {id}: {reply:?}"));
            check_reply(request, &reply, true);
            assert!(
                self.replies.insert(id, reply).is_none(),
                "two replies to one packet"
            );
        }
    }

    /// After a final sync and a grace period for overtaken replies, checks
    /// that exactly the packets that deserve an answer got one. Returns
    /// the number of FORMERR replies.
    async fn finish(&mut self) -> usize {
        self.sync().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.sync().await;
        let mut formerr = 0;
        for (id, packet) in &self.sent {
            match expect_for(packet) {
                Expect::Drop => assert!(
                    !self.replies.contains_key(id),
                    "answered a packet that must be dropped: {packet:?}"
                ),
                expect => {
                    assert!(
                        self.replies.contains_key(id),
                        "no reply to a packet with a usable header: {packet:?}"
                    );
                    if matches!(expect, Expect::FormErr) {
                        formerr += 1;
                    }
                }
            }
        }
        formerr
    }
}

/// Random bytes of random length in `0..max`.
fn random_packet(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    let len = rng.usize(0..max);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// One random mutation of a valid query.
fn mutate(rng: &mut fastrand::Rng, seed: &[u8]) -> Vec<u8> {
    let mut packet = seed.to_vec();
    let len = packet.len();
    match rng.u8(0..12) {
        // Bit flips anywhere.
        0 | 1 => {
            for _ in 0..rng.usize(1..=8) {
                let bit = rng.usize(0..len * 8);
                packet[bit / 8] ^= 1 << (bit % 8);
            }
        }
        // Truncation.
        2 => packet.truncate(rng.usize(0..len)),
        // Random count fields.
        3 => {
            for field in 0..4 {
                if rng.bool() {
                    let value = if rng.bool() {
                        rng.u16(0..4)
                    } else {
                        rng.u16(..)
                    };
                    packet[4 + 2 * field..6 + 2 * field].copy_from_slice(&value.to_be_bytes());
                }
            }
        }
        // Compression pointer loops: to itself, a two-pointer cycle, or a
        // pointer past the end.
        4 => {
            packet.truncate(12);
            match rng.u8(0..3) {
                0 => packet.extend_from_slice(&[0xC0, 12]),
                1 => packet.extend_from_slice(&[3, b'w', b'e', b'b', 0xC0, 18, 0xC0, 12]),
                _ => packet.extend_from_slice(&[0xC0, 0xFF]),
            }
            packet.extend_from_slice(&[0, 1, 0, 1]);
        }
        // Oversized or reserved label lengths (64..=191).
        5 => packet[12] = rng.u8(64..192),
        // A header with QR=1: a response, never answered.
        6 => packet[2] |= 0x80,
        // Random bytes overwritten, inserted or removed.
        7 => {
            for _ in 0..rng.usize(1..=4) {
                let at = rng.usize(0..packet.len().max(1));
                match rng.u8(0..3) {
                    0 if at < packet.len() => packet[at] = rng.u8(..),
                    1 => packet.insert(at.min(packet.len()), rng.u8(..)),
                    _ if at < packet.len() => {
                        packet.remove(at);
                    }
                    _ => {}
                }
            }
        }
        // Trailing garbage.
        8 => packet.extend((0..rng.usize(1..64)).map(|_| rng.u8(..))),
        // A second OPT record (RFC 6891 §6.1.1: FORMERR).
        9 => {
            packet.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
            let arcount = u16::from_be_bytes([packet[10], packet[11]]) + 1;
            packet[10..12].copy_from_slice(&arcount.to_be_bytes());
        }
        // Random opcode.
        10 => packet[2] = (packet[2] & !0x78) | (rng.u8(0..16) << 3),
        // A name longer than 255 bytes.
        _ => {
            packet.truncate(12);
            packet[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
            for _ in 0..rng.usize(5..8) {
                packet.push(63);
                packet.extend(std::iter::repeat_n(b'a', 63));
            }
            packet.extend_from_slice(&[3, b's', b'v', b'c', 5, b'l', b'o', b'c', b'a', b'l', 0]);
            packet.extend_from_slice(&[0, 1, 0, 1]);
        }
    }
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_random_and_mutated_packets() {
    let server = fixture().await;
    let mut rng = fastrand::Rng::with_seed(0x5161_9057);

    // A blind burst first, without waiting for replies.
    let blaster = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..2000 {
        let packet = random_packet(&mut rng, 600);
        blaster.send_to(&packet, server.dns).await.unwrap();
    }
    // The kernel may have dropped part of the burst, and may drop a query
    // sent while the server's receive buffer is still full: wait until one
    // is answered, then check the answers.
    let dns = server.dns;
    let drained = crate::support::eventually(Duration::from_secs(10), move || async move {
        let request = query_message("web.svc.local.", RecordType::A, None);
        crate::support::udp_exchange(dns, &request.to_vec().unwrap())
            .await
            .is_some()
    })
    .await;
    assert!(drained, "the server answers again after the burst");
    assert_still_serving(server.dns).await;

    // Then each packet probed and its reply (or silence) checked.
    let mut prober = UdpProber::new(server.dns).await;
    for _ in 0..2000 {
        prober.probe(random_packet(&mut rng, 600)).await;
    }
    let seeds = seeds();
    for _ in 0..2000 {
        let seed = &seeds[rng.usize(0..seeds.len())];
        prober.probe(mutate(&mut rng, seed)).await;
    }
    let formerr = prober.finish().await;
    assert!(
        formerr > 100,
        "the fuzzing reached the parser ({formerr} FORMERR)"
    );
    let answered = prober.replies.len();
    assert!(
        answered > formerr,
        "some mutants still parsed and were answered"
    );

    assert_still_serving(server.dns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_packets_and_responses_are_dropped() {
    let server = fixture().await;
    let mut prober = UdpProber::new(server.dns).await;
    let valid = query_message("web.svc.local.", RecordType::A, None)
        .to_vec()
        .unwrap();
    for len in 0..12 {
        prober.probe(valid[..len].to_vec()).await;
    }
    // The same query, flagged as a response: must never be answered (no
    // reflection loops between two servers).
    let mut response = valid.clone();
    response[2] |= 0x80;
    prober.probe(response.clone()).await;
    // A well-formed full response message, too.
    let reply = query_udp(server.dns, "web.svc.local.", RecordType::A, None).await;
    prober.probe(reply.to_vec().unwrap()).await;
    assert_eq!(prober.finish().await, 0);
    assert!(prober.replies.is_empty(), "{:?}", prober.replies);

    // Over TCP too: nothing comes back, and the connection keeps working.
    let mut stream = TcpStream::connect(server.dns).await.unwrap();
    let mut framed = Vec::new();
    for packet in [&valid[..5], &valid[..11], &response[..]] {
        framed.extend(frame(packet));
    }
    stream.write_all(&framed).await.unwrap();
    let mut request = query_message("web.svc.local.", RecordType::A, None);
    request.metadata.id = 0xBEEF;
    let reply = tcp_exchange_on(&mut stream, &request.to_vec().unwrap())
        .await
        .expect("answered after dropped frames");
    assert_eq!(
        &reply[..2],
        &[0xBE, 0xEF],
        "the first reply is the valid query's"
    );
}

/// Hand-made malformed packets behind a valid header, each with its id.
fn malformed_packets() -> Vec<(&'static str, Vec<u8>)> {
    // id, flags (RD), QDCOUNT 1, others 0
    let header = |id: u16, qd: u16, ar: u16| {
        let mut h = id.to_be_bytes().to_vec();
        h.extend_from_slice(&[0x01, 0x00]);
        h.extend_from_slice(&qd.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h.extend_from_slice(&ar.to_be_bytes());
        h
    };
    let with = |mut h: Vec<u8>, body: &[u8]| {
        h.extend_from_slice(body);
        h
    };
    let long_name = {
        let mut body = Vec::new();
        for _ in 0..5 {
            body.push(63);
            body.extend(std::iter::repeat_n(b'a', 63));
        }
        body.extend_from_slice(&[0, 0, 1, 0, 1]);
        body
    };
    vec![
        ("header only, QDCOUNT 1", header(0x1001, 1, 0)),
        (
            "pointer to itself",
            with(header(0x1002, 1, 0), &[0xC0, 12, 0, 1, 0, 1]),
        ),
        (
            "two-pointer cycle",
            with(
                header(0x1003, 1, 0),
                &[3, b'w', b'e', b'b', 0xC0, 18, 0xC0, 12, 0, 1, 0, 1],
            ),
        ),
        (
            "pointer past the end",
            with(header(0x1004, 1, 0), &[0xC0, 0xFF, 0, 1, 0, 1]),
        ),
        (
            "reserved label type 0x40",
            with(header(0x1005, 1, 0), &[0x40, b'a', 0, 0, 1, 0, 1]),
        ),
        (
            "label longer than the packet",
            with(header(0x1006, 1, 0), &[63, b'a', b'b']),
        ),
        (
            "question cut after the name",
            with(header(0x1007, 1, 0), &[3, b'w', b'e', b'b', 0, 0]),
        ),
        (
            "name over 255 bytes",
            with(header(0x1008, 1, 0), &long_name),
        ),
        (
            "ARCOUNT 1, no record",
            with(
                header(0x1009, 1, 1),
                &[
                    3, b'w', b'e', b'b', 3, b's', b'v', b'c', 5, b'l', b'o', b'c', b'a', b'l', 0,
                    0, 1, 0, 1,
                ],
            ),
        ),
        (
            "two OPT records",
            with(
                header(0x100A, 1, 2),
                &[
                    3, b'w', b'e', b'b', 3, b's', b'v', b'c', 5, b'l', b'o', b'c', b'a', b'l', 0,
                    0, 1, 0, 1, // question
                    0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0, // OPT
                    0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0, // OPT again
                ],
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_with_a_valid_header_get_formerr() {
    let server = fixture().await;
    for (what, packet) in malformed_packets() {
        assert!(
            Message::from_vec(&packet).is_err(),
            "{what}: the test packet itself should not parse"
        );
        let (reply, response) = udp_ask_raw(server.dns, &packet).await;
        check_reply(&packet, &reply, true);
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::FormErr,
            "{what}"
        );
        assert_eq!(&reply[..2], &packet[..2], "{what}: same id");
        assert!(response.metadata.recursion_desired, "{what}: RD copied");
        assert!(!response.metadata.authoritative, "{what}: not AA");
        assert!(response.edns.is_none(), "{what}");
        assert!(response.queries.is_empty(), "{what}: no question");

        let mut stream = TcpStream::connect(server.dns).await.unwrap();
        let reply = tcp_exchange_on(&mut stream, &packet)
            .await
            .unwrap_or_else(|e| panic!("{what}: no TCP reply: {e}"));
        check_reply(&packet, &reply, false);
        assert_eq!(
            Message::from_vec(&reply).unwrap().metadata.response_code,
            ResponseCode::FormErr,
            "{what} over TCP"
        );
    }
    assert_still_serving(server.dns).await;
}

/// The TCP counterpart of the UDP prober: one connection, in-order replies.
/// Sends `packet` (its id overwritten with `id`, below the sentinel range)
/// followed by a sentinel; whatever arrives before the sentinel's reply is
/// the packet's.
async fn tcp_probe(stream: &mut TcpStream, packet: &mut [u8], id: u16) -> Option<Vec<u8>> {
    assert!(id < SENTINEL_BASE);
    if packet.len() >= 2 {
        packet[..2].copy_from_slice(&id.to_be_bytes());
    }
    let mut sentinel = query_message(APEX, RecordType::SOA, None);
    sentinel.metadata.id = SENTINEL_BASE;
    let mut bytes = frame(packet);
    bytes.extend(frame(&sentinel.to_vec().unwrap()));
    stream.write_all(&bytes).await.expect("connection open");
    let mut reply = None;
    loop {
        let frame = read_frame(stream)
            .await
            .expect("server still answers on the connection");
        assert!(frame.len() >= 2, "empty frame from the server");
        if frame[..2] == SENTINEL_BASE.to_be_bytes() {
            let response = Message::from_vec(&frame).expect("sentinel reply parses");
            assert_header(&response, ResponseCode::NoError, true);
            return reply;
        }
        assert!(reply.is_none(), "two replies to one frame: {packet:?}");
        reply = Some(frame);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_garbage_frames_and_hostile_connections() {
    let server = fixture().await;
    let mut rng = fastrand::Rng::with_seed(0x7C9_F022);
    let seeds = seeds();

    // Garbage and mutated frames on one connection, each reply checked.
    let mut stream = TcpStream::connect(server.dns).await.unwrap();
    let mut formerr = 0;
    for round in 0..1500u32 {
        let packet = if round % 2 == 0 {
            random_packet(&mut rng, 600)
        } else {
            let seed = rng.usize(0..seeds.len());
            mutate(&mut rng, &seeds[seed])
        };
        let mut packet = packet;
        let reply = tcp_probe(&mut stream, &mut packet, round as u16 + 1).await;
        match (expect_for(&packet), reply) {
            (Expect::Drop, None) => {}
            (Expect::Drop, Some(reply)) => {
                panic!("answered a frame that must be dropped: {packet:?} -> {reply:?}")
            }
            (_, None) => panic!("no reply to a frame with a usable header: {packet:?}"),
            (expect, Some(reply)) => {
                check_reply(&packet, &reply, false);
                if matches!(expect, Expect::FormErr) {
                    formerr += 1;
                }
            }
        }
    }
    assert!(formerr > 100, "the fuzzing reached the parser ({formerr})");

    // A zero-length frame is dropped; the connection keeps working.
    assert!(tcp_probe(&mut stream, &mut [], 1).await.is_none());
    drop(stream);

    // A length prefix larger than the data, then close.
    for declared in [100u16, 512, 65535] {
        let mut stream = TcpStream::connect(server.dns).await.unwrap();
        let mut bytes = declared.to_be_bytes().to_vec();
        bytes.extend_from_slice(
            &query_message("web.svc.local.", RecordType::A, None)
                .to_vec()
                .unwrap(),
        );
        stream.write_all(&bytes).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("server closes a half-sent frame at EOF");
        assert!(read.is_ok());
        assert!(rest.is_empty(), "nothing answered for an incomplete frame");
    }

    // Unframed garbage, then close.
    for _ in 0..20 {
        let mut stream = TcpStream::connect(server.dns).await.unwrap();
        let garbage = random_packet(&mut rng, 600);
        let _ = stream.write_all(&garbage).await;
        drop(stream);
    }

    // Many connections opened and dropped, some mid-frame.
    let mut streams = Vec::new();
    for i in 0..200 {
        let mut stream = TcpStream::connect(server.dns).await.unwrap();
        if i % 3 == 1 {
            stream.write_all(&[0]).await.unwrap();
        } else if i % 3 == 2 {
            stream.write_all(&[0, 30, 1, 2, 3, 4]).await.unwrap();
        }
        streams.push(stream);
    }
    drop(streams);

    // A fresh connection (and UDP) still get correct answers, once the
    // server has seen those 200 close (until then they count against this
    // source's connections).
    let dns = server.dns;
    let freed = crate::support::eventually(Duration::from_secs(5), move || async move {
        let probe = query_message("web.svc.local.", RecordType::A, None);
        crate::support::tcp_exchange(dns, &probe.to_vec().unwrap())
            .await
            .is_ok()
    })
    .await;
    assert!(freed, "the closed connections no longer count");
    let fresh = query_message("web.svc.local.", RecordType::A, None);
    let (_, response) = tcp_ask(server.dns, &fresh).await;
    assert_header(&response, ResponseCode::NoError, true);
    assert_eq!(ipv4s(&response.answers), vec![Ipv4Addr::new(10, 0, 0, 1)]);
    assert_still_serving(server.dns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connection_limit_closes_extra_connections_and_recovers() {
    let server = TestServer::start_with(|config| config.dns.max_tcp_connections = 4).await;
    server
        .register(&Registration::new("w1", "web", "10.0.0.1", 80).ttl(300))
        .await;

    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(server.dns).await.unwrap();
        // Make sure each holds a slot before opening the next.
        let request = query_message("web.svc.local.", RecordType::A, None);
        tcp_exchange_on(&mut stream, &request.to_vec().unwrap())
            .await
            .expect("within the limit");
        held.push(stream);
    }
    let mut extra = TcpStream::connect(server.dns).await.unwrap();
    let request = query_message("web.svc.local.", RecordType::A, None);
    let _ = extra.write_all(&frame(&request.to_vec().unwrap())).await;
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buffer))
        .await
        .expect("the extra connection is closed at once");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the extra connection got data: {read:?}"
    );
    // UDP is unaffected by the TCP limit.
    let response = query_udp(server.dns, "web.svc.local.", RecordType::A, None).await;
    assert_eq!(ipv4s(&response.answers), vec![Ipv4Addr::new(10, 0, 0, 1)]);

    drop(held);
    let dns = server.dns;
    let recovered = crate::support::eventually(Duration::from_secs(5), move || async move {
        let request = query_message("web.svc.local.", RecordType::A, None);
        crate::support::tcp_exchange(dns, &request.to_vec().unwrap())
            .await
            .is_ok()
    })
    .await;
    assert!(recovered, "slots freed when connections close");
}

/// `<4 labels of 60 bytes>.svc.local.`: 4 * 61 + 11 = 255 bytes on the wire.
fn max_length_query(id: u16, edns: bool) -> Vec<u8> {
    let mut packet = id.to_be_bytes().to_vec();
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    let start = packet.len();
    for label in 0..4u8 {
        packet.push(60);
        packet.extend((0..60).map(|i| if i % 2 == 0 { b'a' + label } else { b'Z' }));
    }
    packet.extend_from_slice(&[3, b's', b'v', b'c', 5, b'l', b'o', b'c', b'a', b'l', 0]);
    assert_eq!(packet.len() - start, 255, "maximum name length");
    packet.extend_from_slice(&[0, 1, 0, 1]);
    if edns {
        packet.extend_from_slice(&[0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]);
    }
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maximum_length_name_is_nxdomain() {
    let server = fixture().await;
    for edns in [false, true] {
        let packet = max_length_query(0x2550 + u16::from(edns), edns);
        let (reply, response) = udp_ask_raw(server.dns, &packet).await;
        check_reply(&packet, &reply, true);
        assert_header(&response, ResponseCode::NXDomain, true);
        assert!(!response.metadata.truncation);
        assert_eq!(
            &reply[12..12 + 259],
            &packet[12..12 + 259],
            "question echoed byte for byte"
        );
        assert!(response.answers.is_empty());
        assert_eq!(response.authorities.len(), 1);
        let soa = &response.authorities[0];
        assert!(matches!(soa.data, RData::SOA(_)), "SOA in authority");
        assert_eq!(text(&soa.name), APEX);
        assert_eq!(soa.ttl, 5);
        assert_eq!(response.edns.is_some(), edns);
        assert!(reply.len() <= 512);

        let mut stream = TcpStream::connect(server.dns).await.unwrap();
        let reply = tcp_exchange_on(&mut stream, &packet).await.unwrap();
        check_reply(&packet, &reply, false);
        let response = Message::from_vec(&reply).unwrap();
        assert_header(&response, ResponseCode::NXDomain, true);
        assert_eq!(response.authorities.len(), 1);
    }
    assert_still_serving(server.dns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_payload_sizes_never_exceed_the_limit() {
    let server = fixture().await;
    crate::support::register_many(&server, "big", 100).await;
    let mut rng = fastrand::Rng::with_seed(0x00ED_0512);
    for round in 0..150 {
        let payload = match round % 3 {
            0 => rng.u16(..),
            1 => rng.u16(400..1400),
            _ => rng.u16(..600),
        };
        let (qname, qtype) = [
            ("big.svc.local.", RecordType::A),
            ("big.svc.local.", RecordType::SRV),
            ("_big._tcp.svc.local.", RecordType::PTR),
            ("_big._tcp.svc.local.", RecordType::SRV),
        ][round % 4];
        // Build with a valid size, then write the real one (hickory's
        // builder would raise anything under 512).
        let mut packet = query_message(qname, qtype, Some(4096)).to_vec().unwrap();
        crate::dns::patch_payload(&mut packet, payload);
        let (reply, response) = udp_ask_raw(server.dns, &packet).await;
        check_reply(&packet, &reply, true);
        let limit = usize::from(payload.clamp(512, 1232));
        assert!(reply.len() <= limit, "{} > {limit}", reply.len());
        assert_header(&response, ResponseCode::NoError, true);
        assert!(response.metadata.truncation, "100 records never fit");
        assert!(!response.answers.is_empty());
        assert!(response.edns.is_some());
    }
}
