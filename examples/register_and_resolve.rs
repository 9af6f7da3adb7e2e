//! A service's side of signpost, end to end, with `signpost::client`:
//! register (kept alive in the background), resolve yourself over DNS,
//! find yourself over the API, watch events, deregister on Ctrl-C.
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
use signpost::client::{Client, Event, NewService};
use tokio::net::UdpSocket;

const TTL: u32 = 10;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    // The address from the first argument, else SIGNPOST_ADDR (default
    // http://127.0.0.1:8700); the token from SIGNPOST_ADMIN_TOKEN.
    let client = match args.next() {
        Some(address) => Client::new(&address)?,
        None => Client::from_env()?,
    };
    let dns: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8600".into())
        .parse()?;

    // 1. Register. From here on the registration heartbeats every TTL/3 by
    //    itself, and registers again if the registry forgets it.
    let service = NewService::new("example-1", "example", "127.0.0.1", 8080)
        .tag("demo")
        .meta("version", "1.0.0")
        .ttl(TTL);
    let registration = client.register(service).await?;
    let id = registration.id().expect("registered");
    println!("registered example-1 as {id} (ttl {TTL} s, kept alive in the background)");

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
    // ... or ask the API for one serving instance.
    let found = client.discover("example", Some("demo")).await?;
    println!(
        "  discover example --tag demo -> {}:{}",
        found.host, found.port
    );

    // 3. Watch this type's events until Ctrl-C, then deregister.
    let mut events = client.events(Some("example")).await?;
    println!("watching events of type example; Ctrl-C to deregister and quit");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            event = events.next() => match event? {
                Event::Change(change) => println!(
                    "  event {} {}",
                    change.kind.as_str(),
                    change.service.map(|s| format!("{} {}", s.name, s.health)).unwrap_or_default()
                ),
                Event::Resync(resync) => println!(
                    "  missed events; {} live instances now",
                    resync.services.map_or(0, |s| s.len())
                ),
                _ => {}
            },
        }
    }
    registration.close().await?;
    println!("deregistered");
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
