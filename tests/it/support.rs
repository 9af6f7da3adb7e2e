//! Shared helpers: an in-process server on port 0, an HTTP client, and a
//! minimal DNS client over raw UDP/TCP sockets (no resolver, no retries, no
//! TC fallback, so tests see exactly what the server sent).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::{Value, json};
use signpost::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A running signpost, stopped when dropped.
pub struct TestServer {
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Default settings, every socket on 127.0.0.1 port 0.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Like [`TestServer::start`], after `configure` adjusts the settings.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::default();
        config.store.url = "memory".into();
        config.dns.listen = "127.0.0.1:0".parse().unwrap();
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        configure(&mut config);
        let server = Server::bind(config).await.expect("server binds");
        let (dns, admin) = (server.dns_addr(), server.admin_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            dns,
            admin,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and waits until it has finished.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("server stops within 15 s")
                .expect("server task did not panic");
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// POSTs a registration; returns status and JSON body.
    pub async fn register(&self, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/v1/services"))
            .json(body)
            .send()
            .await
            .expect("admin api answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Registers `name` of `service_type` at `host:port` with `ttl`, asserting
    /// success; returns the service object.
    pub async fn register_ok(
        &self,
        name: &str,
        service_type: &str,
        host: &str,
        port: u16,
        ttl: u32,
    ) -> Value {
        let (status, body) = self
            .register(&json!({"name": name, "type": service_type, "host": host, "port": port, "ttl": ttl}))
            .await;
        assert!(
            status == 200 || status == 201,
            "register {name}: {status} {body}"
        );
        body
    }

    /// Sends a heartbeat, optionally with a JSON body; returns the status.
    pub async fn heartbeat(&self, id: &str, body: Option<Value>) -> u16 {
        let mut request = self
            .http
            .put(self.url(&format!("/v1/services/{id}/heartbeat")));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request
            .send()
            .await
            .expect("admin api answers")
            .status()
            .as_u16()
    }

    pub async fn deregister(&self, id: &str) -> u16 {
        self.http
            .delete(self.url(&format!("/v1/services/{id}")))
            .send()
            .await
            .expect("admin api answers")
            .status()
            .as_u16()
    }

    /// GET `path`; returns status and JSON body (Null when not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("admin api answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Queries over UDP with EDNS (payload 1232).
    pub async fn query(&self, name: &str, qtype: RecordType) -> Message {
        query_udp(self.dns, name, qtype, Some(1232)).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A query message for `name`/`qtype`, with EDNS when `payload` is given.
pub fn query_message(name: &str, qtype: RecordType, payload: Option<u16>) -> Message {
    let mut message = Message::new(fastrand::u16(..), MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(
        Name::from_ascii(name).expect("valid test name"),
        qtype,
    ));
    if let Some(payload) = payload {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
    }
    message
}

/// Sends raw bytes over UDP; returns the reply, or `None` after 2 s.
pub async fn udp_exchange(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, server).await.unwrap();
    let mut buffer = vec![0u8; 65535];
    match tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buffer)).await {
        Ok(Ok((len, _))) => Some(buffer[..len].to_vec()),
        _ => None,
    }
}

/// Sends one length-prefixed message over a TCP stream; returns the reply.
pub async fn tcp_exchange_on(stream: &mut TcpStream, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await?;
    let len = tokio::time::timeout(Duration::from_secs(5), stream.read_u16())
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply"))??;
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

/// Sends raw bytes over a new TCP connection; returns the reply.
pub async fn tcp_exchange(server: SocketAddr, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    tcp_exchange_on(&mut stream, packet).await
}

/// Queries over UDP; `payload` `None` sends no EDNS (512-byte limit).
pub async fn query_udp(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    payload: Option<u16>,
) -> Message {
    let request = query_message(name, qtype, payload);
    let reply = udp_exchange(server, &request.to_vec().unwrap())
        .await
        .expect("server answers over udp");
    let response = Message::from_vec(&reply).expect("reply parses");
    assert_eq!(
        response.metadata.id, request.metadata.id,
        "reply id matches"
    );
    response
}

/// Queries over TCP (EDNS included when `payload` is given).
pub async fn query_tcp(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    payload: Option<u16>,
) -> Message {
    let request = query_message(name, qtype, payload);
    let reply = tcp_exchange(server, &request.to_vec().unwrap())
        .await
        .expect("server answers over tcp");
    Message::from_vec(&reply).expect("reply parses")
}

/// Polls `check` every 50 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
