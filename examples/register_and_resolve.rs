//! A service's side of signpost, end to end: register over HTTP, heartbeat,
//! resolve yourself over DNS, deregister on Ctrl-C.
//!
//! Start a server first (`cargo run --release`), then:
//!
//! ```sh
//! cargo run --example register_and_resolve
//! # or against other addresses:
//! cargo run --example register_and_resolve -- http://127.0.0.1:8700 127.0.0.1:8600
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::{Value, json};
use tokio::net::UdpSocket;

const TTL: u64 = 10;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let admin = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8700".into());
    let dns: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8600".into())
        .parse()?;
    let http = reqwest::Client::new();

    // 1. Register. The reply carries the id used for heartbeats.
    let registration = json!({
        "name": "example-1", "type": "example", "host": "127.0.0.1", "port": 8080,
        "tags": ["demo"], "metadata": {"version": "1.0.0"}, "ttl": TTL,
    });
    let response = http
        .post(format!("{admin}/v1/services"))
        .json(&registration)
        .send()
        .await?;
    let status = response.status();
    let service: Value = response.json().await?;
    if !status.is_success() {
        return Err(format!("registration refused: {status} {service}").into());
    }
    let id = service["id"].as_str().ok_or("no id in reply")?.to_string();
    println!("registered example-1 as {id} (ttl {TTL} s)");

    // 2. Resolve it the way any program would: SRV, then the target's A.
    for (name, qtype) in [
        ("example.svc.local.", RecordType::SRV),
        ("example-1.example.svc.local.", RecordType::A),
        ("example-1.example.svc.local.", RecordType::TXT),
    ] {
        for record in resolve(dns, name, qtype).await? {
            println!("  {name} {qtype} -> {record}");
        }
    }

    // 3. Heartbeat at a third of the TTL until Ctrl-C, then deregister.
    let mut beat = tokio::time::interval(Duration::from_secs(TTL / 3));
    println!(
        "heartbeating every {} s; Ctrl-C to deregister and quit",
        TTL / 3
    );
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = beat.tick() => {
                let url = format!("{admin}/v1/services/{id}/heartbeat");
                let status = http.put(url).send().await?.status();
                if status.as_u16() == 404 {
                    return Err("registration expired: register again".into());
                }
                println!("heartbeat: {status}");
            }
        }
    }
    let status = http
        .delete(format!("{admin}/v1/services/{id}"))
        .send()
        .await?
        .status();
    println!("deregistered: {status}");
    Ok(())
}

/// One DNS query over UDP; returns the answer records' data.
async fn resolve(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
) -> Result<Vec<RData>, Box<dyn std::error::Error>> {
    let mut request = Message::new(fastrand::u16(..), MessageType::Query, OpCode::Query);
    request.add_query(Query::query(Name::from_ascii(name)?, qtype));
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(&request.to_vec()?, server).await?;
    let mut buffer = vec![0u8; 4096];
    let (len, _) =
        tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buffer)).await??;
    let response = Message::from_vec(&buffer[..len])?;
    Ok(response.answers.iter().map(|r| r.data.clone()).collect())
}
