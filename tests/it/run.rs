//! `signpost run -- CMD`: the real binary keeping an unmodified program
//! registered for exactly as long as it lives (README "Command line").

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::commands::{Running, closed_port, finish, signpost};
use crate::support::{Endpoint, Mode, ScratchDir, TestServer, eventually, ipv4s, query_udp};

/// `signpost run --addr <admin> ARGS`, left running.
fn run(admin: std::net::SocketAddr, args: &[&str]) -> Running {
    let addr = format!("http://{admin}");
    let mut all = vec!["run", "--addr", addr.as_str()];
    all.extend(args);
    Running::start(&mut signpost(&all))
}

/// The one instance of `service_type` once it is listed (within `limit`).
async fn listed(server: &TestServer, service_type: &str, limit: Duration) -> Option<Value> {
    let query = format!("?type={service_type}");
    eventually(limit, || async { !server.list(&query).await.is_empty() }).await;
    server.list(&query).await.pop()
}

/// A port nothing listens on now, free to take later.
fn free_port() -> u16 {
    closed_port().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_program_stays_in_dns_past_several_ttls_and_leaves_on_sigterm() {
    let server = TestServer::start().await;
    let dir = ScratchDir::new("run-http");
    let port = free_port().to_string();
    let mut wrapper = run(
        server.admin,
        &[
            "--type",
            "files",
            "--name",
            "files-1",
            "--port",
            &port,
            "--ttl",
            "2",
            "--wait-port",
            "--check-http",
            "/",
            "--interval",
            "1",
            "--",
            "python3",
            "-m",
            "http.server",
            &port,
            "--bind",
            "127.0.0.1",
            "--directory",
            dir.path().to_str().unwrap(),
        ],
    );
    let service = listed(&server, "files", Duration::from_secs(8)).await;
    let service = service.unwrap_or_else(|| panic!("registered; stderr:\n{}", wrapper.stderr()));
    assert_eq!(service["name"], "files-1");
    // Three TTLs: every answer has it.
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < until {
        let answer = query_udp(server.dns, "files.svc.local.", RecordType::A, None).await;
        assert_eq!(
            ipv4s(&answer.answers),
            ["127.0.0.1".parse::<std::net::Ipv4Addr>().unwrap()],
            "{}",
            wrapper.stderr()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wrapper.signal("TERM");
    let code = wrapper.exit_code().await;
    // Gone from DNS the moment the wrapper has exited.
    let answer = query_udp(server.dns, "files.svc.local.", RecordType::A, None).await;
    assert_eq!(
        answer.metadata.response_code,
        ResponseCode::NXDomain,
        "{}",
        wrapper.stderr()
    );
    // python3 dies of the SIGTERM passed on to it: 128 + 15.
    assert_eq!(code, Some(143), "{}", wrapper.stderr());
    assert!(server.list("").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_childs_exit_code_passes_through() {
    let server = TestServer::start().await;
    for (command, code) in [
        (&["sh", "-c", "exit 7"][..], 7),
        (&["true"], 0),
        (&["sh", "-c", "kill -KILL $$"], 137),
        (&["/nonexistent/program"], 127),
    ] {
        let addr = format!("http://{}", server.admin);
        let mut args = vec![
            "run", "--addr", &addr, "--type", "job", "--port", "80", "--",
        ];
        args.extend(command);
        let outcome = finish(&mut signpost(&args)).await;
        outcome.expect(code);
    }
    assert!(
        server.list("").await.is_empty(),
        "each deregistered on its way out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_passed_on_and_the_default_name_is_host_and_port() {
    let server = TestServer::start().await;
    for (signal, code) in [("HUP", 42), ("INT", 43)] {
        let script =
            format!("trap 'exit {code}' {signal}; echo ready; while :; do sleep 0.1; done");
        let mut wrapper = run(
            server.admin,
            &["--type", "trap", "--port", "9", "--", "sh", "-c", &script],
        );
        assert!(
            wrapper.prints(&["ready"], Duration::from_secs(5)).await,
            "{}",
            wrapper.stderr()
        );
        let service = listed(&server, "trap", Duration::from_secs(5))
            .await
            .expect("registered");
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let name = service["name"].as_str().unwrap();
        assert!(
            name.ends_with("-9") && name.len() > 2,
            "{name} from {hostname}"
        );
        wrapper.signal(signal);
        assert_eq!(
            wrapper.exit_code().await,
            Some(code),
            "{}",
            wrapper.stderr()
        );
        assert!(server.list("").await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_registers_again_after_the_registry_restarts_empty() {
    let server = TestServer::start().await;
    let (admin, dns) = (server.admin, server.dns);
    let mut wrapper = run(
        admin,
        &[
            "--type", "job", "--name", "job-1", "--port", "80", "--ttl", "1", "--", "sleep", "30",
        ],
    );
    let before = listed(&server, "job", Duration::from_secs(5))
        .await
        .expect("registered");
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = TestServer::start_with(|config| {
        config.admin.listen = admin;
        config.dns.listen = dns;
    })
    .await;
    let after = listed(&server, "job", Duration::from_secs(5)).await;
    let after = after.unwrap_or_else(|| panic!("registered again; stderr:\n{}", wrapper.stderr()));
    assert_ne!(after["id"], before["id"]);
    assert!(
        wrapper.stderr().contains("registering again"),
        "{}",
        wrapper.stderr()
    );
    wrapper.signal("TERM");
    assert_eq!(wrapper.exit_code().await, Some(143));
    assert!(server.list("").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_starts_while_the_registry_is_down_and_is_registered_once_it_is_up() {
    let admin = closed_port();
    let mut wrapper = run(
        admin,
        &[
            "--type",
            "job",
            "--name",
            "job-1",
            "--port",
            "80",
            "--",
            "sh",
            "-c",
            "echo started; exec sleep 30",
        ],
    );
    assert!(
        wrapper.prints(&["started"], Duration::from_secs(5)).await,
        "{}",
        wrapper.stderr()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        wrapper.stderr().contains(&format!("http://{admin}")),
        "says what it tries: {}",
        wrapper.stderr()
    );
    let server = TestServer::start_with(|config| config.admin.listen = admin).await;
    let service = listed(&server, "job", Duration::from_secs(8)).await;
    assert!(
        service.is_some(),
        "registered once the registry is up: {}",
        wrapper.stderr()
    );
    wrapper.signal("TERM");
    assert_eq!(wrapper.exit_code().await, Some(143));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_port_registers_only_once_the_port_accepts() {
    let server = TestServer::start().await;
    let port = free_port();
    let mut wrapper = run(
        server.admin,
        &[
            "--type",
            "late",
            "--port",
            &port.to_string(),
            "--wait-port",
            "--",
            "sleep",
            "30",
        ],
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        server.list("").await.is_empty(),
        "not before the port opens"
    );
    let _listener =
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is still free");
    assert!(
        listed(&server, "late", Duration::from_secs(5))
            .await
            .is_some(),
        "{}",
        wrapper.stderr()
    );
    wrapper.signal("TERM");
    assert_eq!(wrapper.exit_code().await, Some(143));

    // Giving up: the child runs on, unregistered.
    let mut wrapper = run(
        server.admin,
        &[
            "--type",
            "never",
            "--port",
            &free_port().to_string(),
            "--wait-port",
            "--wait-timeout",
            "0.5",
            "--",
            "sleep",
            "30",
        ],
    );
    let gave_up = eventually(Duration::from_secs(5), || async {
        wrapper.stderr().contains("not registering")
    })
    .await;
    assert!(gave_up, "{}", wrapper.stderr());
    assert!(server.list("?type=never").await.is_empty());
    wrapper.signal("TERM");
    assert_eq!(wrapper.exit_code().await, Some(143));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_http_turns_the_instance_critical_while_the_childs_endpoint_fails() {
    let server = TestServer::start().await;
    let mut endpoint = Endpoint::start(Mode::Status(200)).await;
    let url = endpoint.url();
    let mut wrapper = run(
        server.admin,
        &[
            "--type",
            "checked",
            "--port",
            "80",
            "--check-http",
            &url,
            "--interval",
            "1",
            "--",
            "sleep",
            "30",
        ],
    );
    let health = |wanted: &'static str| {
        let server = &server;
        async move {
            eventually(Duration::from_secs(5), || async {
                server
                    .list("?type=checked")
                    .await
                    .first()
                    .is_some_and(|s| s["health"] == wanted)
            })
            .await
        }
    };
    assert!(health("passing").await, "{}", wrapper.stderr());
    endpoint.set(Mode::Status(500)).await;
    assert!(health("critical").await, "{}", wrapper.stderr());
    let service = server.list("?type=checked").await.remove(0);
    assert!(
        service["output"].as_str().unwrap().contains("500"),
        "{service}"
    );
    let answer = query_udp(server.dns, "checked.svc.local.", RecordType::A, None).await;
    assert!(answer.answers.is_empty(), "critical: out of DNS");
    endpoint.set(Mode::Status(200)).await;
    assert!(health("passing").await, "{}", wrapper.stderr());
    wrapper.signal("TERM");
    assert_eq!(wrapper.exit_code().await, Some(143));
}
