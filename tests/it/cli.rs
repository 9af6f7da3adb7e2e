//! The `signpost` binary as a user runs it: flags, logged addresses, exit
//! codes, and clean shutdown on SIGTERM / SIGINT.

use hickory_proto::rr::{RData, RecordType};

use crate::support::{PORT_ZERO, Process, Registration, ScratchDir, query_udp, run_to_exit};

/// Free ports and the memory store, so parallel tests share nothing.
fn isolated() -> Vec<&'static str> {
    [&PORT_ZERO[..], &["--store", "memory"]].concat()
}

/// Registers one instance and resolves it, proving both servers work.
async fn register_and_resolve(process: &Process, zone: &str) {
    process
        .register(&Registration::new("web-1", "web", "10.1.2.3", 8080))
        .await;
    let answer = query_udp(process.dns, &format!("web.{zone}."), RecordType::A, None).await;
    let addresses: Vec<_> = answer.answers.iter().map(|r| r.data.clone()).collect();
    assert_eq!(addresses, vec![RData::A("10.1.2.3".parse().unwrap())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_port_zero_and_stops_cleanly_on_sigterm() {
    let mut process = Process::start(&isolated()).await;
    assert_ne!(process.dns.port(), 0);
    assert_ne!(process.admin.port(), 0);
    register_and_resolve(&process, "svc.local").await;
    process.stop().await;
    assert!(process.logs().contains("stopped"), "logs that it stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_subcommand_stops_cleanly_on_sigint() {
    let mut args = vec!["serve"];
    args.extend(isolated());
    let mut process = Process::start(&args).await;
    register_and_resolve(&process, "svc.local").await;
    assert_eq!(process.signal("INT").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_flag_changes_the_served_zone() {
    let mut args = isolated();
    args.extend(["--zone", "svc.internal"]);
    let mut process = Process::start(&args).await;
    register_and_resolve(&process, "svc.internal").await;
    let old_zone = query_udp(process.dns, "web.svc.local.", RecordType::A, None).await;
    assert_eq!(
        old_zone.metadata.response_code,
        hickory_proto::op::ResponseCode::Refused
    );
    process.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_is_read_and_flags_override_it() {
    let dir = ScratchDir::new("cli-config");
    let path = dir.path().join("signpost.toml");
    let text = signpost::config::DEFAULT_CONFIG_TOML
        .replace("zone = \"svc.local\"", "zone = \"disco.test\"")
        .replace("ttl = 5", "ttl = 3")
        .replace("listen = \"127.0.0.1:8600\"", "listen = \"127.0.0.1:0\"")
        .replace("url = \"sqlite:data/signpost.db\"", "url = \"memory\"");
    std::fs::write(&path, text).unwrap();
    let path_text = path.to_str().unwrap();
    // The config sets the zone and the DNS port; the flag sets the admin port.
    let mut process =
        Process::start(&["--config", path_text, "--admin-listen", "127.0.0.1:0"]).await;
    register_and_resolve(&process, "disco.test").await;
    let answer = query_udp(process.dns, "web.disco.test.", RecordType::A, None).await;
    assert_eq!(answer.answers[0].ttl, 3, "dns.ttl from the file");
    process.stop().await;
}

/// Writes `text` to `signpost.toml` in a scratch directory; returns the
/// directory (removed when dropped) and the file.
fn config_file(text: &str) -> (ScratchDir, std::path::PathBuf) {
    let dir = ScratchDir::new("cli-config");
    let path = dir.path().join("signpost.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_config_file_keeps_the_built_in_defaults() {
    // Only the zone and its name server: everything else is built in.
    let text = "[dns]\nzone = \"svc.internal\"\nnameserver = \"NS1.Example.NET.\"\n";
    let (_dir, path) = config_file(text);
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend(isolated());
    let mut process = Process::start(&args).await;
    register_and_resolve(&process, "svc.internal").await;
    let answer = query_udp(process.dns, "web.svc.internal.", RecordType::A, None).await;
    assert_eq!(answer.answers[0].ttl, 5, "dns.ttl from the built-in file");
    let apex = query_udp(process.dns, "svc.internal.", RecordType::NS, None).await;
    let ns: Vec<_> = apex.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(ns, ["ns1.example.net."], "dns.nameserver, lowercase");
    process.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_with_an_unknown_or_bad_setting_is_refused() {
    let (_dir, path) = config_file("[dns]\nzone = \"svc.internal\"\nlisten_port = 53\n");
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend(isolated());
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_store_is_refused_with_a_clear_message() {
    let args = [
        "--dns-listen",
        "127.0.0.1:0",
        "--store",
        "redis://127.0.0.1:6379",
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
    let mut args = isolated();
    args.extend(["--dns-threads", "3"]);
    let mut process = Process::start(&args).await;
    register_and_resolve(&process, "svc.local").await;
    process.stop().await;
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
        let mut process = Process::start(&isolated()).await;
        process.stop().await;
    }
}
