//! Several signpost nodes on one registry through etcd (`--store etcd:...`):
//! a real 3-member etcd on loopback ports in a temp dir (Debian's
//! `etcd-server`; these tests fail, they do not skip, when it is missing),
//! and two or three signpost nodes, in process on port 0 (or as child
//! processes where one must be killed with `kill -9`).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::access::Pki;
use crate::support::{
    Endpoint as CheckTarget, Mode, PORT_ZERO, Process, Registration, ScratchDir, TestServer,
    eventually, id_of, ipv4s,
};

/// A change through one node shows on every other node, with the same
/// id, and every node's `/v1/events` streams it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_any_node_shows_on_every_node() {
    let etcd = Etcd::start("changes").await;
    let (a, b, c) = (
        node(&etcd, "a").await,
        node(&etcd, "b").await,
        node(&etcd, "c").await,
    );
    let mut events_c = c
        .http
        .get(c.url("/v1/events"))
        .send()
        .await
        .expect("events stream");

    let web = Registration::new("web-1", "web", "10.0.0.5", 8080).ttl(30);
    let registered = a.register(&web).await;
    let id = id_of(&registered);
    for server in [&b, &c] {
        assert!(answers(server, "web", &[Ipv4Addr::new(10, 0, 0, 5)]).await);
        let (status, listed) = server.get(&format!("/v1/services/{id}")).await;
        assert_eq!((status, listed["id"].as_str()), (200, Some(id.as_str())));
    }

    // Replaced through C: the same id, everywhere.
    let (status, replaced) = c
        .try_register(&Registration::new("web-1", "web", "10.0.0.6", 8080).ttl(30))
        .await;
    assert_eq!((status, id_of(&replaced)), (200, id.clone()));
    assert!(answers(&a, "web", &[Ipv4Addr::new(10, 0, 0, 6)]).await);

    // Critical through B: out of A's answers; passing again: back.
    let (status, _) = b.heartbeat_reporting(&id, "critical").await;
    assert_eq!(status, 200);
    assert!(answers(&a, "web", &[]).await);
    assert_eq!(
        a.get_ok(&format!("/v1/services/{id}")).await["health"],
        "critical"
    );
    b.heartbeat_reporting(&id, "passing").await;
    assert!(answers(&a, "web", &[Ipv4Addr::new(10, 0, 0, 6)]).await);

    // Deregistered through B: gone from A.
    assert_eq!(b.deregister(&id).await.0, 204);
    assert!(a.gone_within(&id, PROPAGATION).await);
    assert!(answers(&a, "web", &[]).await);
    assert_eq!(a.deregister(&id).await.0, 404, "once");

    // Two nodes register one name at once: one id wins, on every node.
    for round in 0..5 {
        let name = format!("race-{round}");
        let body = Registration::new(&name, "race", "10.0.1.1", 80).ttl(30);
        let (one, two) = tokio::join!(a.try_register(&body), b.try_register(&body));
        assert_eq!(
            id_of(&one.1),
            id_of(&two.1),
            "round {round}: {one:?} {two:?}"
        );
        let mut statuses = [one.0, two.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [200, 201],
            "one created it, the other replaced it"
        );
        assert!(
            eventually(PROPAGATION, || async {
                c.list("?type=race").await.len() == round + 1
            })
            .await
        );
    }

    // C's event stream saw every change made through A and B.
    let mut text = String::new();
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(chunk)) = events_c.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.matches("\"type\":\"register\"").count() >= 2 + 5 {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "events on C: {text}");
    for kind in ["register", "health", "deregister"] {
        assert!(
            text.contains(&format!("\"type\":\"{kind}\"")),
            "{kind} in {text}"
        );
    }
    for server in [a, b, c] {
        server.stop().await;
    }
}

/// Heartbeats through B alone keep an instance registered through A
/// alive on A (and C) past several TTLs; when they stop it leaves every
/// node on time, the expiry decided once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_through_any_node_keep_an_instance_alive_everywhere() {
    let etcd = Etcd::start("beats").await;
    let (a, b, c) = (
        node(&etcd, "a").await,
        node(&etcd, "b").await,
        node(&etcd, "c").await,
    );
    let id = id_of(
        &a.register(&Registration::new("api-1", "api", "10.0.0.7", 80).ttl(1))
            .await,
    );
    for server in [&b, &c] {
        assert!(answers(server, "api", &[Ipv4Addr::new(10, 0, 0, 7)]).await);
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3500) {
        let (status, _) = b.heartbeat(&id, None).await;
        assert_eq!(status, 200);
        for server in [&a, &c] {
            let answer = server.query("api.svc.local", RecordType::A).await;
            assert_eq!(
                answer.answers.len(),
                1,
                "renewed through B, at {:?}",
                started.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let stopped = Instant::now();
    // TTL 1 s: out of every node's answers at once when it lapses (decided
    // at answer time), and removed (one expiry, by the leader) within 1 s.
    for server in [&a, &b, &c] {
        assert!(server.gone_within(&id, Duration::from_millis(2_000)).await);
    }
    assert!(
        stopped.elapsed() < Duration::from_millis(2_300),
        "{:?}",
        stopped.elapsed()
    );
    // Removed (one expiry, by the leader, applied by every node) within
    // 1 s after the lapse.
    let expired_everywhere = eventually(Duration::from_millis(1_500), || async {
        let mut expired = 0.0;
        for server in [&a, &b, &c] {
            expired += server.metric("signpost_expired_total").await.unwrap_or(0.0);
        }
        expired == 3.0
    })
    .await;
    assert!(expired_everywhere, "every node applied the one expiry");
    for server in [&a, &b, &c] {
        assert_eq!(server.heartbeat(&id, None).await.0, 404);
        assert_eq!(server.metric("signpost_instances").await, Some(0.0));
    }
    for server in [a, b, c] {
        server.stop().await;
    }
}

/// `kill -9` of one etcd member in the middle of 1 000 registrations
/// spread over two nodes: every acknowledged registration is on every
/// node, and on a node started afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_member_killed_mid_burst_loses_no_acknowledged_registration() {
    let mut etcd = Etcd::start("burst").await;
    let (a, b) = (node(&etcd, "a").await, node(&etcd, "b").await);
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let mut writers = Vec::new();
    for (n, server) in [&a, &b].into_iter().enumerate() {
        let api = server.api.clone();
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            let mut refused = 0;
            for i in 0..500 {
                let name = format!("n{n}-{i}");
                let body = Registration::new(&name, "burst", "10.1.0.1", 80).ttl(300);
                let body = serde_json::to_value(&body).unwrap();
                match api
                    .call(reqwest::Method::POST, "/v1/services", Some(&body))
                    .await
                {
                    Ok((201, reply)) => {
                        acknowledged.lock().unwrap().insert(id_of(&reply));
                    }
                    _ => refused += 1,
                }
            }
            refused
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    etcd.kill_9(0);
    let mut refused = 0;
    for writer in writers {
        refused += writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 500,
        "{} acknowledged, {refused} refused",
        acknowledged.len()
    );
    let c = node(&etcd, "c").await;
    for server in [&a, &b, &c] {
        let listed: BTreeSet<String> = server.list("?type=burst").await.iter().map(id_of).collect();
        let missing: Vec<_> = acknowledged.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged but missing",
            missing.len()
        );
    }
    for server in [a, b, c] {
        server.stop().await;
    }
}

/// `kill -9` of a signpost node: the others keep serving its
/// registrations and take their heartbeats; leadership (who expires)
/// moves, so they still expire when heartbeats stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_takes_nothing_with_it() {
    let etcd = Etcd::start("nodekill").await;
    let config = etcd.config_file("x");
    let mut args = PORT_ZERO.to_vec();
    args.extend(["--config", config.to_str().unwrap()]);
    // The child starts first, so it leads: it is the one expiring.
    let mut x = Process::start(&args).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (b, c) = (node(&etcd, "b").await, node(&etcd, "c").await);
    let id = id_of(
        &x.register(&Registration::new("db-1", "db", "10.0.0.9", 5432).ttl(2))
            .await,
    );
    for server in [&b, &c] {
        assert!(answers(server, "db", &[Ipv4Addr::new(10, 0, 0, 9)]).await);
    }
    x.kill_9().await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        assert_eq!(b.heartbeat(&id, None).await.0, 200);
        assert_eq!(
            c.query("db.svc.local", RecordType::A).await.answers.len(),
            1
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        c.gone_within(&id, Duration::from_secs(4)).await,
        "expired by the new leader"
    );
    assert!(b.gone_within(&id, Duration::from_secs(1)).await);
    for server in [b, c] {
        server.stop().await;
    }
}

/// Every etcd member down: DNS goes on answering past the TTLs (fail
/// static), writes answer 503 naming the store within the request
/// timeout, `/v1/health` says degraded. etcd back: writes work again and
/// every node lists the same set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_gone_nodes_fail_static_and_recover() {
    let mut etcd = Etcd::start("down").await;
    let (a, b) = (node(&etcd, "a").await, node(&etcd, "b").await);
    let id = id_of(
        &a.register(&Registration::new("web-1", "web", "10.0.0.5", 80).ttl(2))
            .await,
    );
    assert!(answers(&b, "web", &[Ipv4Addr::new(10, 0, 0, 5)]).await);
    for member in 0..3 {
        etcd.kill_9(member);
    }
    let down = Instant::now();
    let (status, body) = b
        .try_register(&Registration::new("web-2", "web", "10.0.0.6", 80))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("etcd:http://127.0.0.1"),
        "{body}"
    );
    assert!(
        down.elapsed() <= Duration::from_secs(3),
        "{:?}",
        down.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(3), || async {
            b.get("/v1/health").await.0 == 503
        })
        .await
    );
    let (_, health) = b.get("/v1/health").await;
    assert_eq!(health["status"], "degraded");
    assert!(
        health["reason"].as_str().unwrap().contains("etcd"),
        "{health}"
    );
    assert_eq!(b.metric("signpost_store_degraded").await, Some(1.0));
    tokio::time::sleep(Duration::from_secs(3)).await;
    for server in [&a, &b] {
        let answer = server.query("web.svc.local", RecordType::A).await;
        assert_eq!(answer.answers.len(), 1, "still served, 2 s TTL long past");
    }
    assert_eq!(a.heartbeat(&id, None).await.0, 503);

    for member in 0..3 {
        etcd.restart(member);
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.get("/v1/health").await.0 == 200 && b.get("/v1/health").await.0 == 200
        })
        .await
    );
    // A fresh TTL window: a heartbeat within it keeps the instance.
    assert_eq!(a.heartbeat(&id, None).await.0, 200);
    b.register(&Registration::new("web-3", "web", "10.0.0.7", 80).ttl(30))
        .await;
    assert_eq!(names(a.list("").await), ["web-1", "web-3"]);
    assert_eq!(names(b.list("").await), ["web-1", "web-3"]);
    for server in [a, b] {
        server.stop().await;
    }
}

/// A node whose only member goes away resumes its watch from the revision
/// it saw, when the member comes back; after a compaction of those
/// revisions, it reads everything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_resumes_after_a_disconnect_and_reloads_after_a_compaction() {
    let mut etcd = Etcd::start("watch").await;
    let a = TestServer::start_with(|config| {
        configure(config, &etcd, "a");
        config.store.url = format!("etcd:{}", etcd.urls[0]);
    })
    .await;
    let b = TestServer::start_with(|config| {
        configure(config, &etcd, "b");
        config.store.url = format!("etcd:{},{}", etcd.urls[1], etcd.urls[2]);
    })
    .await;
    let first = id_of(
        &b.register(&Registration::new("one", "web", "10.0.0.1", 80).ttl(60))
            .await,
    );
    assert_eq!(a.list("").await.len(), 1);

    for compact in [false, true] {
        etcd.kill_9(0);
        assert!(
            eventually(Duration::from_secs(3), || async {
                a.get("/v1/health").await.0 == 503
            })
            .await
        );
        let name = if compact { "three" } else { "two" };
        b.register(&Registration::new(name, "web", "10.0.0.2", 80).ttl(60))
            .await;
        if compact {
            b.deregister(&first).await;
            etcd.compact(1).await;
        }
        etcd.restart(0);
        let expected = if compact {
            ["three", "two"]
        } else {
            ["one", "two"]
        };
        assert!(
            eventually(Duration::from_secs(10), || async {
                a.get("/v1/health").await.0 == 200 && names(a.list("").await) == expected
            })
            .await,
            "compact {compact}: {:?}",
            a.list("").await
        );
    }
    for server in [a, b] {
        server.stop().await;
    }
}

/// An active check runs on one node of the cluster; its verdict shows on
/// every node; when that node is killed (`kill -9`), another takes the
/// check over within two check intervals (3 s each: a dead node's etcd
/// lease lapses 2 to 2.5 s after its last keep-alive, and the others look
/// again every interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_runs_once_per_cluster_and_moves_when_its_owner_is_killed() {
    let etcd = Etcd::start("checks").await;
    let mut target = CheckTarget::start(Mode::Status(200)).await;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let config = etcd.config_file(name);
        let mut args = PORT_ZERO.to_vec();
        args.extend(["--config", config.to_str().unwrap()]);
        nodes.push(Process::start(&args).await);
    }
    let interval = Duration::from_secs(3);
    let body = Registration::new("web-1", "web", "10.0.0.5", 80)
        .ttl(30)
        .check(json!({"http": target.url(), "interval": 3, "timeout": 1}));
    let id = id_of(&nodes[0].register(&body).await);
    let runs = |node: &Process| {
        let api = node.api.clone();
        async move { api.metric("signpost_checks_total").await.unwrap_or(0.0) }
    };
    // The first run is at a random point of the first interval.
    tokio::time::sleep(interval + Duration::from_millis(500)).await;
    let counts: Vec<f64> = futures_util::future::join_all(nodes.iter().map(runs)).await;
    let owners: Vec<usize> = (0..3).filter(|n| counts[*n] > 0.0).collect();
    assert_eq!(owners.len(), 1, "one node runs the check: {counts:?}");
    let total = counts.iter().sum::<f64>() as usize;
    assert!(
        target.requests().abs_diff(total) <= 1,
        "{} requests, {counts:?}",
        target.requests()
    );

    // Failing: every node serves it as critical.
    target.set(Mode::Status(500)).await;
    for node in &nodes {
        let path = format!("/v1/services/{id}");
        assert!(
            eventually(2 * interval, || async {
                node.get_ok(&path).await["health"] == "critical"
            })
            .await
        );
    }
    target.set(Mode::Status(200)).await;

    let mut owner = nodes.remove(owners[0]);
    let before: Vec<f64> = futures_util::future::join_all(nodes.iter().map(runs)).await;
    owner.kill_9().await;
    let killed = Instant::now();
    let took_over = eventually(2 * interval, || async {
        let now: Vec<f64> = futures_util::future::join_all(nodes.iter().map(runs)).await;
        (0..2).any(|n| now[n] > before[n])
    })
    .await;
    assert!(
        took_over,
        "no node took the check over within two intervals"
    );
    let moved_after = killed.elapsed();
    tokio::time::sleep(interval).await;
    let after: Vec<f64> = futures_util::future::join_all(nodes.iter().map(runs)).await;
    let running: Vec<usize> = (0..2).filter(|n| after[*n] > before[*n]).collect();
    assert_eq!(
        running.len(),
        1,
        "one node runs it: {before:?} {after:?} ({moved_after:?})"
    );
    // And it is passing again everywhere, by the new owner's verdict.
    for node in &nodes {
        let path = format!("/v1/services/{id}");
        assert_eq!(node.get_ok(&path).await["health"], "passing");
    }
    for node in &mut nodes {
        node.stop().await;
    }
}

// ---------------------------------------------------------------------------
// The etcd cluster and the nodes.

/// A 3-member etcd on loopback ports, its data in a temp dir (on tmpfs
/// when there is one); every member killed when dropped.
pub(crate) struct Etcd {
    pub(crate) urls: Vec<String>,
    peers: Vec<String>,
    dir: ScratchDir,
    members: Vec<Option<Child>>,
    /// The key prefix of this test's nodes.
    prefix: String,
    tls: Option<EtcdTls>,
}

/// PEM files of an etcd whose client URLs are https and which asks every
/// client for a certificate signed by `ca`.
struct EtcdTls {
    ca: String,
    /// The members' certificate (server and client: etcd's own gateway
    /// calls its gRPC server with it).
    member: (String, String),
    /// What etcdctl presents.
    client: (String, String),
}

impl Etcd {
    pub(crate) async fn start(tag: &str) -> Etcd {
        Etcd::launch(tag, None).await
    }

    /// Like [`Etcd::start`], with TLS on the client URLs and client
    /// certificates required (`pki`'s CA; the members present its `peer`
    /// certificate).
    async fn start_with_tls(tag: &str, pki: &Pki) -> Etcd {
        let tls = EtcdTls {
            ca: pki.path("ca.pem"),
            member: (pki.path("peer.pem"), pki.path("peer-key.pem")),
            client: (pki.path("client.pem"), pki.path("client-key.pem")),
        };
        Etcd::launch(tag, Some(tls)).await
    }

    async fn launch(tag: &str, tls: Option<EtcdTls>) -> Etcd {
        let dir = ScratchDir::new(&format!("etcd-{tag}"));
        let ports: Vec<u16> = free_ports(6);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let urls = (0..3)
            .map(|n| format!("{scheme}://127.0.0.1:{}", ports[n]))
            .collect();
        let peers = (0..3)
            .map(|n| format!("http://127.0.0.1:{}", ports[3 + n]))
            .collect();
        let mut etcd = Etcd {
            urls,
            peers,
            dir,
            members: vec![None, None, None],
            prefix: format!("/signpost-test/{tag}/"),
            tls,
        };
        for member in 0..3 {
            etcd.restart(member);
        }
        etcd.wait_healthy().await;
        etcd
    }

    /// `etcd:URL,URL,URL`.
    pub(crate) fn store_url(&self) -> String {
        format!("etcd:{}", self.urls.join(","))
    }

    fn data_dir(&self, member: usize) -> PathBuf {
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.join(self.dir.path().file_name().unwrap())
        } else {
            self.dir.path().to_path_buf()
        };
        base.join(format!("m{member}"))
    }

    /// Starts member `n` (again: its data dir is kept).
    pub(crate) fn restart(&mut self, member: usize) {
        let cluster: Vec<String> = (0..3).map(|n| format!("m{n}={}", self.peers[n])).collect();
        let log = std::fs::File::create(self.dir.path().join(format!("m{member}.log"))).unwrap();
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .args(["--trusted-ca-file", &tls.ca, "--client-cert-auth"])
                .args(["--cert-file", &tls.member.0, "--key-file", &tls.member.1]);
        }
        let child = command
            .args(["--name", &format!("m{member}")])
            .arg("--data-dir")
            .arg(self.data_dir(member))
            .args(["--listen-client-urls", &self.urls[member]])
            .args(["--advertise-client-urls", &self.urls[member]])
            .args(["--listen-peer-urls", &self.peers[member]])
            .args(["--initial-advertise-peer-urls", &self.peers[member]])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("etcd runs: the cluster tests need etcd 3.4+ on PATH (Debian: apt-get install etcd-server)");
        self.members[member] = Some(child);
    }

    /// `kill -9` of member `n`.
    pub(crate) fn kill_9(&mut self, member: usize) {
        if let Some(mut child) = self.members[member].take() {
            let _ = child.start_kill();
            // Reaped in the background by tokio; SIGKILL leaves no time
            // for anything else.
        }
    }

    /// Runs `etcdctl args` against the cluster (over TLS with the client
    /// certificate when the cluster asks for one, as `user` when given):
    /// whether it succeeded, and what it printed.
    async fn etcdctl(&self, args: &[&str], user: Option<&str>) -> (bool, String) {
        let mut command = Command::new("etcdctl");
        command.env("ETCDCTL_API", "3");
        command.arg(format!("--endpoints={}", self.urls.join(",")));
        if let Some(tls) = &self.tls {
            command.args(["--cacert", &tls.ca]).args([
                "--cert",
                &tls.client.0,
                "--key",
                &tls.client.1,
            ]);
        }
        if let Some(user) = user {
            command.args(["--user", user]);
        }
        let output = command
            .args(args)
            .output()
            .await
            .expect("etcdctl runs (Debian: apt-get install etcd-client)");
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), said)
    }

    /// Waits until the cluster commits a write.
    async fn wait_healthy(&self) {
        if self.tls.is_some() {
            let ok = eventually(Duration::from_secs(15), || async {
                self.etcdctl(&["put", "health", "ok"], None).await.0
            })
            .await;
            assert!(
                ok,
                "etcd did not come up; logs in {}",
                self.dir.path().display()
            );
            return;
        }
        let http = reqwest::Client::new();
        let ok = eventually(Duration::from_secs(15), || async {
            let put = json!({"key": "aGVhbHRo", "value": "b2s="});
            for url in &self.urls {
                let answer = http
                    .post(format!("{url}/v3/kv/put"))
                    .json(&put)
                    .send()
                    .await;
                if answer.is_ok_and(|a| a.status().is_success()) {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            ok,
            "etcd did not come up; logs in {}",
            self.dir.path().display()
        );
    }

    /// Compacts the history up to the current revision (through any member
    /// that answers), as `etcdctl compact` does.
    pub(crate) async fn compact(&self, _physical: u8) {
        let http = reqwest::Client::new();
        for url in &self.urls {
            let Ok(answer) = http
                .post(format!("{url}/v3/kv/range"))
                .json(&json!({"key": "AA=="}))
                .send()
                .await
            else {
                continue;
            };
            let Ok(body) = answer.json::<Value>().await else {
                continue;
            };
            let revision = body["header"]["revision"].as_str().unwrap().to_string();
            let compacted = http
                .post(format!("{url}/v3/kv/compaction"))
                .json(&json!({"revision": revision, "physical": true}))
                .send()
                .await;
            assert!(
                compacted.is_ok_and(|a| a.status().is_success()),
                "compaction"
            );
            return;
        }
        panic!("no member answered to compact");
    }

    /// A config file for a child node named `node`.
    pub(crate) fn config_file(&self, node: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{node}.toml"));
        let text = format!(
            "[store]\nurl = {:?}\n[store.etcd]\nnode = {node:?}\nprefix = {:?}\n",
            self.store_url(),
            self.prefix
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for member in 0..3 {
            self.kill_9(member);
        }
        if let Some(name) = self.dir.path().file_name() {
            let _ = std::fs::remove_dir_all(std::path::Path::new("/dev/shm").join(name));
        }
    }
}

/// How long a change through one node may take to show on another here:
/// `bench/cluster.sh` measures the real delay (milliseconds); a loaded
/// test machine is allowed more.
const PROPAGATION: Duration = Duration::from_secs(1);

/// Whether `server` answers `<service_type>.svc.local A` with `expected`
/// (in any order) within [`PROPAGATION`].
async fn answers(server: &TestServer, service_type: &str, expected: &[Ipv4Addr]) -> bool {
    let name = format!("{service_type}.svc.local");
    let mut expected = expected.to_vec();
    expected.sort();
    eventually(PROPAGATION, || async {
        let mut got = ipv4s(&server.query(&name, RecordType::A).await.answers);
        got.sort();
        got == expected
    })
    .await
}

/// The names in a service list, in its order.
fn names(list: Vec<Value>) -> Vec<String> {
    list.iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// `count` loopback ports free right now.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// The settings of a node named `name` of `etcd`'s cluster.
fn configure(config: &mut signpost::Config, etcd: &Etcd, name: &str) {
    config.store.url = etcd.store_url();
    config.store.etcd.node = name.into();
    config.store.etcd.prefix = etcd.prefix.clone();
    config.store.etcd.request_timeout_ms = 1_500;
    config.store.etcd.dial_timeout_ms = 500;
}

/// A node of `etcd`'s cluster, in process.
async fn node(etcd: &Etcd, name: &str) -> TestServer {
    TestServer::start_with(|config| configure(config, etcd, name)).await
}

/// Owners travel with the registration through etcd: a register token's
/// instance, registered through A, is its own on B too (it may heartbeat
/// and deregister it there), and another register token may not touch it
/// on any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_are_kept_in_etcd_so_every_node_knows_them() {
    let etcd = Etcd::start("owners").await;
    let with_tokens = |name: &'static str| {
        let etcd = &etcd;
        TestServer::start_with(move |config| {
            configure(config, etcd, name);
            config.admin.tokens = ["team-a", "team-b"]
                .map(|team| signpost::config::TokenConfig {
                    name: team.into(),
                    sha256: signpost::access::sha256(format!("{team}-secret").as_bytes())
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                    role: "register".into(),
                    types: vec!["web".into()],
                })
                .to_vec();
        })
    };
    let (a, b) = (with_tokens("a").await, with_tokens("b").await);
    let (team_a_on_a, team_a_on_b) = (a.with_token("team-a-secret"), b.with_token("team-a-secret"));
    let team_b_on_b = b.with_token("team-b-secret");
    let registered = team_a_on_a
        .register(&Registration::new("web-1", "web", "10.0.0.5", 8080).ttl(30))
        .await;
    let id = id_of(&registered);
    assert_eq!(registered["owner"], "team-a");
    assert!(
        eventually(Duration::from_secs(5), || async {
            team_a_on_b.get(&format!("/v1/services/{id}")).await.1["owner"] == "team-a"
        })
        .await,
        "B knows the owner"
    );
    assert_eq!(team_a_on_b.heartbeat(&id, None).await.0, 200);
    assert_eq!(team_b_on_b.heartbeat(&id, None).await.0, 403);
    assert_eq!(team_b_on_b.deregister(&id).await.0, 403);
    let (status, body) = team_b_on_b
        .try_register(&Registration::new("web-1", "web", "10.0.0.9", 8080).ttl(30))
        .await;
    assert_eq!(status, 403, "no takeover through another node: {body}");
    assert_eq!(team_a_on_b.deregister(&id).await.0, 204);
}

/// etcd as it is run in production: TLS with client certificates, and
/// authentication, signpost's user allowed its prefix only. Nodes given
/// the CA, a client certificate (with a CommonName, as etcd's own guides
/// make them, or without) and that user's password share the registry by
/// every path: the start-up load, writes, leases and the watch. A wrong
/// password, or no client certificate, stops a node at start, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_an_etcd_with_tls_client_certificates_and_a_password() {
    let pki = Pki::new();
    let etcd = Etcd::start_with_tls("secured", &pki).await;
    for command in [
        vec!["user", "add", "root:root-pw"],
        vec!["role", "add", "signpost"],
        vec![
            "role",
            "grant-permission",
            "signpost",
            "--prefix=true",
            "readwrite",
            &etcd.prefix,
        ],
        vec!["user", "add", "signpost:signpost-pw"],
        vec!["user", "grant-role", "signpost", "signpost"],
        vec!["auth", "enable"],
    ] {
        let (ok, said) = etcd.etcdctl(&command, None).await;
        assert!(ok, "etcdctl {command:?}: {said}");
    }
    // `cert`: the client certificate's name in `pki` ("" for none).
    let secured = |config: &mut signpost::Config, name: &str, password: &str, cert: &str| {
        configure(config, &etcd, name);
        config.store.etcd.username = "signpost".into();
        config.store.etcd.password = password.into();
        config.store.etcd.ca = pki.path("ca.pem");
        if !cert.is_empty() {
            config.store.etcd.cert = pki.path(&format!("{cert}.pem"));
            config.store.etcd.key = pki.path(&format!("{cert}-key.pem"));
        }
    };

    let a = TestServer::start_with(|c| secured(c, "a", "signpost-pw", "client")).await;
    let web_1 = id_of(
        &a.register(&Registration::new("web-1", "web", "10.0.0.5", 8080).ttl(30))
            .await,
    );
    // B reads web-1 in its start-up load, and follows from there.
    let b = TestServer::start_with(|c| secured(c, "b", "signpost-pw", "named")).await;
    assert_eq!(names(b.list("?type=web").await), ["web-1"]);
    let web_2 = id_of(
        &b.register(&Registration::new("web-2", "web", "10.0.0.6", 8080).ttl(30))
            .await,
    );
    let both = [Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6)];
    assert!(answers(&a, "web", &both).await, "B's registration on A");
    assert_eq!(b.heartbeat(&web_1, None).await.0, 200);
    assert_eq!(a.heartbeat(&web_2, None).await.0, 200);
    assert_eq!(b.deregister(&web_1).await.0, 204);
    assert!(
        answers(&a, "web", &[Ipv4Addr::new(10, 0, 0, 6)]).await,
        "B's deregistration on A"
    );
    let health = a.get("/v1/health").await;
    assert_eq!(health.0, 200, "{}", health.1);

    // A wrong password, and no client certificate: each stops the start,
    // saying why.
    for (what, password, cert, expected) in [
        (
            "a wrong password",
            "wrong",
            "client",
            "authentication failed",
        ),
        (
            "no client certificate",
            "signpost-pw",
            "",
            "store.etcd.cert is set",
        ),
    ] {
        let mut config = signpost::Config::default();
        config.dns.listen = "127.0.0.1:0".parse().unwrap();
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        secured(&mut config, "c", password, cert);
        // One try: a certificate refused reads like a member unreachable,
        // which a starting node otherwise waits out.
        config.store.etcd.start_timeout_ms = 0;
        let settings = config.validate().expect("valid settings");
        let started =
            tokio::time::timeout(Duration::from_secs(10), signpost::Server::bind(settings))
                .await
                .unwrap_or_else(|_| panic!("with {what}, the start gives up within 10 s"));
        let Err(error) = started else {
            panic!("a node with {what} started");
        };
        let error = error.to_string();
        assert!(
            error.to_lowercase().contains(&expected.to_lowercase()),
            "with {what}: {error}"
        );
    }
    a.stop().await;
    b.stop().await;
}

/// A check that waits for a slot holds its instance's lifetime on every
/// node, not only on the node that runs it: the leader, which expires,
/// may be another node, with slots to spare. A's slots are all held by
/// checks against a host that never answers, so A's share of the honest
/// checks waits for seconds at a time; B leads (it started first) and has
/// room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_waiting_for_a_slot_holds_its_instance_on_every_node() {
    use crate::checks::{checked, register_spam, silent_host};
    let etcd = Etcd::start("held").await;
    let b = node(&etcd, "b").await;
    let a = TestServer::start_with(|config| {
        configure(config, &etcd, "a");
        config.checks.max_in_flight = 2;
        config.checks.max_in_flight_per_target = 2;
    })
    .await;
    let (_silent, url) = silent_host();
    register_spam(&a, &url, 200).await;
    let endpoint = CheckTarget::start(Mode::Status(200)).await;
    let mut ids = Vec::new();
    for n in 1..=12 {
        let check = json!({"http": endpoint.url(), "interval": 1, "timeout": 1});
        // Kept alive by its check alone: no heartbeat, a 2 s TTL.
        let service = a.register(&checked(&format!("h{n}"), n, 2, check)).await;
        ids.push(id_of(&service));
    }
    // Checks are shared out by hashing ids over the nodes: A owns some of
    // these 12 (all but 1 time in 4 096), and those wait behind the spam.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for node in [&a, &b] {
        for id in &ids {
            let (status, body) = node.get(&format!("/v1/services/{id}")).await;
            assert_eq!(status, 200, "still registered after 3 TTLs: {body}");
        }
    }
    a.stop().await;
    b.stop().await;
}

/// A node started while etcd is down waits for it, answering nothing
/// meanwhile, and starts with the whole registry once etcd is back: a
/// machine's boot, or a whole site's restart, brings them up in any order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_etcd_waits_for_it() {
    let mut etcd = Etcd::start("late").await;
    let a = node(&etcd, "a").await;
    let web_1 = id_of(
        &a.register(&Registration::new("web-1", "web", "10.0.0.5", 8080).ttl(60))
            .await,
    );
    a.stop().await;
    for member in 0..3 {
        etcd.kill_9(member);
    }
    let (url, prefix) = (etcd.store_url(), etcd.prefix.clone());
    let started = Instant::now();
    let starting = TestServer::start_with(move |config| {
        config.store.url = url;
        config.store.etcd.node = "b".into();
        config.store.etcd.prefix = prefix;
        config.store.etcd.request_timeout_ms = 1_500;
        config.store.etcd.dial_timeout_ms = 500;
    });
    let etcd_back = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        for member in 0..3 {
            etcd.restart(member);
        }
    };
    let (b, ()) = tokio::join!(starting, etcd_back);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "B started before etcd was back"
    );
    let (status, body) = b.get(&format!("/v1/services/{web_1}")).await;
    assert_eq!(status, 200, "B loaded the registry: {body}");
    assert!(answers(&b, "web", &[Ipv4Addr::new(10, 0, 0, 5)]).await);
    b.stop().await;
}
