//! Shared helpers: an in-process server on port 0 ([`TestServer`]), the real
//! binary as a child process ([`Process`]), one admin API client for both
//! ([`Api`]) and one way to build a registration ([`Registration`]), and a
//! minimal DNS client over raw UDP/TCP sockets (no resolver, no retries, no
//! TC fallback, so tests see exactly what the server sent).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde::Serialize;
use serde_json::{Value, json};
use signpost::{Config, Server};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use tokio::process::{Child, Command};

/// A registration body for `POST /v1/services`, built field by field:
/// `Registration::new("web-1", "web", "10.0.0.5", 8080).ttl(30).tag("api")`.
/// Only what is set is sent, so the server's defaults apply to the rest.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub(crate) struct Registration(serde_json::Map<String, Value>);

impl Registration {
    /// The four required fields.
    pub(crate) fn new(name: &str, service_type: &str, host: &str, port: u16) -> Registration {
        Registration(serde_json::Map::new())
            .set("name", json!(name))
            .set("type", json!(service_type))
            .set("host", json!(host))
            .set("port", json!(port))
    }

    pub(crate) fn ttl(self, seconds: u32) -> Registration {
        self.set("ttl", json!(seconds))
    }

    pub(crate) fn priority(self, priority: u16) -> Registration {
        self.set("priority", json!(priority))
    }

    pub(crate) fn weight(self, weight: u16) -> Registration {
        self.set("weight", json!(weight))
    }

    /// The locality it serves (README "Steering traffic").
    pub(crate) fn locality(self, locality: &str) -> Registration {
        self.set("locality", json!(locality))
    }

    /// Adds one tag after those already set.
    pub(crate) fn tag(mut self, tag: &str) -> Registration {
        let tags = self.0.entry("tags").or_insert_with(|| json!([]));
        tags.as_array_mut()
            .expect("tags is a list")
            .push(json!(tag));
        self
    }

    /// Sets the whole tag list (an empty one too).
    pub(crate) fn tags(self, tags: &[&str]) -> Registration {
        self.set("tags", json!(tags))
    }

    /// Adds one metadata pair.
    pub(crate) fn meta(mut self, key: &str, value: &str) -> Registration {
        let metadata = self.0.entry("metadata").or_insert_with(|| json!({}));
        metadata[key] = json!(value);
        self
    }

    /// An active health check, e.g. `json!({"http": url, "interval": 1})`.
    pub(crate) fn check(self, check: Value) -> Registration {
        self.set("check", check)
    }

    /// Sets any field to any value, valid or not.
    pub(crate) fn set(mut self, field: &str, value: Value) -> Registration {
        self.0.insert(field.to_string(), value);
        self
    }

    /// Leaves `field` out.
    pub(crate) fn without(mut self, field: &str) -> Registration {
        self.0.remove(field);
        self
    }
}

impl std::fmt::Display for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", Value::Object(self.0.clone()))
    }
}

/// The admin API of a running signpost, in process ([`TestServer`]) or a
/// child process ([`Process`]); cheap to clone into tasks. Every call
/// returns the status and the JSON body (`Null` when it is not JSON).
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) http: reqwest::Client,
    pub(crate) addr: SocketAddr,
}

impl Api {
    /// The same API, sending `Authorization: Bearer <token>` with every
    /// request (README "Security").
    pub(crate) fn with_token(&self, token: &str) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {token}").parse().expect("a header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a client");
        Api {
            http,
            addr: self.addr,
        }
    }

    /// `http://ADDR` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends `method path`, with `body` as JSON when given; the error when
    /// no answer came (for tests that kill the server under a client).
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Result<(u16, Value)> {
        let mut request = self.http.request(method.clone(), self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        let (status, bytes) = read_checked(&method, path, request.send().await?).await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Like [`Api::call`], from a server that must answer.
    async fn answer(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        self.call(method.clone(), path, body)
            .await
            .unwrap_or_else(|error| panic!("no answer to {method} {path}: {error}"))
    }

    /// POSTs a registration, whatever the answer; returns status and body.
    pub(crate) async fn try_register(&self, body: &impl Serialize) -> (u16, Value) {
        let body = serde_json::to_value(body).expect("a JSON body");
        self.answer(reqwest::Method::POST, "/v1/services", Some(&body))
            .await
    }

    /// POSTs a registration, asserting 201 Created; returns the service
    /// object.
    pub(crate) async fn register(&self, registration: &impl Serialize) -> Value {
        let body = serde_json::to_value(registration).expect("a JSON body");
        let (status, reply) = self.try_register(&body).await;
        assert_eq!(status, 201, "register {body}: {status} {reply}");
        reply
    }

    /// Sends a heartbeat, with a JSON body when given.
    pub(crate) async fn heartbeat(&self, id: &str, body: Option<Value>) -> (u16, Value) {
        let path = format!("/v1/services/{id}/heartbeat");
        self.answer(reqwest::Method::PUT, &path, body.as_ref())
            .await
    }

    /// Sends a heartbeat reporting `status` (passing, warning, critical).
    pub(crate) async fn heartbeat_reporting(&self, id: &str, status: &str) -> (u16, Value) {
        self.heartbeat(id, Some(json!({ "status": status }))).await
    }

    /// `DELETE /v1/services/{id}`.
    pub(crate) async fn deregister(&self, id: &str) -> (u16, Value) {
        let path = format!("/v1/services/{id}");
        self.answer(reqwest::Method::DELETE, &path, None).await
    }

    /// Whether `GET /v1/services/{id}` answers 404 within `limit`.
    pub(crate) async fn gone_within(&self, id: &str, limit: Duration) -> bool {
        let path = format!("/v1/services/{id}");
        eventually(limit, || async { self.get(&path).await.0 == 404 }).await
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.answer(reqwest::Method::GET, path, None).await
    }

    /// `GET path`, asserting 200; returns the body.
    pub(crate) async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `GET /v1/services` + `query`, asserting 200; returns the list.
    pub(crate) async fn list(&self, query: &str) -> Vec<Value> {
        let body = self.get_ok(&format!("/v1/services{query}")).await;
        body["services"]
            .as_array()
            .unwrap_or_else(|| panic!("list has a services array: {body}"))
            .clone()
    }

    /// The `/metrics` text, asserting 200 and the Prometheus text format.
    pub(crate) async fn metrics(&self) -> String {
        let response = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics answer");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(
            content_type.starts_with("text/plain"),
            "Prometheus text format: {content_type}"
        );
        response.text().await.unwrap()
    }

    /// The value of one Prometheus series, fetched from `/metrics`.
    pub(crate) async fn metric(&self, series: &str) -> Option<f64> {
        metric(&self.metrics().await, series)
    }
}

/// Reads a response of the admin API to the end, checking it against the
/// OpenAPI document (`schema::check_response`: panics when the document
/// does not describe it); returns the status and the body.
pub(crate) async fn read_checked(
    method: &reqwest::Method,
    path: &str,
    response: reqwest::Response,
) -> reqwest::Result<(u16, bytes::Bytes)> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await?;
    crate::schema::check_response(&crate::schema::Received {
        method: method.as_str(),
        target: path,
        status,
        headers: &headers,
        body: &body,
    });
    Ok((status, body))
}

/// A running signpost, stopped when dropped; its admin API is [`Api`]'s
/// methods on it.
pub(crate) struct TestServer {
    pub(crate) dns: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) api: Api,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Default settings, every socket on 127.0.0.1 port 0.
    pub(crate) async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Like [`TestServer::start`], after `configure` adjusts the settings.
    pub(crate) async fn start_with(configure: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::default();
        config.store.url = "memory".into();
        config.dns.listen = "127.0.0.1:0".parse().unwrap();
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        configure(&mut config);
        let settings = config.validate().expect("test settings are valid");
        let server = Server::bind(settings).await.expect("server binds");
        let (dns, admin) = (server.dns_addr(), server.admin_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let outcome = server
                .run(async {
                    let _ = stopped.await;
                })
                .await;
            outcome.expect("the server stops only when asked");
        });
        TestServer {
            dns,
            admin,
            api: Api {
                http: reqwest::Client::new(),
                addr: admin,
            },
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and waits until it has finished.
    pub(crate) async fn stop(mut self) {
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

    /// Queries over UDP with EDNS (payload 1232).
    pub(crate) async fn query(&self, name: &str, qtype: RecordType) -> Message {
        query_udp(self.dns, name, qtype, Some(1232)).await
    }
}

impl std::ops::Deref for TestServer {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The `signpost` binary cargo built for these tests.
const BIN: &str = env!("CARGO_BIN_EXE_signpost");

/// `--dns-listen` and `--admin-listen` on 127.0.0.1 port 0.
pub(crate) const PORT_ZERO: [&str; 4] = [
    "--dns-listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
];

/// A fresh directory under the system temp dir, removed when dropped.
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(crate) fn new(tag: &str) -> ScratchDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "signpost-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("can create a temp dir");
        ScratchDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// `sqlite:<dir>/signpost.db` and the path it names.
    pub(crate) fn sqlite(&self) -> (String, PathBuf) {
        let db = self.0.join("signpost.db");
        (format!("sqlite:{}", db.display()), db)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// The binary with `args`, run in `cwd`, logging at info, without an admin
/// token from the environment.
fn command(cwd: &Path, args: &[String]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .env_remove("SIGNPOST_ADMIN_TOKEN")
        .kill_on_drop(true);
    command
}

/// Runs the binary with `args` in a scratch directory until it exits by
/// itself (within 20 s); returns its exit code and stderr.
pub(crate) async fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let scratch = ScratchDir::new("run");
    run_to_exit_in(scratch.path(), args).await
}

/// Like [`run_to_exit`], in `cwd`.
pub(crate) async fn run_to_exit_in(cwd: &Path, args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::time::timeout(Duration::from_secs(20), command(cwd, &owned(args)).output())
        .await
        .expect("exits on its own")
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The real binary as a child process, with the addresses it logged; killed
/// (and reaped) when dropped. Its admin API is [`Api`]'s methods on it.
pub(crate) struct Process {
    pub(crate) dns: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) api: Api,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    cwd: PathBuf,
    args: Vec<String>,
    /// The directory of its own it runs in, if it has one.
    scratch: Option<ScratchDir>,
}

impl Process {
    /// Starts the binary with `args` in a scratch directory of its own and
    /// waits until it has logged both listening addresses (pass
    /// [`PORT_ZERO`] or a config that listens on port 0).
    pub(crate) async fn start(args: &[&str]) -> Process {
        let scratch = ScratchDir::new("process");
        let cwd = scratch.path().to_path_buf();
        Process::spawn(cwd, owned(args), Some(scratch)).await
    }

    /// Like [`Process::start`], in `dir`, which the test keeps: its files,
    /// and the default store `data/signpost.db`, outlive the process.
    pub(crate) async fn start_in(dir: &Path, args: &[&str]) -> Process {
        Process::spawn(dir.to_path_buf(), owned(args), None).await
    }

    async fn spawn(cwd: PathBuf, args: Vec<String>, scratch: Option<ScratchDir>) -> Process {
        let mut child = command(&cwd, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            })
        };
        let (mut dns, mut admin) = (None, None);
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while dns.is_none() || admin.is_none() {
                let Some(line) = lines_rx.recv().await else {
                    return false; // exited before listening
                };
                if let Some(rest) = line.split("dns listening on ").nth(1) {
                    dns = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                }
                if let Some(rest) = line.split("admin listening on http://").nth(1) {
                    admin = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                }
            }
            true
        })
        .await;
        let logged = log.lock().unwrap().join("\n");
        assert!(
            found == Ok(true),
            "signpost did not log both listening lines; its log:\n{logged}"
        );
        let (dns, admin): (SocketAddr, SocketAddr) = (dns.unwrap(), admin.unwrap());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Process {
            dns,
            admin,
            api: Api { http, addr: admin },
            child,
            log,
            reader: Some(reader),
            cwd,
            args,
            scratch,
        }
    }

    /// Its process id, while it runs.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Everything it logged so far, one line each.
    pub(crate) fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends `signal` (e.g. "TERM") with kill(1) and waits for the exit;
    /// returns the exit code (`None` when killed by the signal). Its log is
    /// read to the end by then.
    pub(crate) async fn signal(&mut self, signal: &str) -> Option<i32> {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
        let exit = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("exits within 15 s of the signal")
            .unwrap();
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        exit.code()
    }

    /// SIGTERM, asserting a clean exit (code 0).
    pub(crate) async fn stop(&mut self) {
        let code = self.signal("TERM").await;
        assert_eq!(
            code,
            Some(0),
            "clean exit on SIGTERM; log:\n{}",
            self.logs()
        );
    }

    /// `kill -9`, asserting that the signal is what ended it.
    pub(crate) async fn kill_9(&mut self) {
        assert_eq!(self.signal("KILL").await, None, "killed by SIGKILL");
    }

    /// Starts the binary again, once this one has exited, with the same
    /// arguments in the same directory: on the same store.
    pub(crate) async fn restart(mut self) -> Process {
        assert!(
            matches!(self.child.try_wait(), Ok(Some(_))),
            "restart once the process has exited"
        );
        let args = std::mem::take(&mut self.args);
        Process::spawn(self.cwd.clone(), args, self.scratch.take()).await
    }
}

impl std::ops::Deref for Process {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Reap it here, so that whatever its directory is on (a tmpfs a
        // test unmounts next, say) is no longer busy.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.start_kill();
            for _ in 0..100 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The addresses of A records (panics on any other record).
pub(crate) fn ipv4s(records: &[Record]) -> Vec<Ipv4Addr> {
    records
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0,
            other => panic!("expected A, got {other:?}"),
        })
        .collect()
}

/// Registers `count` instances of `service_type` concurrently: `i<NN>` at
/// [`many_ip`]`(NN)`, port 1000 + NN, TTL 60. At most 64 at a time, as a
/// client's connection pool would: one source may hold only so many admin
/// connections (`admin.max_connections_per_source`).
pub(crate) async fn register_many(server: &TestServer, service_type: &str, count: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    let pool = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..count {
        let api = server.api.clone();
        let pool = pool.clone();
        let port = 1000 + u16::try_from(i).expect("a port");
        let registration = Registration::new(
            &format!("i{i:02}"),
            service_type,
            &many_ip(i).to_string(),
            port,
        )
        .ttl(60);
        tasks.spawn(async move {
            let _connection = pool.acquire().await.expect("never closed");
            api.register(&registration).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("registration task");
    }
}

/// The address [`register_many`] gives instance `i`.
pub(crate) fn many_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, (i / 256) as u8, (i % 256) as u8)
}

/// A query message for `name`/`qtype`, with EDNS when `payload` is given.
pub(crate) fn query_message(name: &str, qtype: RecordType, payload: Option<u16>) -> Message {
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
pub(crate) async fn udp_exchange(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, server).await.unwrap();
    let mut buffer = vec![0u8; 65535];
    match tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buffer)).await {
        Ok(Ok((len, _))) => Some(buffer[..len].to_vec()),
        _ => None,
    }
}

/// Length-prefixes a message for TCP.
pub(crate) fn frame(packet: &[u8]) -> Vec<u8> {
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    framed
}

/// Reads one length-prefixed DNS message from a TCP stream (within 5 s).
pub(crate) async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = tokio::time::timeout(Duration::from_secs(5), stream.read_u16())
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply"))??;
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

/// Sends one length-prefixed message over a TCP stream; returns the reply.
pub(crate) async fn tcp_exchange_on(
    stream: &mut TcpStream,
    packet: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream.write_all(&frame(packet)).await?;
    read_frame(stream).await
}

/// Sends raw bytes over a new TCP connection; returns the reply.
pub(crate) async fn tcp_exchange(server: SocketAddr, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    tcp_exchange_on(&mut stream, packet).await
}

/// Queries over UDP; `payload` `None` sends no EDNS (512-byte limit).
pub(crate) async fn query_udp(
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
pub(crate) async fn query_tcp(
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

/// Wall-clock unix seconds.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Polls `check` every 50 ms until it returns true or `limit` passes.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
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

/// Reads an HTTP request up to the end of its headers; false when the
/// connection ends or fails first.
async fn read_request_head(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    true
}

/// The `id` of a service object.
pub(crate) fn id_of(service: &Value) -> String {
    service["id"]
        .as_str()
        .expect("service has an id")
        .to_string()
}

/// The value of one Prometheus series (`name{labels}` exactly as written)
/// in a `/metrics` text.
pub(crate) fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

/// What a test [`Endpoint`] does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Answers every request with this HTTP status.
    Status(u16),
    /// Accepts and reads, never answers.
    Hang,
    /// Not listening: connections are refused.
    Closed,
}

/// A real HTTP (and TCP) endpoint on loopback that a test flips between
/// answers, silence and a closed port, counting the requests it receives.
pub(crate) struct Endpoint {
    pub addr: SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<Mode>>,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Endpoint {
    pub(crate) async fn start(mode: Mode) -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut endpoint = Endpoint {
            addr: listener.local_addr().unwrap(),
            state: std::sync::Arc::new(std::sync::Mutex::new(mode)),
            requests: Default::default(),
            task: None,
        };
        endpoint.serve(listener);
        endpoint.set(mode).await;
        endpoint
    }

    /// `http://ADDR/health`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    /// Connections (TCP) or requests (HTTP) received so far.
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        let requests = self.requests.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let state = state.clone();
                tokio::spawn(async move {
                    if !read_request_head(&mut stream).await {
                        return;
                    }
                    let mode = *state.lock().unwrap();
                    match mode {
                        Mode::Status(status) => {
                            let body = format!("status {status}");
                            let reply = format!(
                                "HTTP/1.1 {status} Test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = stream.write_all(reply.as_bytes()).await;
                        }
                        Mode::Hang | Mode::Closed => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                    }
                });
            }
        }));
    }

    /// Switches the behaviour; `Closed` stops listening, anything else
    /// listens again on the same port.
    pub(crate) async fn set(&mut self, mode: Mode) {
        *self.state.lock().unwrap() = mode;
        match (mode, self.task.is_some()) {
            (Mode::Closed, true) => {
                let task = self.task.take().unwrap();
                task.abort();
                let _ = task.await;
            }
            (Mode::Closed, false) | (_, true) => {}
            (_, false) => {
                let listener = tokio::net::TcpListener::bind(self.addr)
                    .await
                    .expect("can listen again on the endpoint's port");
                self.serve(listener);
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One server-sent event as read off the wire.
#[derive(Debug, Clone)]
pub(crate) enum Sse {
    /// A `data:` event, parsed as JSON.
    Data(Value),
    /// A `:` comment line (keep-alive).
    Comment(#[allow(dead_code, reason = "shown in failure messages")] String),
}

/// A `GET /v1/events` stream read over a raw HTTP/1.0 connection, so the
/// body arrives exactly as sent (no chunking, no client buffering).
pub(crate) struct EventStream {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl EventStream {
    /// Opens the stream; returns the HTTP status and, on 200, the stream.
    pub(crate) async fn open(server: &TestServer, query: &str) -> (u16, Option<EventStream>) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        EventStream::open_on(socket, server, query).await
    }

    /// Like [`EventStream::open`] on a prepared socket (a small receive
    /// buffer, say).
    pub(crate) async fn open_on(
        socket: tokio::net::TcpSocket,
        server: &TestServer,
        query: &str,
    ) -> (u16, Option<EventStream>) {
        EventStream::open_raw(socket, server, query, "").await
    }

    /// Like [`EventStream::open`], with `Authorization: Bearer <token>`.
    pub(crate) async fn open_with_token(
        server: &TestServer,
        query: &str,
        token: &str,
    ) -> (u16, Option<EventStream>) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let auth = format!("Authorization: Bearer {token}\r\n");
        EventStream::open_raw(socket, server, query, &auth).await
    }

    /// Opens the stream with `headers` (each line ending in CRLF) added.
    async fn open_raw(
        socket: tokio::net::TcpSocket,
        server: &TestServer,
        query: &str,
        headers: &str,
    ) -> (u16, Option<EventStream>) {
        let mut stream = socket.connect(server.admin).await.unwrap();
        let request = format!("GET /v1/events{query} HTTP/1.0\r\nHost: test\r\n{headers}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut events = EventStream {
            stream,
            buffer: Vec::new(),
        };
        let head = events.read_until(b"\r\n\r\n").await.expect("response head");
        let head = String::from_utf8_lossy(&head).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line in {head:?}"));
        if status != 200 {
            return (status, None);
        }
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{head}"
        );
        (status, Some(events))
    }

    async fn read_until(&mut self, end: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(at) = self.buffer.windows(end.len()).position(|w| w == end) {
                let rest = self.buffer.split_off(at + end.len());
                let mut found = std::mem::replace(&mut self.buffer, rest);
                found.truncate(at);
                return Some(found);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next event or comment, or `None` when the stream ended or
    /// nothing came within `limit`.
    pub(crate) async fn next_within(&mut self, limit: Duration) -> Option<Sse> {
        tokio::time::timeout(limit, async {
            let block = self.read_until(b"\n\n").await?;
            let block = String::from_utf8(block).expect("events are UTF-8");
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(comment) = line.strip_prefix(':') {
                    return Some(Sse::Comment(comment.trim().to_string()));
                }
                if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value).to_string());
                }
            }
            let value = serde_json::from_str(&data.join("\n"))
                .unwrap_or_else(|e| panic!("data is JSON ({e}): {block:?}"));
            crate::schema::check_event(&value);
            Some(Sse::Data(value))
        })
        .await
        .ok()
        .flatten()
    }

    /// The next `data:` event within `limit`, skipping comments.
    pub(crate) async fn next_event(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await? {
                Sse::Data(value) => return Some(value),
                Sse::Comment(_) => continue,
            }
        }
    }

    /// Whether the server closed the stream within `limit`.
    pub(crate) async fn ends_within(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            let mut chunk = [0u8; 65536];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }
}

/// A real HTTPS endpoint on loopback with a fresh self-signed certificate
/// (for `127.0.0.1`), answering every request 200; counts requests.
pub(crate) struct TlsEndpoint {
    pub addr: SocketAddr,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsEndpoint {
    pub(crate) async fn start() -> TlsEndpoint {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: std::sync::Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, counter) = (acceptor.clone(), counter.clone());
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    if !read_request_head(&mut stream).await {
                        return;
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecure")
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        TlsEndpoint {
            addr,
            requests,
            task,
        }
    }

    /// Requests that completed a TLS handshake and were answered.
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for TlsEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}
