//! Limits that keep one client from taking everything (README "Security"):
//! UDP response rate limiting with slip, TCP connections per source, idle
//! time that empty messages do not reset, and the queries and lifetime of
//! one connection; and FORMERR for what is no question.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::support::{Registration, TestServer, frame, query_message, tcp_exchange_on};

async fn with_web(server: &TestServer) {
    server
        .register(&Registration::new("w1", "web", "10.0.0.1", 80).ttl(300))
        .await;
}

/// Sends `count` queries for `web` A from `from` as fast as it can and
/// collects what comes back within a moment: (full answers, TC replies).
async fn flood(server: SocketAddr, from: &str, count: u16) -> (usize, usize) {
    let socket = UdpSocket::bind(format!("{from}:0")).await.unwrap();
    for id in 0..count {
        let mut query = query_message("web.svc.local.", RecordType::A, None);
        query.metadata.id = id;
        socket
            .send_to(&query.to_vec().unwrap(), server)
            .await
            .unwrap();
    }
    let (mut full, mut slipped) = (0, 0);
    let mut buffer = vec![0u8; 2048];
    while let Ok(Ok((len, _))) =
        tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buffer)).await
    {
        let reply = Message::from_vec(&buffer[..len]).expect("replies parse");
        if reply.metadata.truncation {
            assert!(reply.answers.is_empty(), "a slip carries no records");
            assert_eq!(reply.queries.len(), 1, "it echoes the question");
            slipped += 1;
        } else {
            assert_eq!(reply.answers.len(), 1);
            full += 1;
        }
    }
    (full, slipped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_flood_from_one_prefix_is_limited_and_slips_to_tcp() {
    let server = TestServer::start_with(|config| {
        config.dns.rate_limit.responses_per_second = 20;
        config.dns.rate_limit.slip = 2;
    })
    .await;
    with_web(&server).await;
    let started = Instant::now();
    let (full, slipped) = flood(server.dns, "127.0.0.1", 400).await;
    // Within one second a prefix gets its 20; the flood may straddle two.
    let seconds = started.elapsed().as_secs() as usize + 1;
    assert!(
        full >= 20 && full <= 20 * (seconds + 1),
        "{full} full answers"
    );
    // Half of the limited ones go out as TC, the rest are dropped. Counted
    // by the server: on a loaded machine the kernel may drop datagrams of
    // a 400-packet burst on either side, which is no verdict on the limit.
    assert!(slipped >= 1, "a limited client is told to use TCP");
    assert!(full + slipped < 400, "some were dropped");
    let dropped = server
        .metric("signpost_dns_rate_limited_total{action=\"dropped\"}")
        .await
        .unwrap_or(0.0);
    let slips = server
        .metric("signpost_dns_rate_limited_total{action=\"slipped\"}")
        .await
        .unwrap_or(0.0);
    assert!(
        dropped >= 1.0 && slips >= slipped as f64,
        "{dropped} dropped, {slips} slipped"
    );
    // Every second limited query slips: within one per second counted.
    assert!(
        (dropped - slips).abs() <= (seconds + 1) as f64,
        "{dropped} dropped, {slips} slipped over {seconds} s"
    );
    // Over TCP the same client is answered: its source cannot be forged.
    let mut stream = TcpStream::connect(server.dns).await.unwrap();
    let query = query_message("web.svc.local.", RecordType::A, None);
    let reply = tcp_exchange_on(&mut stream, &query.to_vec().unwrap())
        .await
        .unwrap();
    assert_eq!(Message::from_vec(&reply).unwrap().answers.len(), 1);
    // Another prefix is not limited by this one's flood.
    let (other, _) = flood(server.dns, "127.0.1.1", 10).await;
    assert_eq!(other, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiting_is_off_by_default() {
    let server = TestServer::start().await;
    with_web(&server).await;
    // 200 queries one after the other, far more than 20 a second: every one
    // is answered in full.
    let started = Instant::now();
    for _ in 0..200 {
        let reply =
            crate::support::query_udp(server.dns, "web.svc.local.", RecordType::A, None).await;
        assert!(!reply.metadata.truncation);
        assert_eq!(reply.answers.len(), 1);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn connect_from(server: SocketAddr, from: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.into(), 0)).unwrap();
    socket.connect(server).await.unwrap()
}

/// Whether `stream` is closed by the server within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 512];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_hold_every_tcp_slot() {
    let server = TestServer::start_with(|config| {
        config.dns.tcp_max_connections_per_source = 3;
    })
    .await;
    with_web(&server).await;
    let here = Ipv4Addr::new(127, 0, 0, 1);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from(server.dns, here).await;
        let query = query_message("web.svc.local.", RecordType::A, None);
        tcp_exchange_on(&mut stream, &query.to_vec().unwrap())
            .await
            .expect("within the limit");
        held.push(stream);
    }
    let mut extra = connect_from(server.dns, here).await;
    let query = query_message("web.svc.local.", RecordType::A, None);
    let _ = extra.write_all(&frame(&query.to_vec().unwrap())).await;
    assert!(closed_within(&mut extra, Duration::from_secs(5)).await);
    // Another client still gets a slot.
    let mut other = connect_from(server.dns, Ipv4Addr::new(127, 0, 0, 2)).await;
    let reply = tcp_exchange_on(&mut other, &query.to_vec().unwrap()).await;
    assert!(reply.is_ok(), "another source is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_messages_do_not_keep_a_connection_alive() {
    let server = TestServer::start_with(|config| config.dns.tcp_idle_timeout = 1).await;
    let mut stream = TcpStream::connect(server.dns).await.unwrap();
    let started = Instant::now();
    // Two bytes (an empty message) every 300 ms, for longer than the idle
    // time: the connection is closed regardless.
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(4) {
        if stream.write_all(&[0, 0]).await.is_err() {
            closed = true;
            break;
        }
        if closed_within(&mut stream, Duration::from_millis(300)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "closed");
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_millis(900),
        "not before its idle time: {lived:?}"
    );
    assert!(lived < Duration::from_secs(3), "closed after {lived:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_after_its_last_query() {
    let server = TestServer::start_with(|config| config.dns.tcp_max_queries = 5).await;
    with_web(&server).await;
    let mut stream = TcpStream::connect(server.dns).await.unwrap();
    // Seven pipelined queries: five answers, then the connection closes.
    let mut pipelined = Vec::new();
    for id in 0..7u16 {
        let mut query = query_message("web.svc.local.", RecordType::A, None);
        query.metadata.id = id;
        pipelined.extend(frame(&query.to_vec().unwrap()));
    }
    stream.write_all(&pipelined).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("closed")
        .expect("read");
    let mut answers = 0;
    let mut at = 0;
    while at + 2 <= rest.len() {
        let len = usize::from(u16::from_be_bytes([rest[at], rest[at + 1]]));
        Message::from_vec(&rest[at + 2..at + 2 + len]).expect("a whole answer");
        at += 2 + len;
        answers += 1;
    }
    assert_eq!(answers, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_bytes_and_meta_types_are_formerr() {
    let server = TestServer::start().await;
    with_web(&server).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ask = |packet: Vec<u8>| {
        let socket = &socket;
        async move {
            socket.send_to(&packet, server.dns).await.unwrap();
            let mut buffer = vec![0u8; 2048];
            let (len, _) =
                tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buffer))
                    .await
                    .expect("answered")
                    .unwrap();
            Message::from_vec(&buffer[..len]).unwrap()
        }
    };
    let mut trailing = query_message("web.svc.local.", RecordType::A, Some(1232))
        .to_vec()
        .unwrap();
    trailing.extend_from_slice(&[0, 0, 0]);
    let reply = ask(trailing).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    assert!(reply.answers.is_empty());
    for qtype in [RecordType::OPT, RecordType::TSIG, RecordType::Unknown(249)] {
        let query = query_message("web.svc.local.", qtype, Some(1232));
        let reply = ask(query.to_vec().unwrap()).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::FormErr,
            "{qtype}"
        );
    }
    // A plain query still works.
    let plain = query_message("web.svc.local.", RecordType::A, None);
    assert_eq!(ask(plain.to_vec().unwrap()).await.answers.len(), 1);
}
