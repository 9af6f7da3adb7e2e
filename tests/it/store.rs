//! The SQLite store (README "Storage") seen from outside, with the real
//! binary as a child process: `kill -9` in the middle of a burst loses no
//! acknowledged change, real write faults (a full filesystem, a removed file)
//! are answered 503 and change nothing, restored instances answer DNS at once
//! and get one fresh TTL window, and a file that is not ours is refused
//! untouched.
//!
//! Every test has its own temporary directory and its own ports (port 0);
//! every wait is bounded.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use reqwest::Method;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};

use crate::support::{
    Api, PORT_ZERO, Process, Registration, ScratchDir, eventually, id_of, ipv4s, metric, query_udp,
    run_to_exit_in,
};

/// A small tmpfs mounted on a directory, unmounted when dropped (also when
/// the test panics). Declare it before the [`Process`] using it, so the
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

/// Arguments for signpost on port 0 with `--store store`.
fn on_store(store: &str) -> Vec<&str> {
    [&PORT_ZERO[..], &["--store", store]].concat()
}

/// `name` of type `web` at `host`, port 8080, with `ttl`.
fn web(name: &str, host: &str, ttl: u32) -> Registration {
    Registration::new(name, "web", host, 8080).ttl(ttl)
}

/// Every listed instance, by id.
async fn services(api: &Api) -> HashMap<String, Value> {
    api.list("")
        .await
        .into_iter()
        .map(|s| (id_of(&s), s))
        .collect()
}

/// The names of `listed` instances, sorted.
fn names(listed: &HashMap<String, Value>) -> Vec<String> {
    let mut names: Vec<String> = listed
        .values()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// The A records DNS serves for `kind` right now.
async fn a_records(server: &Process, kind: &str) -> BTreeSet<Ipv4Addr> {
    let answer = query_udp(
        server.dns,
        &format!("{kind}.svc.local."),
        RecordType::A,
        None,
    )
    .await;
    ipv4s(&answer.answers).into_iter().collect()
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

/// The body of an answer with the `expected` status; `None` for a cut
/// connection (the server was killed) or, recorded in `unexpected` as
/// `what: status body`, any other answer.
fn acknowledged(
    answer: reqwest::Result<(u16, Value)>,
    expected: u16,
    what: &str,
    unexpected: &mut Vec<String>,
) -> Option<Value> {
    match answer {
        Ok((status, body)) if status == expected => Some(body),
        Ok((status, body)) => {
            unexpected.push(format!("{what}: {status} {body}"));
            None
        }
        Err(_) => None,
    }
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
            let path = format!("/v1/services/{}", tracked[i].0);
            let answer = api.call(Method::DELETE, &path, None).await;
            let what = format!("deregister {}", tracked[i].1);
            if acknowledged(answer, 204, &what, &mut out.unexpected).is_none() {
                tracked[i].2 = Known::Unsure;
                break;
            }
            tracked[i].2 = Known::Gone;
            out.deregistered += 1;
        } else if roll < 30 && !passing.is_empty() {
            let i = passing[rng.usize(..passing.len())];
            let path = format!("/v1/services/{}/heartbeat", tracked[i].0);
            let body = json!({"status": "warning"});
            let answer = api.call(Method::PUT, &path, Some(&body)).await;
            let what = format!("warning {}", tracked[i].1);
            if acknowledged(answer, 200, &what, &mut out.unexpected).is_none() {
                tracked[i].2 = Known::Unsure;
                break;
            }
            tracked[i].2 = Known::Warning;
            out.warned += 1;
        } else {
            let name = format!("{label}-{n}");
            let body = json!(Registration::new(&name, "churn", "10.9.8.7", 8080).ttl(3600));
            let answer = api.call(Method::POST, "/v1/services", Some(&body)).await;
            let what = format!("register {name}");
            let Some(service) = acknowledged(answer, 201, &what, &mut out.unexpected) else {
                out.unanswered.push(name);
                break;
            };
            tracked.push((id_of(&service), name, Known::Passing));
            out.registered += 1;
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
    let dir = ScratchDir::new("kill9");
    let (store, db) = dir.sqlite();

    // Everything known so far, by id; carried across rounds.
    let mut model: HashMap<String, (String, Known)> = HashMap::new();
    let (mut registered, mut deregistered, mut warned) = (0, 0, 0);
    let mut server = Process::start_in(dir.path(), &on_store(&store)).await;
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
        server.kill_9().await;

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

        server = server.restart().await;
        let present = services(&server).await;
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
fn assert_refused((status, body): (u16, Value), what: &str) -> String {
    assert_eq!(status, 503, "{what}: {body}");
    let error = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: 503 without an error message: {body}"));
    assert!(error.contains("nothing was changed"), "{what}: {error}");
    error.to_string()
}

/// Every kind of write needs the store, and each is refused `when` it
/// cannot write (see [`assert_refused`]): `count` registrations of new
/// names `refused-N`, whose errors say `why`; deregistering `gone`; a
/// heartbeat turning `turned` to `status`.
async fn assert_writes_refused(
    api: &Api,
    count: usize,
    why: &str,
    gone: &str,
    (turned, status): (&str, &str),
    when: &str,
) {
    for n in 0..count {
        let name = format!("refused-{n}");
        let error = assert_refused(
            api.try_register(&web(&name, "10.0.0.9", 3600)).await,
            &format!("register {name} {when}"),
        );
        assert!(error.contains(why), "says why: {error}");
    }
    assert_refused(api.deregister(gone).await, &format!("deregister {when}"));
    assert_refused(
        api.heartbeat_reporting(turned, status).await,
        &format!("health change {when}"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_recovers_when_space_returns() {
    let dir = ScratchDir::new("full");
    let mount_point = dir.path().join("mnt");
    std::fs::create_dir_all(&mount_point).unwrap();
    let _tmpfs = Tmpfs::mount(&mount_point, "2m");
    let db = mount_point.join("signpost.db");
    let store = format!("sqlite:{}", db.display());
    let filler = mount_point.join("filler");

    let mut server = Process::start_in(dir.path(), &on_store(&store)).await;
    let api = server.api.clone();
    let a = id_of(&api.register(&web("a", "10.0.0.1", 3600)).await);
    let b = id_of(&api.register(&web("b", "10.0.0.2", 3600)).await);
    let c = id_of(&api.register(&web("c", "10.0.0.3", 3600)).await);

    let filled = fill_filesystem(&filler);
    assert!(filled > 0, "the filler took some space");

    // Every write that needs the store is refused, and changes nothing.
    let why = "full";
    assert_writes_refused(&api, 5, why, &a, (&b, "warning"), "on a full disk").await;
    let listed = services(&api).await;
    assert_eq!(
        names(&listed),
        ["a", "b", "c"],
        "nothing refused was applied"
    );
    assert_eq!(
        listed[&b]["health"],
        json!("passing"),
        "refused health change"
    );
    assert_eq!(api.get(&format!("/v1/services/{a}")).await.0, 200);
    // Reads and plain heartbeats do not need the store.
    assert_eq!(
        a_records(&server, "web").await,
        addresses(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
        "DNS still answers for what was registered"
    );
    let (status, body) = api.heartbeat(&c, None).await;
    assert_eq!(status, 200, "plain heartbeat on a full disk: {body}");
    let metrics = api.metrics().await;
    assert_eq!(
        metric(&metrics, "signpost_store_write_failures_total"),
        Some(7.0),
        "every refused write is counted:\n{metrics}"
    );

    // Space comes back: the same writes now succeed.
    std::fs::remove_file(&filler).unwrap();
    let (status, body) = api.try_register(&web("refused-0", "10.0.0.9", 3600)).await;
    assert_eq!(status, 201, "register once space is back: {body}");
    let retried = id_of(&body);
    assert_eq!(api.deregister(&a).await.0, 204);
    assert_eq!(api.heartbeat_reporting(&b, "warning").await.0, 200);

    server.stop().await;
    let mut server = server.restart().await;
    let listed = services(&server).await;
    assert_eq!(
        names(&listed),
        ["b", "c", "refused-0"],
        "after a restart: everything acknowledged, nothing refused"
    );
    assert_eq!(listed[&b]["health"], json!("warning"));
    assert!(listed.contains_key(&retried) && listed.contains_key(&c));
    server.stop().await;
    assert_eq!(integrity_check(&db), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_database_file_refuses_writes_but_dns_keeps_answering() {
    let dir = ScratchDir::new("removed");
    let (store, db) = dir.sqlite();
    let mut server = Process::start_in(dir.path(), &on_store(&store)).await;
    let api = server.api.clone();
    let a = id_of(&api.register(&web("a", "10.0.0.1", 3600)).await);
    let b = id_of(&api.register(&web("b", "10.0.0.2", 3600)).await);

    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", db.display()));
        if path.exists() {
            std::fs::remove_file(&path).unwrap();
        }
    }
    assert!(!db.exists());

    let when = "after the file was removed";
    assert_writes_refused(&api, 3, "removed", &a, (&b, "critical"), when).await;
    assert!(!db.exists(), "a refused write does not recreate the file");

    let listed = services(&api).await;
    assert_eq!(names(&listed), ["a", "b"], "nothing refused was applied");
    assert_eq!(listed[&b]["health"], json!("passing"));
    assert_eq!(
        a_records(&server, "web").await,
        addresses(&["10.0.0.1", "10.0.0.2"]),
        "DNS keeps answering from memory"
    );
    assert_eq!(api.heartbeat(&a, None).await.0, 200);

    // A restart starts over with a new file; nothing refused shows up.
    server.stop().await;
    let server = server.restart().await;
    assert!(db.exists(), "a new file is created");
    assert!(services(&server).await.is_empty());
    server.api.register(&web("fresh", "10.0.0.5", 3600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_wal_file_refuses_writes_instead_of_losing_them_in_a_crash() {
    let dir = ScratchDir::new("removed-wal");
    let (store, db) = dir.sqlite();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let mut server = Process::start_in(dir.path(), &on_store(&store)).await;
    let api = server.api.clone();
    let a = id_of(&api.register(&web("a", "10.0.0.1", 3600)).await);

    // Commits land in the WAL first; with it unlinked, SQLite would go on
    // appending to the deleted inode and a crash would lose all of it.
    std::fs::remove_file(&wal).expect("the WAL exists while signpost runs");
    let (why, when) = ("-wal was removed", "after the WAL was removed");
    assert_writes_refused(&api, 3, why, &a, (&a, "warning"), when).await;
    assert_eq!(
        a_records(&server, "web").await,
        addresses(&["10.0.0.1"]),
        "DNS keeps answering from memory"
    );
    let listed = services(&api).await;
    assert_eq!(names(&listed), ["a"], "nothing refused was applied");

    // A crash now: nothing refused comes back (a itself may be gone with the
    // WAL it lived in), and the restarted server works durably again.
    server.kill_9().await;
    assert_eq!(integrity_check(&db), "ok");
    let mut server = server.restart().await;
    let names = names(&services(&server).await);
    assert!(
        names.iter().all(|n| n == "a"),
        "only what was acknowledged: {names:?}"
    );
    let fresh = id_of(&server.api.register(&web("fresh", "10.0.0.5", 3600)).await);
    server.kill_9().await;
    let server = server.restart().await;
    assert_eq!(
        server.api.get(&format!("/v1/services/{fresh}")).await.0,
        200
    );
}

/// strace attached to every thread of `pid`, failing each fsync and
/// fdatasync with EIO (a disk that lost the write) until dropped.
struct FailingFsync(std::process::Child);

impl FailingFsync {
    fn attach(pid: u32) -> FailingFsync {
        let mut child = std::process::Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-p", &pid.to_string()])
            .args(["-e", "trace=fsync,fdatasync"])
            .args(["-e", "inject=fsync,fdatasync:error=EIO"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("strace is installed (.ci/run installs it)");
        // -qq silences "attached"; wait until every thread is traced.
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .count();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let traced = std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .filter_map(|task| {
                    let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
                    let tracer = status.lines().find(|l| l.starts_with("TracerPid:"))?;
                    (tracer.split_whitespace().nth(1)? != "0").then_some(())
                })
                .count();
            if traced >= threads {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut error = String::new();
                let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut error);
                panic!("strace could not attach ({status}): {error}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "strace attached to {traced} of {threads} threads"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        FailingFsync(child)
    }
}

impl Drop for FailingFsync {
    fn drop(&mut self) {
        // SIGTERM: strace detaches and the process runs on untraced.
        let _ = std::process::Command::new("kill")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// What the client was told of a write that failed in the store: `Some(true)`
/// applied although unconfirmed, `Some(false)` nothing changed.
fn told((status, body): &(u16, Value), what: &str) -> bool {
    assert_eq!(*status, 503, "{what} with fsync failing: {body}");
    let error = body["error"].as_str().expect("a JSON error");
    let refused = error.contains("nothing was changed");
    let applied = error.contains("is applied");
    assert!(
        refused != applied,
        "{what}: the error says which it was: {error}"
    );
    applied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_fsync_memory_a_restart_and_the_client_agree() {
    let dir = ScratchDir::new("eio");
    let (store, db) = dir.sqlite();
    let mut server = Process::start_in(dir.path(), &on_store(&store)).await;
    let api = server.api.clone();
    let a = id_of(&api.register(&web("a", "10.0.0.1", 3600)).await);
    let c = id_of(&api.register(&web("c", "10.0.0.3", 3600)).await);

    let strace = FailingFsync::attach(server.pid());
    let registered = api.try_register(&web("b", "10.0.0.2", 3600)).await;
    let deregistered = api.deregister(&a).await;
    let turned = api.heartbeat_reporting(&c, "critical").await;
    let listed = services(&api).await;
    drop(strace);

    // What memory serves is what the client was told.
    let b_applied = told(&registered, "register b");
    let a_applied = told(&deregistered, "deregister a");
    let c_applied = told(&turned, "critical heartbeat on c");
    eprintln!("applied although unconfirmed: b {b_applied}, a {a_applied}, c {c_applied}");
    let b_served = names(&listed).contains(&"b".to_string());
    assert_eq!(b_served, b_applied, "b served as told: {listed:?}");
    assert_eq!(!listed.contains_key(&a), a_applied, "a as told");
    let c_health = &listed[&c]["health"];
    assert_eq!(c_health == "critical", c_applied, "c is {c_health}");
    let dns = a_records(&server, "web").await;
    assert_eq!(
        dns.contains(&Ipv4Addr::new(10, 0, 0, 2)),
        b_applied,
        "{dns:?}"
    );
    assert_eq!(
        dns.contains(&Ipv4Addr::new(10, 0, 0, 1)),
        !a_applied,
        "{dns:?}"
    );
    assert_eq!(
        dns.contains(&Ipv4Addr::new(10, 0, 0, 3)),
        !c_applied,
        "{dns:?}"
    );

    // And a crash now restores exactly that.
    server.kill_9().await;
    assert_eq!(integrity_check(&db), "ok");
    let mut server = server.restart().await;
    let restored = services(&server).await;
    assert_eq!(
        names(&restored),
        names(&listed),
        "a restart restores what was served"
    );
    assert_eq!(restored[&c]["health"], *c_health);

    // The store works again once the disk does.
    let fresh = id_of(&server.api.register(&web("fresh", "10.0.0.5", 3600)).await);
    server.kill_9().await;
    let server = server.restart().await;
    assert_eq!(
        server.api.get(&format!("/v1/services/{fresh}")).await.0,
        200
    );
}

// ---------------------------------------------------------------------------
// Restart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_instances_answer_at_once_and_expire_one_ttl_later() {
    let dir = ScratchDir::new("restart");
    let (store, db) = dir.sqlite();
    let mut server = Process::start_in(dir.path(), &on_store(&store)).await;
    let api = server.api.clone();
    let a = id_of(&api.register(&web("a", "10.0.1.1", 3)).await);
    let b = id_of(&api.register(&web("b", "10.0.1.2", 3)).await);
    let c = id_of(&api.register(&web("c", "10.0.1.3", 3)).await);
    assert_eq!(api.heartbeat_reporting(&c, "warning").await.0, 200);
    let before = services(&api).await;
    server.stop().await;

    // Longer than the TTL: only the restart's fresh window keeps them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut server = server.restart().await;
    let restarted = tokio::time::Instant::now();
    assert_eq!(
        a_records(&server, "web").await,
        addresses(&["10.0.1.1", "10.0.1.2", "10.0.1.3"]),
        "the first query after start answers every restored instance"
    );
    let api = server.api.clone();
    let after = services(&api).await;
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
        a_records(&server, "web").await.len(),
        3,
        "a fresh window of the whole TTL, not what was left before the stop"
    );
    let expired = eventually(Duration::from_millis(4500), || async {
        a_records(&server, "web").await == addresses(&["10.0.1.2"])
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

    let server = server.restart().await;
    let ids: BTreeSet<String> = services(&server).await.into_keys().collect();
    assert_eq!(ids, BTreeSet::from([b.clone()]));
    assert_eq!(a_records(&server, "web").await, addresses(&["10.0.1.2"]));
}

/// A heartbeat's critical status is stored: after a restart the instance is
/// still out of DNS (and listed as critical), and a passing heartbeat
/// brings it back in the next answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_instance_stays_out_of_dns_across_a_restart_until_it_recovers() {
    let dir = ScratchDir::new("critical-restart");
    let (store, _db) = dir.sqlite();
    let mut server = Process::start_in(dir.path(), &on_store(&store)).await;
    let api = server.api.clone();
    api.register(&web("up", "10.0.2.1", 3600)).await;
    let down = id_of(&api.register(&web("down", "10.0.2.2", 3600)).await);
    assert_eq!(api.heartbeat_reporting(&down, "critical").await.0, 200);
    assert_eq!(a_records(&server, "web").await, addresses(&["10.0.2.1"]));
    server.stop().await;

    let server = server.restart().await;
    let api = server.api.clone();
    assert_eq!(
        a_records(&server, "web").await,
        addresses(&["10.0.2.1"]),
        "still critical after the restart: not served"
    );
    assert_eq!(services(&api).await[&down]["health"], json!("critical"));
    assert_eq!(api.heartbeat(&down, None).await.0, 200);
    assert_eq!(
        a_records(&server, "web").await,
        addresses(&["10.0.2.1", "10.0.2.2"]),
        "passing again: back in the next answer"
    );
}

// ---------------------------------------------------------------------------
// Files that are not ours

/// Starts signpost on `file` and asserts it refuses with `expected` in the
/// message, leaving the file byte-for-byte as it was and nothing beside it.
async fn assert_refused_untouched(file: &Path, expected: &str) {
    let dir = file.parent().unwrap();
    let bytes = std::fs::read(file).unwrap();
    let store = format!("sqlite:{}", file.display());
    let (code, stderr) = run_to_exit_in(dir, &on_store(&store)).await;
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
    let dir = ScratchDir::new("foreign");

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
                 PRAGMA user_version = 3;
                 CREATE TABLE instances (id TEXT PRIMARY KEY, spec TEXT, extra BLOB);
                 INSERT INTO instances VALUES ('x', '{}', x'00');",
            )
            .unwrap();
    }
    assert_refused_untouched(&newer, "schema version 3, newer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_store_is_data_signpost_db_in_the_working_directory() {
    let dir = ScratchDir::new("default");
    let mut server = Process::start_in(dir.path(), &PORT_ZERO).await;
    let db = dir.path().join("data").join("signpost.db");
    assert!(dir.path().join("data").is_dir(), "data/ is created");
    assert!(db.is_file(), "data/signpost.db is created");
    assert!(
        server.logs().contains("store sqlite:data/signpost.db"),
        "the log names the store:\n{}",
        server.logs()
    );
    let id = id_of(&server.api.register(&web("a", "10.0.2.1", 3600)).await);
    server.stop().await;

    let server = server.restart().await;
    let (status, body) = server.api.get(&format!("/v1/services/{id}")).await;
    assert_eq!(status, 200, "survives a restart: {body}");
    assert_eq!(a_records(&server, "web").await, addresses(&["10.0.2.1"]));
}
