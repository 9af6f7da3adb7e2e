//! The client commands of the real binary (`register`, `heartbeat`,
//! `deregister`, `list`, `discover`, `watch`, `completions`) run as child
//! processes against a server on port 0: what they print, and their exit
//! codes (README "Command line"): 0 done, 1 refused, 2 bad usage, 3
//! unreachable, never a panic.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{Registration, TestServer, eventually, id_of, ipv4s, query_udp};

/// The `signpost` binary cargo built for these tests.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_signpost");

/// The binary with `args`, talking to nothing unless told: no address,
/// token or log level from the test's environment; stdin closed.
pub(crate) fn signpost(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("SIGNPOST_ADDR")
        .env_remove("SIGNPOST_ADMIN_TOKEN")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// What a finished command said.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Outcome {
    /// Asserts the exit code and that nothing panicked.
    #[track_caller]
    pub(crate) fn expect(&self, code: i32) -> &Outcome {
        assert_eq!(self.code, Some(code), "{self:#?}");
        self.no_panic();
        self
    }

    #[track_caller]
    pub(crate) fn no_panic(&self) {
        for word in ["panicked", "backtrace", "RUST_BACKTRACE"] {
            assert!(!self.stderr.contains(word), "{self:#?}");
        }
    }
}

/// Runs `command` to its end (within 10 s).
pub(crate) async fn finish(command: &mut Command) -> Outcome {
    let output = tokio::time::timeout(Duration::from_secs(10), command.output())
        .await
        .expect("the command ends within 10 s")
        .expect("the binary runs");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `signpost ARGS --addr <server>` to its end.
pub(crate) async fn at(server: &TestServer, args: &[&str]) -> Outcome {
    let addr = format!("http://{}", server.admin);
    let mut all = args.to_vec();
    all.extend(["--addr", &addr]);
    finish(&mut signpost(&all)).await
}

/// An address where nothing listens (a port just freed).
pub(crate) fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_list_discover_heartbeat_deregister_round_trip() {
    let server = TestServer::start().await;
    let registered = at(
        &server,
        &[
            "register",
            "--type",
            "web",
            "--name",
            "web-1",
            "--host",
            "10.1.2.3",
            "--port",
            "8080",
            "--tag",
            "api",
            "--tag",
            "v2",
            "--meta",
            "version=1.0=rc",
            "--ttl",
            "60",
            "--priority",
            "1",
            "--weight",
            "5",
            "--locality",
            "eu-1",
        ],
    )
    .await;
    registered.expect(0);
    let id = registered.stdout.trim().to_string();
    let service = server.get_ok(&format!("/v1/services/{id}")).await;
    for (field, value) in [
        ("tags", json!(["api", "v2"])),
        ("metadata", json!({"version": "1.0=rc"})),
        ("ttl", json!(60)),
        ("priority", json!(1)),
        ("weight", json!(5)),
        ("locality", json!("eu-1")),
    ] {
        assert_eq!(service[field], value, "{field}: {service}");
    }
    let answer = query_udp(server.dns, "web.svc.local.", RecordType::A, None).await;
    assert_eq!(
        ipv4s(&answer.answers),
        ["10.1.2.3".parse::<std::net::Ipv4Addr>().unwrap()]
    );

    let table = at(&server, &["list"]).await;
    table.expect(0);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{table:#?}");
    assert!(
        lines[0].starts_with("TYPE  NAME   ADDRESS   PORT  HEALTH   EXPIRES IN  TAGS"),
        "{table:#?}"
    );
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        cells[..5],
        ["web", "web-1", "10.1.2.3", "8080", "passing"],
        "{table:#?}"
    );
    assert!(
        cells[5].ends_with('s') && cells[6] == "api,v2",
        "{table:#?}"
    );
    assert!(!table.stdout.contains('\x1b'), "no colour off a terminal");

    let json = at(&server, &["list", "--type", "web", "--json"]).await;
    json.expect(0);
    let listed: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(listed["services"][0]["id"], json!(id));

    let found = at(&server, &["discover", "web", "--tag", "api"]).await;
    assert_eq!(found.expect(0).stdout, "10.1.2.3:8080\n");

    at(
        &server,
        &[
            "heartbeat",
            &id,
            "--status",
            "critical",
            "--output",
            "db down",
        ],
    )
    .await
    .expect(0);
    let service = server.get_ok(&format!("/v1/services/{id}")).await;
    assert_eq!(
        (service["health"].as_str(), service["output"].as_str()),
        (Some("critical"), Some("db down"))
    );
    let critical = at(&server, &["list", "--health", "critical"]).await;
    assert!(critical.expect(0).stdout.contains("web-1"), "{critical:#?}");
    let none = at(&server, &["discover", "web"]).await;
    none.expect(1);
    assert_eq!(
        none.stderr.trim(),
        "no serving instance of type \"web\"",
        "{none:#?}"
    );
    assert!(none.stdout.is_empty());

    at(&server, &["deregister", &id]).await.expect(0);
    assert!(server.gone_within(&id, Duration::ZERO).await);
    let empty = at(&server, &["list"]).await;
    assert_eq!(
        empty.expect(0).stdout.lines().count(),
        1,
        "header only: {empty:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_with_json_prints_the_object_and_checks_go_to_the_server() {
    let server = TestServer::start().await;
    let outcome = at(
        &server,
        &[
            "register",
            "--type",
            "db",
            "--name",
            "db-1",
            "--host",
            "10.0.0.9",
            "--port",
            "5432",
            "--check-tcp",
            "127.0.0.1:9",
            "--interval",
            "2",
            "--json",
        ],
    )
    .await;
    outcome.expect(0);
    let object: Value = serde_json::from_str(&outcome.stdout).expect("the object, as JSON");
    assert_eq!(object["name"], "db-1");
    assert_eq!(object["check"]["tcp"], "127.0.0.1:9");
    assert_eq!(object["check"]["interval"], 2);
    let stored = server
        .get_ok(&format!("/v1/services/{}", id_of(&object)))
        .await;
    assert_eq!(stored["check"], object["check"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_exit_1_with_the_servers_message_alone() {
    let server = TestServer::start().await;
    // What the server says to the same registration, asked directly.
    let (status, reply) = server
        .try_register(&Registration::new("bad_name", "web", "10.0.0.1", 80))
        .await;
    assert_eq!(status, 422);
    let refused = at(
        &server,
        &[
            "register", "--type", "web", "--name", "bad_name", "--host", "10.0.0.1", "--port", "80",
        ],
    )
    .await;
    refused.expect(1);
    assert_eq!(
        refused.stderr,
        format!("{}\n", reply["error"].as_str().unwrap())
    );
    assert!(refused.stdout.is_empty());

    let unknown = uuid::Uuid::new_v4().to_string();
    for args in [
        vec!["heartbeat", &unknown],
        vec!["deregister", &unknown],
        vec!["list", "--type", "Not_A_Label"],
        vec!["watch", "--type", "Not_A_Label"],
    ] {
        let outcome = at(&server, &args).await;
        outcome.expect(1);
        assert_eq!(outcome.stderr.lines().count(), 1, "{args:?}: {outcome:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_exits_3_naming_the_address() {
    let addr = format!("http://{}", closed_port());
    let id = uuid::Uuid::new_v4().to_string();
    for args in [
        vec![
            "register", "--type", "web", "--name", "w", "--host", "10.0.0.1", "--port", "80",
        ],
        vec!["heartbeat", &id],
        vec!["deregister", &id],
        vec!["list"],
        vec!["discover", "web"],
        vec!["watch"],
    ] {
        let mut all = args.clone();
        all.extend(["--addr", &addr]);
        let outcome = finish(&mut signpost(&all)).await;
        outcome.expect(3);
        assert!(outcome.stderr.contains(&addr), "{args:?}: {outcome:#?}");
        assert!(outcome.stdout.is_empty(), "{args:?}: {outcome:#?}");
    }
    // SIGNPOST_ADDR instead of --addr; a name that does not resolve.
    let outcome =
        finish(signpost(&["list"]).env("SIGNPOST_ADDR", "http://no-such-host.invalid:8700")).await;
    outcome.expect(3);
    assert!(
        outcome.stderr.contains("http://no-such-host.invalid:8700"),
        "{outcome:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_exits_2_saying_what_is_wrong() {
    let id = uuid::Uuid::new_v4().to_string();
    let register = [
        "register", "--type", "web", "--name", "w", "--host", "10.0.0.1",
    ];
    let with = |extra: &[&'static str]| [&register[..], extra].concat();
    for (args, says) in [
        (with(&[]), "--port"),
        (with(&["--port", "0"]), "--port"),
        (with(&["--port", "80", "--meta", "novalue"]), "KEY=VALUE"),
        (
            with(&[
                "--port",
                "80",
                "--check-http",
                "http://x/",
                "--check-tcp",
                "x:1",
            ]),
            "cannot be used with",
        ),
        (with(&["--port", "80", "--interval", "5"]), "--check"),
        (
            with(&["--port", "80", "--addr", "https://127.0.0.1:8700"]),
            "plain HTTP",
        ),
        (vec!["heartbeat", "not-a-uuid"], "ID"),
        (vec!["heartbeat", &id, "--status", "sideways"], "passing"),
        (vec!["discover"], "TYPE"),
        (vec!["completions", "tcsh"], "bash"),
        (vec!["run", "--type", "web", "--port", "80"], "CMD"),
        (
            vec![
                "run",
                "--type",
                "web",
                "--port",
                "80",
                "--check-http",
                "ftp://x/",
                "--",
                "true",
            ],
            "--check-http",
        ),
        (vec!["register", "--bogus"], "--bogus"),
    ] {
        let outcome = finish(&mut signpost(&args)).await;
        outcome.expect(2);
        assert!(outcome.stderr.contains(says), "{args:?}: {outcome:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_documents_the_exit_codes_and_completions_print() {
    for (args, says) in [
        (&["--help"][..], "3  the server could not be reached"),
        (&["register", "--help"], "1  the server refused"),
        (&["watch", "--help"], "2  bad usage"),
        (
            &["run", "--help"],
            "exits with CMD's exit code (128 + the signal's number",
        ),
    ] {
        let outcome = finish(&mut signpost(args)).await;
        outcome.expect(0);
        assert!(outcome.stdout.contains(says), "{args:?}: {outcome:#?}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let outcome = finish(&mut signpost(&["completions", shell])).await;
        outcome.expect(0);
        assert!(
            outcome.stdout.contains("register") && outcome.stdout.contains("check-http"),
            "{shell}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_and_token_come_from_the_environment() {
    let server = TestServer::start_with(|config| config.admin.token = "s3cret".into()).await;
    let args = [
        "register", "--type", "web", "--name", "w", "--host", "10.0.0.1", "--port", "80",
    ];
    let address = format!("http://{}", server.admin);
    let without = finish(signpost(&args).env("SIGNPOST_ADDR", &address)).await;
    without.expect(1);
    assert_eq!(without.stderr, "missing or wrong bearer token\n");
    let with = finish(
        signpost(&args)
            .env("SIGNPOST_ADDR", &address)
            .env("SIGNPOST_ADMIN_TOKEN", "s3cret"),
    )
    .await;
    with.expect(0);
    assert_eq!(server.with_token("s3cret").list("").await.len(), 1);
    // --token, for the commands that read too.
    let listed = finish(&mut signpost(&[
        "list", "--json", "--addr", &address, "--token", "s3cret",
    ]))
    .await;
    listed.expect(0);
    assert!(listed.stdout.contains("\"w\""), "{listed:#?}");
    let refused = finish(&mut signpost(&[
        "list", "--addr", &address, "--token", "wrong",
    ]))
    .await;
    refused.expect(1);
    assert_eq!(refused.stderr, "missing or wrong bearer token\n");
}

/// A command left running, its stdout lines and stderr gathered.
pub(crate) struct Running {
    pub(crate) child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Running {
    pub(crate) fn start(command: &mut Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let gather = |stream: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = gather(Box::new(child.stdout.take().unwrap()));
        let stderr = gather(Box::new(child.stderr.take().unwrap()));
        Running {
            child,
            stdout,
            stderr,
        }
    }

    pub(crate) fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Whether a stdout line containing every one of `words` shows within
    /// `limit`.
    pub(crate) async fn prints(&self, words: &[&str], limit: Duration) -> bool {
        eventually(limit, || async {
            self.stdout()
                .iter()
                .any(|line| words.iter().all(|w| line.contains(w)))
        })
        .await
    }

    /// Sends `signal` (e.g. "TERM") with kill(1).
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// The exit code once it exits (within 10 s).
    pub(crate) async fn exit_code(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("exits within 10 s; stderr:\n{}", self.stderr()))
            .unwrap();
        status.code()
    }
}

/// Waits until one client subscribes to the server's events.
pub(crate) async fn subscribed(server: &TestServer) {
    let one = eventually(Duration::from_secs(5), || async {
        server.metric("signpost_event_subscribers").await == Some(1.0)
    })
    .await;
    assert!(one, "a subscriber within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_a_line_per_event_and_reconnects_after_a_restart() {
    let server = TestServer::start().await;
    let (admin, dns) = (server.admin, server.dns);
    let addr = format!("http://{admin}");
    let mut watch = Running::start(&mut signpost(&["watch", "--type", "web", "--addr", &addr]));
    subscribed(&server).await;
    let registration = Registration::new("web-1", "web", "10.1.2.3", 8080).ttl(60);
    let id = id_of(&server.register(&registration).await);
    let shown = &["register", "web/web-1 10.1.2.3:8080 passing"];
    assert!(
        watch.prints(shown, Duration::from_secs(5)).await,
        "{:?} {}",
        watch.stdout(),
        watch.stderr()
    );
    server
        .register(&Registration::new("db-1", "db", "10.1.2.4", 5432))
        .await;
    server.heartbeat_reporting(&id, "critical").await;
    assert!(
        watch
            .prints(
                &["health", "web/web-1", "passing -> critical"],
                Duration::from_secs(5)
            )
            .await
    );
    assert!(
        !watch.stdout().iter().any(|l| l.contains("db-1")),
        "only --type web"
    );

    server.stop().await;
    let server = TestServer::start_with(|config| {
        config.admin.listen = admin;
        config.dns.listen = dns;
    })
    .await;
    assert!(
        watch
            .prints(
                &["resync", "reconnected", "0 live instances"],
                Duration::from_secs(10)
            )
            .await,
        "{}",
        watch.stderr()
    );
    assert!(
        watch.stderr().contains("reconnecting"),
        "{}",
        watch.stderr()
    );
    server
        .register(&Registration::new("web-2", "web", "10.1.2.5", 8080))
        .await;
    assert!(
        watch
            .prints(&["register", "web/web-2"], Duration::from_secs(5))
            .await
    );
    watch.signal("INT");
    assert!(
        watch.exit_code().await != Some(101),
        "no panic: {}",
        watch.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_json_prints_the_servers_lines() {
    let server = TestServer::start().await;
    let addr = format!("http://{}", server.admin);
    let watch = Running::start(&mut signpost(&["watch", "--json", "--addr", &addr]));
    subscribed(&server).await;
    server
        .register(&Registration::new("web-1", "web", "10.1.2.3", 8080))
        .await;
    let shown = eventually(Duration::from_secs(5), || async {
        !watch.stdout().is_empty()
    })
    .await;
    assert!(shown, "{}", watch.stderr());
    let event: Value = serde_json::from_str(&watch.stdout()[0]).expect("a JSON line");
    assert_eq!(event["type"], "register");
    assert_eq!(event["data"]["service_info"]["type"], "web");
}

impl Drop for Running {
    /// A test that failed half-way still stops the command gently, so that
    /// `run` passes the signal on and leaves no child behind.
    fn drop(&mut self) {
        if let (Ok(None), Some(pid)) = (self.child.try_wait(), self.child.id()) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            for _ in 0..150 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.start_kill();
        }
    }
}
