//! Clients that misbehave at the connection level must not hold the admin
//! API hostage. The limits are settings (`[admin]`), set short here so the
//! tests wait seconds, not the default 10 s.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Registration, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_client_that_never_finishes_its_headers_is_disconnected() {
    let server = TestServer::start_with(|c| c.admin.header_read_timeout = 1).await;
    let mut slow = TcpStream::connect(server.admin).await.unwrap();
    slow.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();

    // Meanwhile everyone else is served.
    let (status, body) = server.get("/v1/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    // The server gives up on the slow client after its header deadline
    // (admin.header_read_timeout, 1 s).
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buffer))
        .await
        .expect("server closes the connection within 5 s");
    let waited = started.elapsed();
    // Either a clean close or a 408 response, then close.
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => assert!(
            String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 408"),
            "unexpected reply: {}",
            String::from_utf8_lossy(&buffer[..n])
        ),
    }
    assert!(
        waited >= Duration::from_millis(800),
        "not cut off early: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_client_that_trickles_its_body_gets_408() {
    let server = TestServer::start_with(|c| c.admin.body_read_timeout = 1).await;
    let mut slow = TcpStream::connect(server.admin).await.unwrap();
    slow.write_all(
        b"POST /v1/services HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    // Meanwhile a registration from someone else goes through.
    server
        .register(&Registration::new("fast", "web", "10.0.0.1", 80).ttl(30))
        .await;

    // A byte now and then, never the whole body, until the server answers.
    let (mut reader, mut writer) = slow.split();
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let mut reply = Vec::new();
    tokio::select! {
        _ = trickle => {}
        _ = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut reply)) => {}
    }
    let waited = started.elapsed();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("did not arrive within 1 second"), "{reply}");
    assert!(
        waited >= Duration::from_millis(800),
        "not cut off early: {waited:?}"
    );
    let (_, listed) = server.get("/v1/services").await;
    assert_eq!(
        listed["services"].as_array().unwrap().len(),
        1,
        "nothing half-registered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_connections_beyond_the_limit_are_closed_at_once() {
    let server = TestServer::start_with(|c| c.admin.max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.admin).await.unwrap();
        // A request answered proves the connection holds a slot.
        stream
            .write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 1024];
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }

    // A third is closed without an answer.
    let mut third = TcpStream::connect(server.admin).await.unwrap();
    let _ = third
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buffer))
        .await
        .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // Once one of the two leaves, a new client is served again.
    held.pop();
    let served = crate::support::eventually(Duration::from_secs(5), || async {
        let Ok(mut stream) = TcpStream::connect(server.admin).await else {
            return false;
        };
        let request = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        if stream.write_all(request).await.is_err() {
            return false;
        }
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply).await;
        reply.starts_with(b"HTTP/1.1 200")
    })
    .await;
    assert!(served, "a freed slot is used again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_request_in_flight_only_as_long_as_the_drain_timeout() {
    let server = TestServer::start_with(|c| {
        c.admin.body_read_timeout = 60;
        c.admin.drain_timeout = 1;
        c.server.shutdown_grace = 2;
    })
    .await;
    // A registration whose body never completes: in flight until its
    // body deadline, a minute from now.
    let mut slow = TcpStream::connect(server.admin).await.unwrap();
    slow.write_all(
        b"POST /v1/services HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":",
    )
    .await
    .unwrap();
    server
        .register(&Registration::new("fast", "web", "10.0.0.1", 80).ttl(30))
        .await;

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), server.stop())
        .await
        .expect("stops within 5 s, not after the request's minute");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "the request in flight was given its drain time: {waited:?}"
    );
    // Its connection is closed, unanswered.
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), slow.read_to_end(&mut reply))
        .await
        .expect("connection closed");
    assert!(read.is_err() || reply.is_empty(), "{read:?} {reply:?}");
}
