//! The SQLite store (SPEC §5) seen from outside, with the real binary as a
//! child process: `kill -9` in the middle of a burst loses no acknowledged
//! change, real write faults (a full filesystem, a removed file) are answered
//! 503 and change nothing, restored instances answer DNS at once and get one
//! fresh TTL window, and a file that is not ours is refused untouched.
//!
//! Every test has its own temporary directory and its own ports (port 0);
//! every wait is bounded.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::rr::{RData, RecordType};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{eventually, query_udp};

const BIN: &str = env!("CARGO_BIN_EXE_signpost");

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "signpost-store-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("can create a temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// `sqlite:<dir>/signpost.db` and the path it names.
    fn store(&self) -> (String, PathBuf) {
        let db = self.0.join("signpost.db");
        (format!("sqlite:{}", db.display()), db)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small tmpfs mounted on a directory, unmounted when dropped (also when
/// the test panics). Declare it before the [`Signpost`] using it, so the
/// process is gone before the unmount.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match output {
            Ok(output) if output.status.success() => Tmpfs(dir.to_path_buf()),
            Ok(output) => panic!(
                "cannot mount a tmpfs on {} to inject a full disk; this test needs root \
                 (CAP_SYS_ADMIN), as it has in CI: {}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => panic!("cannot run mount(8) to inject a full disk: {error}"),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

/// Writes zeros to `path` until the filesystem says ENOSPC; returns the
/// bytes written.
fn fill_filesystem(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("can create the filler file");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => panic!("write returned 0 before the filesystem was full"),
            Ok(n) => written += n as u64,
            Err(error) if error.raw_os_error() == Some(28) => return written,
            Err(error) => panic!("unexpected error filling the filesystem: {error}"),
        }
        assert!(
            written < 64 << 20,
            "filler grew past 64 MiB: not a small tmpfs?"
        );
    }
}

/// The admin API of one process; cheap to clone into client tasks.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    admin: SocketAddr,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("http://{}/v1{path}", self.admin)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Result<(u16, Value)> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    async fn register(
        &self,
        name: &str,
        kind: &str,
        host: &str,
        ttl: u32,
    ) -> reqwest::Result<(u16, Value)> {
        let body = json!({"name": name, "type": kind, "host": host, "port": 8080, "ttl": ttl});
        self.send(self.http.post(self.url("/services")).json(&body))
            .await
    }

    /// Registers, asserting 201; returns the id.
    async fn must_register(&self, name: &str, kind: &str, host: &str, ttl: u32) -> String {
        let (status, body) = self
            .register(name, kind, host, ttl)
            .await
            .expect("admin api answers");
        assert_eq!(status, 201, "register {name}: {body}");
        body["id"].as_str().expect("service has an id").to_string()
    }

    /// A heartbeat; `status` `None` sends no body.
    async fn heartbeat(&self, id: &str, status: Option<&str>) -> reqwest::Result<(u16, Value)> {
        let mut request = self
            .http
            .put(self.url(&format!("/services/{id}/heartbeat")));
        if let Some(status) = status {
            request = request.json(&json!({ "status": status }));
        }
        self.send(request).await
    }

    async fn deregister(&self, id: &str) -> reqwest::Result<(u16, Value)> {
        self.send(self.http.delete(self.url(&format!("/services/{id}"))))
            .await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(self.url(path)))
            .await
            .expect("admin api answers")
    }

    /// Every listed instance, by id.
    async fn services(&self) -> HashMap<String, Value> {
        let (status, body) = self.get("/services").await;
        assert_eq!(status, 200, "{body}");
        body["services"]
            .as_array()
            .expect("services is a list")
            .iter()
            .map(|s| (s["id"].as_str().unwrap().to_string(), s.clone()))
            .collect()
    }
}

/// A running `signpost` process, killed (and reaped) when dropped.
struct Signpost {
    child: Child,
    dns: SocketAddr,
    api: Api,
    log: Arc<Mutex<Vec<String>>>,
}

/// `--dns-listen` and `--admin-listen` on port 0.
const PORT_ZERO: [&str; 4] = [
    "--dns-listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
];

impl Signpost {
    /// Starts the binary in `cwd` with `--store store` (none: the default)
    /// and waits for both listening lines.
    async fn start(cwd: &Path, store: Option<&str>) -> Signpost {
        let mut command = Command::new(BIN);
        command.args(PORT_ZERO);
        if let Some(store) = store {
            command.args(["--store", store]);
        }
        let mut child = command
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .env_remove("SIGNPOST_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
        {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
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
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Signpost {
            child,
            dns: dns.unwrap(),
            api: Api {
                http,
                admin: admin.unwrap(),
            },
            log,
        }
    }

    fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends `signal` with kill(1) and waits for the exit; returns the code
    /// (`None` when killed by a signal).
    async fn signal(&mut self, signal: &str) -> Option<i32> {
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
        exit.code()
    }

    /// SIGTERM, asserting a clean exit.
    async fn stop(&mut self) {
        let code = self.signal("TERM").await;
        assert_eq!(
            code,
            Some(0),
            "clean exit on SIGTERM; log:\n{}",
            self.logs()
        );
    }

    /// The A records DNS serves for `kind` right now.
    async fn a_records(&self, kind: &str) -> BTreeSet<Ipv4Addr> {
        let answer = query_udp(self.dns, &format!("{kind}.svc.local."), RecordType::A, None).await;
        answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Signpost {
    fn drop(&mut self) {
        // Reap it here, so a tmpfs guard dropped next is not busy.
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

fn addresses(list: &[&str]) -> BTreeSet<Ipv4Addr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

/// `PRAGMA integrity_check` of the database at `path`.
fn integrity_check(path: &Path) -> String {
    let connection = Connection::open(path).expect("can open the database");
    let rows: Vec<String> = connection
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.join("; ")
}

/// The ids in the `instances` table of the database at `path`.
fn stored_ids(path: &Path, flags: OpenFlags) -> HashSet<String> {
    let connection = Connection::open_with_flags(path, flags).expect("can open the database");
    connection
        .prepare("SELECT id FROM instances")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

// ---------------------------------------------------------------------------
// kill -9 in the middle of a burst

/// What the client knows about one instance from the answers it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Acknowledged present with this health.
    Passing,
    Warning,
    /// Acknowledged deregistered.
    Gone,
    /// The last request on it got no answer: either outcome is allowed.
    Unsure,
}

/// One instance the client tracks: id, name, what it knows.
type Tracked = (String, String, Known);

/// What one client task did before the server died under it.
#[derive(Default)]
struct Churned {
    tracked: Vec<Tracked>,
    /// Registrations that got no answer: they may or may not exist.
    unanswered: Vec<String>,
    /// Answers that were neither success nor a cut connection.
    unexpected: Vec<String>,
    registered: usize,
    deregistered: usize,
    warned: usize,
}

/// Registers new names, deregisters and turns to "warning" instances it
/// owns, until a request fails (the server was killed).
async fn churn(
    api: Api,
    label: String,
    seed: u64,
    mut tracked: Vec<Tracked>,
    acks: Arc<AtomicUsize>,
) -> Churned {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Churned::default();
    for n in 0.. {
        let roll = rng.u8(..100);
        let present: Vec<usize> = (0..tracked.len())
            .filter(|&i| matches!(tracked[i].2, Known::Passing | Known::Warning))
            .collect();
        let passing: Vec<usize> = present
            .iter()
            .copied()
            .filter(|&i| tracked[i].2 == Known::Passing)
            .collect();
        if roll < 15 && !present.is_empty() {
            let i = present[rng.usize(..present.len())];
            match api.deregister(&tracked[i].0).await {
                Ok((204, _)) => {
                    tracked[i].2 = Known::Gone;
                    out.deregistered += 1;
                }
                Ok((status, body)) => {
                    tracked[i].2 = Known::Unsure;
                    out.unexpected
                        .push(format!("deregister {}: {status} {body}", tracked[i].1));
                    break;
                }
                Err(_) => {
                    tracked[i].2 = Known::Unsure;
                    break;
                }
            }
        } else if roll < 30 && !passing.is_empty() {
            let i = passing[rng.usize(..passing.len())];
            match api.heartbeat(&tracked[i].0, Some("warning")).await {
                Ok((200, _)) => {
                    tracked[i].2 = Known::Warning;
                    out.warned += 1;
                }
                Ok((status, body)) => {
                    tracked[i].2 = Known::Unsure;
                    out.unexpected
                        .push(format!("warning {}: {status} {body}", tracked[i].1));
                    break;
                }
                Err(_) => {
                    tracked[i].2 = Known::Unsure;
                    break;
                }
            }
        } else {
            let name = format!("{label}-{n}");
            match api.register(&name, "churn", "10.9.8.7", 3600).await {
                Ok((201, body)) => {
                    let id = body["id"].as_str().expect("service has an id");
                    tracked.push((id.to_string(), name, Known::Passing));
                    out.registered += 1;
                }
                Ok((status, body)) => {
                    out.unexpected
                        .push(format!("register {name}: {status} {body}"));
                    out.unanswered.push(name);
                    break;
                }
                Err(_) => {
                    out.unanswered.push(name);
                    break;
                }
            }
        }
        acks.fetch_add(1, Ordering::Relaxed);
    }
    out.tracked = tracked;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_no_acknowledged_change() {
    const ROUNDS: usize = 3;
    const TASKS: usize = 24;
    let seed = std::env::var("SIGNPOST_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (set SIGNPOST_TEST_SEED to repeat)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = TempDir::new("kill9");
    let (store, db) = dir.store();

    // Everything known so far, by id; carried across rounds.
    let mut model: HashMap<String, (String, Known)> = HashMap::new();
    let (mut registered, mut deregistered, mut warned) = (0, 0, 0);
    let mut server = Signpost::start(dir.path(), Some(&store)).await;
    for round in 0..ROUNDS {
        // Hand the instances still present to the tasks, round-robin, so
        // later rounds also deregister and warn what earlier rounds made.
        let mut owned: Vec<Vec<Tracked>> = vec![Vec::new(); TASKS];
        let mut live: Vec<_> = model
            .iter()
            .filter(|(_, (_, k))| matches!(k, Known::Passing | Known::Warning))
            .map(|(id, (name, k))| (id.clone(), name.clone(), *k))
            .collect();
        live.sort_by(|x, y| x.0.cmp(&y.0));
        for (i, entry) in live.into_iter().enumerate() {
            owned[i % TASKS].push(entry);
        }
        let acks = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = owned
            .into_iter()
            .enumerate()
            .map(|(t, tracked)| {
                tokio::spawn(churn(
                    server.api.clone(),
                    format!("r{round}-t{t}"),
                    rng.u64(..),
                    tracked,
                    acks.clone(),
                ))
            })
            .collect();
        let started = eventually(Duration::from_secs(10), || {
            let acks = acks.clone();
            async move { acks.load(Ordering::Relaxed) > 0 }
        })
        .await;
        assert!(
            started,
            "seed {seed}: no answer at all; log:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(rng.u64(100..=600))).await;
        assert_eq!(server.signal("KILL").await, None, "killed by SIGKILL");

        let mut unanswered = HashSet::new();
        let mut unexpected = Vec::new();
        for task in tasks {
            let churned = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("client task ends once the server is dead")
                .expect("client task does not panic");
            registered += churned.registered;
            deregistered += churned.deregistered;
            warned += churned.warned;
            unexpected.extend(churned.unexpected);
            unanswered.extend(churned.unanswered);
            for (id, name, known) in churned.tracked {
                model.insert(id, (name, known));
            }
        }
        assert!(
            unexpected.is_empty(),
            "seed {seed}, round {round}: answers that were neither success nor a cut connection: {unexpected:?}"
        );

        // The files as the crash left them, checked on a copy so that the
        // server recovers the original itself.
        let check = dir.path().join(format!("check-{round}"));
        std::fs::create_dir_all(&check).unwrap();
        std::fs::copy(&db, check.join("signpost.db")).unwrap();
        let wal = db.with_extension("db-wal");
        if wal.exists() {
            std::fs::copy(&wal, check.join("signpost.db-wal")).unwrap();
        }
        let copy = check.join("signpost.db");
        assert_eq!(integrity_check(&copy), "ok", "seed {seed}, round {round}");
        let on_disk = stored_ids(&copy, OpenFlags::SQLITE_OPEN_READ_WRITE);
        for (id, (name, known)) in &model {
            match known {
                Known::Passing | Known::Warning => assert!(
                    on_disk.contains(id),
                    "seed {seed}, round {round}: acknowledged {name} ({id}) is not in the file"
                ),
                Known::Gone => assert!(
                    !on_disk.contains(id),
                    "seed {seed}, round {round}: deregistered {name} ({id}) is in the file"
                ),
                Known::Unsure => {}
            }
        }

        server = Signpost::start(dir.path(), Some(&store)).await;
        let present = server.api.services().await;
        for (id, (name, known)) in &model {
            let found = present.get(id);
            match known {
                Known::Passing | Known::Warning => {
                    let service = found.unwrap_or_else(|| {
                        panic!("seed {seed}, round {round}: acknowledged {name} ({id}) lost")
                    });
                    assert_eq!(service["name"], json!(name), "seed {seed}: {service}");
                    let health = if *known == Known::Warning {
                        "warning"
                    } else {
                        "passing"
                    };
                    assert_eq!(
                        service["health"],
                        json!(health),
                        "seed {seed}, round {round}: {name} ({id}) lost its acknowledged health"
                    );
                }
                Known::Gone => assert!(
                    found.is_none(),
                    "seed {seed}, round {round}: deregistered {name} ({id}) came back"
                ),
                Known::Unsure => {}
            }
        }
        // Nothing appears that nobody asked for.
        for (id, service) in &present {
            let name = service["name"].as_str().unwrap();
            assert!(
                model.contains_key(id) || unanswered.contains(name),
                "seed {seed}, round {round}: {name} ({id}) was never registered"
            );
        }
        // From now on, what the server holds is what is known.
        model.retain(|_, (_, known)| *known == Known::Gone);
        for (id, service) in present {
            let known = match service["health"].as_str() {
                Some("warning") => Known::Warning,
                Some("passing") => Known::Passing,
                other => panic!("seed {seed}: unexpected health {other:?}"),
            };
            let name = service["name"].as_str().unwrap().to_string();
            model.insert(id, (name, known));
        }
        eprintln!(
            "round {round}: {} instances after restart",
            model.values().filter(|(_, k)| *k != Known::Gone).count()
        );
    }
    server.stop().await;
    assert_eq!(
        integrity_check(&db),
        "ok",
        "seed {seed}: after a clean stop"
    );
    // Every kind of change was acknowledged at least once before a kill, or
    // the rounds proved less than they claim.
    assert!(
        registered > 0 && deregistered > 0 && warned > 0,
        "seed {seed}: acknowledged {registered} registrations, {deregistered} \
         deregistrations, {warned} warnings"
    );
}

// ---------------------------------------------------------------------------
// Real write faults

/// A 503 with a JSON `{"error": ...}` body saying nothing changed.
fn assert_refused(answer: reqwest::Result<(u16, Value)>, what: &str) -> String {
    let (status, body) = answer.expect("admin api answers");
    assert_eq!(status, 503, "{what}: {body}");
    let error = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: 503 without an error message: {body}"));
    assert!(error.contains("nothing was changed"), "{what}: {error}");
    error.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_recovers_when_space_returns() {
    let dir = TempDir::new("full");
    let mount_point = dir.path().join("mnt");
    std::fs::create_dir_all(&mount_point).unwrap();
    let _tmpfs = Tmpfs::mount(&mount_point, "2m");
    let db = mount_point.join("signpost.db");
    let store = format!("sqlite:{}", db.display());
    let filler = mount_point.join("filler");

    let mut server = Signpost::start(dir.path(), Some(&store)).await;
    let api = server.api.clone();
    let a = api.must_register("a", "web", "10.0.0.1", 3600).await;
    let b = api.must_register("b", "web", "10.0.0.2", 3600).await;
    let c = api.must_register("c", "web", "10.0.0.3", 3600).await;

    let filled = fill_filesystem(&filler);
    assert!(filled > 0, "the filler took some space");

    // Every write that needs the store is refused, and changes nothing.
    let mut refused = Vec::new();
    for n in 0..5 {
        let name = format!("refused-{n}");
        let error = assert_refused(
            api.register(&name, "web", "10.0.0.9", 3600).await,
            &format!("register {name} on a full disk"),
        );
        assert!(error.contains("full"), "says why: {error}");
        refused.push(name);
    }
    assert_refused(api.deregister(&a).await, "deregister on a full disk");
    assert_refused(
        api.heartbeat(&b, Some("warning")).await,
        "health change on a full disk",
    );
    let listed = api.services().await;
    let names: BTreeSet<&str> = listed
        .values()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["a", "b", "c"]),
        "nothing refused was applied"
    );
    assert_eq!(
        listed[&b]["health"],
        json!("passing"),
        "refused health change"
    );
    assert_eq!(api.get(&format!("/services/{a}")).await.0, 200);
    // Reads and plain heartbeats do not need the store.
    assert_eq!(
        server.a_records("web").await,
        addresses(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
        "DNS still answers for what was registered"
    );
    let (status, body) = api.heartbeat(&c, None).await.expect("admin api answers");
    assert_eq!(status, 200, "plain heartbeat on a full disk: {body}");
    let (_, metrics) = {
        let response = api
            .http
            .get(format!("http://{}/metrics", api.admin))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    };
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("signpost_store_write_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no store failure counter in:\n{metrics}"));
    assert_eq!(failures, 7, "every refused write is counted");

    // Space comes back: the same writes now succeed.
    std::fs::remove_file(&filler).unwrap();
    let (status, body) = api
        .register("refused-0", "web", "10.0.0.9", 3600)
        .await
        .unwrap();
    assert_eq!(status, 201, "register once space is back: {body}");
    let retried = body["id"].as_str().unwrap().to_string();
    assert_eq!(api.deregister(&a).await.unwrap().0, 204);
    assert_eq!(api.heartbeat(&b, Some("warning")).await.unwrap().0, 200);

    server.stop().await;
    let mut server = Signpost::start(dir.path(), Some(&store)).await;
    let listed = server.api.services().await;
    let names: BTreeSet<&str> = listed
        .values()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["b", "c", "refused-0"]),
        "after a restart: everything acknowledged, nothing refused"
    );
    assert_eq!(listed[&b]["health"], json!("warning"));
    assert!(listed.contains_key(&retried) && listed.contains_key(&c));
    server.stop().await;
    assert_eq!(integrity_check(&db), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_database_file_refuses_writes_but_dns_keeps_answering() {
    let dir = TempDir::new("removed");
    let (store, db) = dir.store();
    let mut server = Signpost::start(dir.path(), Some(&store)).await;
    let api = server.api.clone();
    let a = api.must_register("a", "web", "10.0.0.1", 3600).await;
    let b = api.must_register("b", "web", "10.0.0.2", 3600).await;

    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", db.display()));
        if path.exists() {
            std::fs::remove_file(&path).unwrap();
        }
    }
    assert!(!db.exists());

    for n in 0..3 {
        let error = assert_refused(
            api.register(&format!("late-{n}"), "web", "10.0.0.9", 3600)
                .await,
            "register after the file was removed",
        );
        assert!(error.contains("removed"), "says why: {error}");
    }
    assert_refused(api.deregister(&a).await, "deregister after removal");
    assert_refused(
        api.heartbeat(&b, Some("critical")).await,
        "health change after removal",
    );
    assert!(!db.exists(), "a refused write does not recreate the file");

    let listed = api.services().await;
    let names: BTreeSet<&str> = listed
        .values()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["a", "b"]),
        "nothing refused was applied"
    );
    assert_eq!(listed[&b]["health"], json!("passing"));
    assert_eq!(
        server.a_records("web").await,
        addresses(&["10.0.0.1", "10.0.0.2"]),
        "DNS keeps answering from memory"
    );
    assert_eq!(api.heartbeat(&a, None).await.unwrap().0, 200);

    // A restart starts over with a new file; nothing refused shows up.
    server.stop().await;
    let server = Signpost::start(dir.path(), Some(&store)).await;
    assert!(db.exists(), "a new file is created");
    assert!(server.api.services().await.is_empty());
    server
        .api
        .must_register("fresh", "web", "10.0.0.5", 3600)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_wal_file_refuses_writes_instead_of_losing_them_in_a_crash() {
    let dir = TempDir::new("removed-wal");
    let (store, db) = dir.store();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let mut server = Signpost::start(dir.path(), Some(&store)).await;
    let api = server.api.clone();
    let a = api.must_register("a", "web", "10.0.0.1", 3600).await;

    // Commits land in the WAL first; with it unlinked, SQLite would go on
    // appending to the deleted inode and a crash would lose all of it.
    std::fs::remove_file(&wal).expect("the WAL exists while signpost runs");
    for n in 0..3 {
        let error = assert_refused(
            api.register(&format!("late-{n}"), "web", "10.0.0.9", 3600)
                .await,
            "register after the WAL was removed",
        );
        assert!(error.contains("-wal was removed"), "says why: {error}");
    }
    assert_refused(api.deregister(&a).await, "deregister after removal");
    assert_refused(
        api.heartbeat(&a, Some("warning")).await,
        "health change after removal",
    );
    assert_eq!(
        server.a_records("web").await,
        addresses(&["10.0.0.1"]),
        "DNS keeps answering from memory"
    );
    let names: Vec<Value> = api
        .services()
        .await
        .values()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("a")], "nothing refused was applied");

    // A crash now: nothing refused comes back (a itself may be gone with the
    // WAL it lived in), and the restarted server works durably again.
    assert_eq!(server.signal("KILL").await, None);
    assert_eq!(integrity_check(&db), "ok");
    let mut server = Signpost::start(dir.path(), Some(&store)).await;
    let names: BTreeSet<String> = server
        .api
        .services()
        .await
        .values()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.iter().all(|n| n == "a"),
        "only what was acknowledged: {names:?}"
    );
    let fresh = server
        .api
        .must_register("fresh", "web", "10.0.0.5", 3600)
        .await;
    assert_eq!(server.signal("KILL").await, None);
    let server = Signpost::start(dir.path(), Some(&store)).await;
    assert_eq!(server.api.get(&format!("/services/{fresh}")).await.0, 200);
}

// ---------------------------------------------------------------------------
// Restart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_instances_answer_at_once_and_expire_one_ttl_later() {
    let dir = TempDir::new("restart");
    let (store, db) = dir.store();
    let mut server = Signpost::start(dir.path(), Some(&store)).await;
    let api = server.api.clone();
    let a = api.must_register("a", "web", "10.0.1.1", 3).await;
    let b = api.must_register("b", "web", "10.0.1.2", 3).await;
    let c = api.must_register("c", "web", "10.0.1.3", 3).await;
    assert_eq!(api.heartbeat(&c, Some("warning")).await.unwrap().0, 200);
    let before = api.services().await;
    server.stop().await;

    // Longer than the TTL: only the restart's fresh window keeps them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut server = Signpost::start(dir.path(), Some(&store)).await;
    let restarted = tokio::time::Instant::now();
    assert_eq!(
        server.a_records("web").await,
        addresses(&["10.0.1.1", "10.0.1.2", "10.0.1.3"]),
        "the first query after start answers every restored instance"
    );
    let api = server.api.clone();
    let after = api.services().await;
    for id in [&a, &b, &c] {
        for field in ["name", "registered_at", "health", "ttl"] {
            assert_eq!(
                after[id][field], before[id][field],
                "{field} of {id} is kept"
            );
        }
    }
    assert_eq!(after[&c]["health"], json!("warning"));

    // b heartbeats; a and c do not.
    let beating = {
        let api = api.clone();
        let b = b.clone();
        tokio::spawn(async move {
            loop {
                let _ = api.heartbeat(&b, None).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        server.a_records("web").await.len(),
        3,
        "a fresh window of the whole TTL, not what was left before the stop"
    );
    let expired = eventually(Duration::from_millis(4500), || async {
        server.a_records("web").await == addresses(&["10.0.1.2"])
    })
    .await;
    assert!(
        expired && restarted.elapsed() <= Duration::from_millis(4500),
        "a and c leave DNS within ttl + 1.5 s of the restart (after {:?})",
        restarted.elapsed()
    );
    // Their expiry reaches the file too, so another restart does not bring
    // them back.
    let deleted = eventually(Duration::from_secs(3), || async {
        let ids = stored_ids(&db, OpenFlags::SQLITE_OPEN_READ_ONLY);
        !ids.contains(&a) && !ids.contains(&c) && ids.contains(&b)
    })
    .await;
    assert!(deleted, "expired instances are deleted from the store");
    beating.abort();
    server.stop().await;

    let server = Signpost::start(dir.path(), Some(&store)).await;
    let ids: BTreeSet<String> = server.api.services().await.into_keys().collect();
    assert_eq!(ids, BTreeSet::from([b.clone()]));
    assert_eq!(server.a_records("web").await, addresses(&["10.0.1.2"]));
}

/// A heartbeat's critical status is stored: after a restart the instance is
/// still out of DNS (and listed as critical), and a passing heartbeat
/// brings it back in the next answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_instance_stays_out_of_dns_across_a_restart_until_it_recovers() {
    let dir = TempDir::new("critical-restart");
    let (store, _db) = dir.store();
    let mut server = Signpost::start(dir.path(), Some(&store)).await;
    let api = server.api.clone();
    api.must_register("up", "web", "10.0.2.1", 3600).await;
    let down = api.must_register("down", "web", "10.0.2.2", 3600).await;
    assert_eq!(api.heartbeat(&down, Some("critical")).await.unwrap().0, 200);
    assert_eq!(server.a_records("web").await, addresses(&["10.0.2.1"]));
    server.stop().await;

    let server = Signpost::start(dir.path(), Some(&store)).await;
    let api = server.api.clone();
    assert_eq!(
        server.a_records("web").await,
        addresses(&["10.0.2.1"]),
        "still critical after the restart: not served"
    );
    assert_eq!(api.services().await[&down]["health"], json!("critical"));
    assert_eq!(api.heartbeat(&down, None).await.unwrap().0, 200);
    assert_eq!(
        server.a_records("web").await,
        addresses(&["10.0.2.1", "10.0.2.2"]),
        "passing again: back in the next answer"
    );
}

// ---------------------------------------------------------------------------
// Files that are not ours

/// Runs the binary on `db` to completion; returns (exit code, stderr).
async fn run_on(cwd: &Path, db: &Path) -> (Option<i32>, String) {
    let store = format!("sqlite:{}", db.display());
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        Command::new(BIN)
            .args(PORT_ZERO)
            .args(["--store", &store])
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("exits on its own")
    .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts signpost on `file` and asserts it refuses with `expected` in the
/// message, leaving the file byte-for-byte as it was and nothing beside it.
async fn assert_refused_untouched(file: &Path, expected: &str) {
    let dir = file.parent().unwrap();
    let bytes = std::fs::read(file).unwrap();
    let (code, stderr) = run_on(dir, file).await;
    assert!(
        code.is_some_and(|c| c != 0),
        "{}: exits non-zero, got {code:?}; stderr:\n{stderr}",
        file.display()
    );
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains(expected),
        "{}: the message names the file and says {expected:?}:\n{stderr}",
        file.display()
    );
    assert!(
        std::fs::read(file).unwrap() == bytes,
        "{} was modified",
        file.display()
    );
    let beside: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside.len(), 1, "no journal or WAL was created: {beside:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_signpost_database_is_refused_untouched() {
    let dir = TempDir::new("foreign");

    let random = dir.path().join("random");
    std::fs::create_dir_all(&random).unwrap();
    let random = random.join("signpost.db");
    let mut rng = fastrand::Rng::with_seed(7);
    std::fs::write(&random, (0..20_000).map(|_| rng.u8(..)).collect::<Vec<_>>()).unwrap();
    assert_refused_untouched(&random, "is not a signpost database").await;

    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let other = other.join("accounts.db");
    {
        let connection = Connection::open(&other).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT);
                 INSERT INTO accounts (owner) VALUES ('alice'), ('bob');",
            )
            .unwrap();
    }
    assert_refused_untouched(&other, "is not a signpost database").await;

    // Ours (application_id "SgnP" = 0x53676E50), from a newer signpost.
    let newer = dir.path().join("newer");
    std::fs::create_dir_all(&newer).unwrap();
    let newer = newer.join("signpost.db");
    {
        let connection = Connection::open(&newer).unwrap();
        connection
            .execute_batch(
                "PRAGMA application_id = 1399287376;
                 PRAGMA user_version = 2;
                 CREATE TABLE instances (id TEXT PRIMARY KEY, spec TEXT, extra BLOB);
                 INSERT INTO instances VALUES ('x', '{}', x'00');",
            )
            .unwrap();
    }
    assert_refused_untouched(&newer, "schema version 2, newer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_store_is_data_signpost_db_in_the_working_directory() {
    let dir = TempDir::new("default");
    let mut server = Signpost::start(dir.path(), None).await;
    let db = dir.path().join("data").join("signpost.db");
    assert!(dir.path().join("data").is_dir(), "data/ is created");
    assert!(db.is_file(), "data/signpost.db is created");
    assert!(
        server.logs().contains("store sqlite:data/signpost.db"),
        "the log names the store:\n{}",
        server.logs()
    );
    let id = server.api.must_register("a", "web", "10.0.2.1", 3600).await;
    server.stop().await;

    let server = Signpost::start(dir.path(), None).await;
    let (status, body) = server.api.get(&format!("/services/{id}")).await;
    assert_eq!(status, 200, "survives a restart: {body}");
    assert_eq!(server.a_records("web").await, addresses(&["10.0.2.1"]));
}
