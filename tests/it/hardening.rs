//! Clients that misbehave at the connection level must not hold the admin
//! API hostage.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_client_that_never_finishes_its_headers_is_disconnected() {
    let server = TestServer::start().await;
    let mut slow = TcpStream::connect(server.admin).await.unwrap();
    slow.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();

    // Meanwhile everyone else is served.
    let (status, body) = server.get("/v1/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    // The server gives up on the slow client after its header deadline (10 s).
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read(&mut buffer))
        .await
        .expect("server closes the connection within 20 s");
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
        waited >= Duration::from_secs(5),
        "not cut off early: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_client_that_trickles_its_body_gets_408() {
    let server = TestServer::start().await;
    let mut slow = TcpStream::connect(server.admin).await.unwrap();
    slow.write_all(
        b"POST /v1/services HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    // Meanwhile a registration from someone else goes through.
    server.register_ok("fast", "web", "10.0.0.1", 80, 30).await;

    // A byte now and then, never the whole body.
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if slow.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(12), trickle).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("did not arrive"), "{reply}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "not cut off early"
    );
    let (_, listed) = server.get("/v1/services").await;
    assert_eq!(
        listed["services"].as_array().unwrap().len(),
        1,
        "nothing half-registered"
    );
}
