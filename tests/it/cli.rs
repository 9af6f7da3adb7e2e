//! The `signpost` binary as a user runs it: flags, logged addresses, exit
//! codes, and clean shutdown on SIGTERM / SIGINT.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use hickory_proto::rr::{RData, RecordType};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::query_udp;

const BIN: &str = env!("CARGO_BIN_EXE_signpost");

/// A running `signpost` process and the addresses it logged.
struct Process {
    child: Child,
    dns: SocketAddr,
    admin: SocketAddr,
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// Starts the binary with `args` and waits for both "listening" log lines.
async fn spawn(args: &[&str]) -> Process {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, mut log) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    let (mut dns, mut admin) = (None, None);
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while dns.is_none() || admin.is_none() {
            let line = log.recv().await.expect("process logs before exiting");
            if let Some(rest) = line.split("dns listening on ").nth(1) {
                dns = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
            if let Some(rest) = line.split("admin listening on http://").nth(1) {
                admin = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
        }
    })
    .await;
    assert!(found.is_ok(), "both listening lines logged");
    Process {
        child,
        dns: dns.unwrap(),
        admin: admin.unwrap(),
        log,
    }
}

/// Sends `signal` (e.g. "TERM") and returns the exit code.
async fn stop_with(process: &mut Process, signal: &str) -> Option<i32> {
    let pid = process.child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), process.child.wait())
        .await
        .expect("exits within 15 s of the signal")
        .unwrap();
    exit.code()
}

/// Free ports and the memory store, so parallel tests share nothing.
const PORT_ZERO: [&str; 6] = [
    "--dns-listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
    "--store",
    "memory",
];

/// Registers one instance and resolves it, proving both servers work.
async fn register_and_resolve(process: &Process, zone: &str) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/services", process.admin))
        .json(&json!({"name": "web-1", "type": "web", "host": "10.1.2.3", "port": 8080}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let answer = query_udp(process.dns, &format!("web.{zone}."), RecordType::A, None).await;
    let addresses: Vec<_> = answer.answers.iter().map(|r| r.data.clone()).collect();
    assert_eq!(addresses, vec![RData::A("10.1.2.3".parse().unwrap())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_port_zero_and_stops_cleanly_on_sigterm() {
    let mut process = spawn(&PORT_ZERO).await;
    assert_ne!(process.dns.port(), 0);
    assert_ne!(process.admin.port(), 0);
    register_and_resolve(&process, "svc.local").await;
    assert_eq!(stop_with(&mut process, "TERM").await, Some(0));
    let mut stopped = false;
    while let Ok(line) = process.log.try_recv() {
        stopped |= line.contains("stopped");
    }
    assert!(stopped, "logs that it stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_subcommand_stops_cleanly_on_sigint() {
    let mut args = vec!["serve"];
    args.extend(PORT_ZERO);
    let mut process = spawn(&args).await;
    register_and_resolve(&process, "svc.local").await;
    assert_eq!(stop_with(&mut process, "INT").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_flag_changes_the_served_zone() {
    let mut args = PORT_ZERO.to_vec();
    args.extend(["--zone", "svc.internal"]);
    let mut process = spawn(&args).await;
    register_and_resolve(&process, "svc.internal").await;
    let old_zone = query_udp(process.dns, "web.svc.local.", RecordType::A, None).await;
    assert_eq!(
        old_zone.metadata.response_code,
        hickory_proto::op::ResponseCode::Refused
    );
    assert_eq!(stop_with(&mut process, "TERM").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_is_read_and_flags_override_it() {
    let dir = std::env::temp_dir().join(format!("signpost-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("signpost.toml");
    let text = signpost::config::DEFAULT_CONFIG_TOML
        .replace("zone = \"svc.local\"", "zone = \"disco.test\"")
        .replace("ttl = 5", "ttl = 3")
        .replace("listen = \"127.0.0.1:8600\"", "listen = \"127.0.0.1:0\"")
        .replace("url = \"sqlite:data/signpost.db\"", "url = \"memory\"");
    std::fs::write(&path, text).unwrap();
    let path_text = path.to_str().unwrap();
    // The config sets the zone and the DNS port; the flag sets the admin port.
    let mut process = spawn(&["--config", path_text, "--admin-listen", "127.0.0.1:0"]).await;
    register_and_resolve(&process, "disco.test").await;
    let answer = query_udp(process.dns, "web.disco.test.", RecordType::A, None).await;
    assert_eq!(answer.answers[0].ttl, 3, "dns.ttl from the file");
    assert_eq!(stop_with(&mut process, "TERM").await, Some(0));
    std::fs::remove_dir_all(&dir).ok();
}

/// Writes `text` to a fresh `signpost.toml` in a directory of its own;
/// returns the directory (to remove) and the file.
fn config_file(name: &str, text: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("signpost-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("signpost.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_config_file_keeps_the_built_in_defaults() {
    // Only the zone and its name server: everything else is built in.
    let text = "[dns]\nzone = \"svc.internal\"\nnameserver = \"NS1.Example.NET.\"\n";
    let (dir, path) = config_file("partial", text);
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend(PORT_ZERO);
    let mut process = spawn(&args).await;
    register_and_resolve(&process, "svc.internal").await;
    let answer = query_udp(process.dns, "web.svc.internal.", RecordType::A, None).await;
    assert_eq!(answer.answers[0].ttl, 5, "dns.ttl from the built-in file");
    let apex = query_udp(process.dns, "svc.internal.", RecordType::NS, None).await;
    let ns: Vec<_> = apex.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(ns, ["ns1.example.net."], "dns.nameserver, lowercase");
    assert_eq!(stop_with(&mut process, "TERM").await, Some(0));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_with_an_unknown_or_bad_setting_is_refused() {
    let (dir, path) = config_file(
        "unknown",
        "[dns]\nzone = \"svc.internal\"\nlisten_port = 53\n",
    );
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend(PORT_ZERO);
    let (code, stderr) = run_to_exit(&args).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("dns.listen_port") && stderr.contains(path.to_str().unwrap()),
        "{stderr}"
    );

    std::fs::write(&path, "[dns]\nnameserver = \"ns_1.example.net\"\n").unwrap();
    let (code, stderr) = run_to_exit(&args).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("dns.nameserver") && stderr.contains("ns_1.example.net"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs the binary to completion and returns (exit code, stderr).
async fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        Command::new(BIN).args(args).kill_on_drop(true).output(),
    )
    .await
    .expect("exits on its own")
    .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_store_is_refused_with_a_clear_message() {
    let args = [
        "--dns-listen",
        "127.0.0.1:0",
        "--store",
        "etcd:http://127.0.0.1:2379",
    ];
    let (code, stderr) = run_to_exit(&args).await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("unsupported store") && stderr.contains("sqlite:PATH"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_with_a_clear_message() {
    let (code, stderr) = run_to_exit(&["--zone", "bad..zone"]).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("dns.zone"), "{stderr}");

    let (code, stderr) = run_to_exit(&["--config", "/nonexistent/signpost.toml"]).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("/nonexistent/signpost.toml"), "{stderr}");

    let (code, stderr) = run_to_exit(&["--dns-listen", "not-an-address"]).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("--dns-listen"), "{stderr}");

    let (code, stderr) = run_to_exit(&["--dns-threads", "300"]).await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("dns.threads"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_threads_flag_serves_and_stops_cleanly() {
    let mut args = PORT_ZERO.to_vec();
    args.extend(["--dns-threads", "3"]);
    let mut process = spawn(&args).await;
    register_and_resolve(&process, "svc.local").await;
    assert_eq!(stop_with(&mut process, "TERM").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_port_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run_to_exit(&[
        "--dns-listen",
        "127.0.0.1:0",
        "--admin-listen",
        &port,
        "--store",
        "memory",
    ])
    .await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("admin") && stderr.contains(&port),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_the_moment_it_is_listening_still_exits_cleanly() {
    for _ in 0..5 {
        let mut process = spawn(&PORT_ZERO).await;
        assert_eq!(stop_with(&mut process, "TERM").await, Some(0));
    }
}
