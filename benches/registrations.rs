//! Registration throughput and start-up time of the real `signpost` binary.
//!
//! Run with `cargo bench --bench registrations` (or `bench/registrations.sh`).
//! It is a benchmark, not a test: under `cargo test` (no `--bench` argument)
//! it prints a note and exits.
//!
//! 1. Throughput: ROUNDS rounds, alternating `--store memory` and
//!    `--store sqlite:…` (a fresh server and a fresh, empty database file each
//!    round). Each round registers a fixed COUNT of distinct instances
//!    (names `i000000`.., spread over TYPES types `bench-00`..) with CLIENTS
//!    concurrent tokio tasks pulling indexes from a shared counter, each over
//!    its own keep-alive HTTP/1.1 connection spoken by hand (see
//!    `Connection`; with PIPELINE > 1 each client writes that many requests
//!    at once, then reads their responses). A warm-up of
//!    2 x CLIENTS registrations opens the connections first and is not
//!    counted. Only 200/201 count as successes; everything else is reported
//!    as a failure. Reported: medians per store and the sqlite/memory ratio,
//!    client-side latency, and the CPU the server and this process used
//!    (in cores: CPU seconds / wall seconds), to show where the time went.
//! 2. Start-up: STARTUP_N registrations into a sqlite store, SIGTERM, then
//!    RESTARTS times: spawn on the same file and time spawn -> first 200 from
//!    `GET /v1/health`; also the server's own "restored N registrations in T"
//!    figure, and VmRSS / VmHWM from /proc/PID/status once it answers.
//!
//! Every server runs as a separate process on 127.0.0.1 port 0 (the admin
//! port is read from its log), with its log (default filter: info, as in
//! production; registrations themselves are logged at debug) written to a
//! file in a temp dir that is removed at the end. Nothing is pinned to a CPU. Settings (env):
//! ROUNDS=3 CLIENTS=64 COUNT=20000 TYPES=100 STARTUP_N=100000 RESTARTS=3
//! PIPELINE=1 (requests each client writes before reading their responses:
//! HTTP/1.1 pipelining; 1 is one request at a time, as most clients do).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod support;
use support::{
    BIN, Result, START_TIMEOUT, Server, TempDir, cpu_seconds, env_usize, median, shell_line,
};

struct Settings {
    rounds: usize,
    clients: usize,
    count: usize,
    types: usize,
    startup_n: usize,
    restarts: usize,
    /// Requests each client sends before reading their responses (HTTP/1.1
    /// pipelining); 1, the default, is one request at a time.
    pipeline: usize,
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            rounds: env_usize("ROUNDS", 3),
            clients: env_usize("CLIENTS", 64),
            count: env_usize("COUNT", 20_000),
            types: env_usize("TYPES", 100),
            startup_n: env_usize("STARTUP_N", 100_000),
            restarts: env_usize("RESTARTS", 3),
            pipeline: env_usize("PIPELINE", 1),
        }
    }
}

/// Polls `GET /v1/health` until it answers 200; returns its JSON.
async fn wait_healthy(server: &Server, http: &reqwest::Client) -> Result<serde_json::Value> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(response) = http.get(server.url("/v1/health")).send().await
            && response.status().as_u16() == 200
        {
            return Ok(response.json().await?);
        }
        if Instant::now() > deadline {
            return Err("the admin API did not answer /v1/health".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// CPU seconds used so far by the server's SQLite writer thread
/// ("signpost-store"), when it has one.
fn store_thread_cpu_seconds(server: &Server) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.pid)).ok()?;
    tasks.filter_map(|task| task.ok()).find_map(|task| {
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        (comm.trim() == "signpost-store")
            .then(|| cpu_seconds(&task.path().join("stat").to_string_lossy()))
    })
}

fn http_client(clients: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// One keep-alive HTTP/1.1 connection, spoken by hand: a load generator
/// has to be cheaper than the server it measures, and a general client
/// (reqwest) cost about as much CPU per request as the server did.
struct Connection {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    request: Vec<u8>,
    head: String,
}

impl Connection {
    async fn open(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream: tokio::io::BufReader::new(stream),
            request: Vec::with_capacity(512),
            head: String::with_capacity(512),
        })
    }

    /// Queues a POST of a JSON body; [`Connection::send`] sends what is queued.
    fn queue_post(&mut self, path: &str, body: &str) {
        write!(
            self.request,
            "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("writing to a Vec cannot fail");
    }

    /// Sends every queued request in one write.
    async fn send(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let sent = self.stream.get_mut().write_all(&self.request).await;
        self.request.clear();
        sent
    }

    /// Reads the next response; returns its status and body.
    async fn response(&mut self) -> std::io::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let mut status = 0;
        let mut length = 0;
        loop {
            self.head.clear();
            if self.stream.read_line(&mut self.head).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = self.head.trim_end();
            if line.is_empty() {
                break;
            }
            if status == 0 {
                status = line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

/// What one batch of registrations did.
#[derive(Default)]
struct Load {
    ok: usize,
    failed: usize,
    first_failure: Option<String>,
    elapsed: Duration,
    /// Client-side latency of each successful request, sorted.
    latencies: Vec<Duration>,
    server_cpu: f64,
    /// Of which the SQLite writer thread (None with `memory`).
    store_cpu: Option<f64>,
    client_cpu: f64,
}

impl Load {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn latency(&self, quantile: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() - 1) as f64 * quantile).round() as usize;
        self.latencies[index]
    }
}

/// Registers `count` instances `{prefix}{index:06}` with `clients`
/// concurrent tasks sharing one counter.
async fn register_many(
    server: &Server,
    settings: &Settings,
    prefix: &'static str,
    count: usize,
) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let types = settings.types;
    let pipeline = settings.pipeline.max(1);
    let server_cpu = server.cpu_seconds();
    let store_cpu = store_thread_cpu_seconds(server);
    let client_cpu = cpu_seconds("/proc/self/stat");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..settings.clients {
        let next = next.clone();
        let admin = server.admin;
        tasks.spawn(async move {
            let mut load = Load::default();
            let mut connection = match Connection::open(admin).await {
                Ok(connection) => connection,
                Err(error) => {
                    load.failed += 1;
                    load.first_failure = Some(format!("connect: {error}"));
                    return load;
                }
            };
            loop {
                let first = next.fetch_add(pipeline, Ordering::Relaxed);
                if first >= count {
                    break;
                }
                let batch = first..(first + pipeline).min(count);
                for index in batch.clone() {
                    let body = format!(
                        r#"{{"name":"{prefix}{index:06}","type":"bench-{:02}","host":"127.0.0.1","port":{},"ttl":86400}}"#,
                        index % types,
                        1024 + index % 60_000
                    );
                    connection.queue_post("/v1/services", &body);
                }
                let sent = Instant::now();
                let mut outcome = connection
                    .send()
                    .await
                    .map_err(|error| format!("request: {error}"));
                let mut answered = 0;
                while outcome.is_ok() && answered < batch.len() {
                    outcome = match connection.response().await {
                        Ok((200 | 201, _)) => Ok(()),
                        Ok((status, body)) => Err(format!(
                            "HTTP {status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                        )),
                        Err(error) => Err(format!("response: {error}")),
                    };
                    if outcome.is_ok() {
                        load.ok += 1;
                        load.latencies.push(sent.elapsed());
                        answered += 1;
                    }
                }
                if let Err(message) = outcome {
                    // The rest of the batch is lost with the connection.
                    load.failed += batch.len() - answered;
                    load.first_failure.get_or_insert(message);
                    if let Ok(fresh) = Connection::open(admin).await {
                        connection = fresh;
                    }
                }
            }
            load
        });
    }
    let mut total = Load::default();
    while let Some(joined) = tasks.join_next().await {
        let load = joined.expect("client task does not panic");
        total.ok += load.ok;
        total.failed += load.failed;
        if total.first_failure.is_none() {
            total.first_failure = load.first_failure;
        }
        total.latencies.extend(load.latencies);
    }
    total.elapsed = started.elapsed();
    total.server_cpu = server.cpu_seconds() - server_cpu;
    total.store_cpu = store_thread_cpu_seconds(server)
        .zip(store_cpu)
        .map(|(end, start)| end - start);
    total.client_cpu = cpu_seconds("/proc/self/stat") - client_cpu;
    total.latencies.sort_unstable();
    total
}

/// One throughput round: fresh server, warm-up, timed COUNT registrations.
async fn throughput_round(
    settings: &Settings,
    dir: &Path,
    store: &str,
    round: usize,
) -> Result<Load> {
    let store_url = if store == "memory" {
        "memory".to_string()
    } else {
        format!("sqlite:{}", dir.join(format!("round{round}.db")).display())
    };
    let server = Server::spawn(
        &["--store", &store_url],
        None,
        &dir.join(format!("round{round}-{store}.log")),
    )
    .await?;
    let http = http_client(settings.clients)?;
    wait_healthy(&server, &http).await?;
    let warm = register_many(&server, settings, "w", 2 * settings.clients).await;
    if warm.failed > 0 {
        return Err(format!("warm-up failed: {:?}", warm.first_failure).into());
    }
    let load = register_many(&server, settings, "i", settings.count).await;
    server.stop().await?;
    Ok(load)
}

/// The "restored N registrations in T" figure of a log, in milliseconds.
fn restored_ms(log: &Path) -> Option<(usize, f64)> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains(" registrations in "))?;
    let (_, rest) = line.split_once("restored ")?;
    let (count, rest) = rest.split_once(" registrations in ")?;
    let shown = rest.split_whitespace().next()?;
    // `Duration`'s Debug form: 12ns, 3.4µs, 5.6ms, 7.8s.
    let (number, scale) = [("ns", 1e-6), ("µs", 1e-3), ("ms", 1.0), ("s", 1e3)]
        .iter()
        .find_map(|(unit, scale)| Some((shown.strip_suffix(unit)?, *scale)))?;
    Some((count.parse().ok()?, number.parse::<f64>().ok()? * scale))
}

struct Restart {
    ready: Duration,
    restored: Option<(usize, f64)>,
    instances: u64,
    rss_mib: Option<f64>,
    hwm_mib: Option<f64>,
    stop: Duration,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "benches/registrations.rs is a benchmark: run `cargo bench --bench registrations`"
        );
        return Ok(());
    }
    let settings = Settings::from_env();
    let dir = TempDir::new("signpost-bench")?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = shell_line("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]).unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_default();
    eprintln!(
        "signpost registrations bench: rounds={} clients={} pipeline={} count={} types={} startup_n={} restarts={}\n  binary {BIN}\n  scratch {}",
        settings.rounds,
        settings.clients,
        settings.pipeline,
        settings.count,
        settings.types,
        settings.startup_n,
        settings.restarts,
        dir.0.display()
    );

    // 1. Throughput, alternating stores.
    let stores = ["memory", "sqlite"];
    let mut results: Vec<(&str, Load)> = Vec::new();
    for round in 0..settings.rounds {
        for store in stores {
            let load = throughput_round(&settings, &dir.0, store, round).await?;
            let elapsed = load.elapsed.as_secs_f64();
            eprintln!(
                "  round {} {store:6}: {:>8.0} reg/s  ok {} failed {}  p50 {:.2} ms p99 {:.2} ms  server cpu {:.2} cores (store thread {}), bench {:.2}{}",
                round + 1,
                load.rate(),
                load.ok,
                load.failed,
                load.latency(0.5).as_secs_f64() * 1e3,
                load.latency(0.99).as_secs_f64() * 1e3,
                load.server_cpu / elapsed,
                load.store_cpu
                    .map_or("-".to_string(), |c| format!("{:.2}", c / elapsed)),
                load.client_cpu / elapsed,
                load.first_failure
                    .as_ref()
                    .map(|f| format!("  first failure: {f}"))
                    .unwrap_or_default(),
            );
            results.push((store, load));
        }
    }

    // 2. Start-up with STARTUP_N stored registrations.
    let db = dir.0.join("startup.db");
    let store_url = format!("sqlite:{}", db.display());
    let http = http_client(settings.clients)?;
    let server = Server::spawn(&["--store", &store_url], None, &dir.0.join("fill.log")).await?;
    wait_healthy(&server, &http).await?;
    let fill = register_many(&server, &settings, "i", settings.startup_n).await;
    eprintln!(
        "  fill: {} registrations in {:.1} s ({:.0}/s, p50 {:.2} ms, server cpu {:.2} cores, store thread {:.2}), {} failed{}",
        fill.ok,
        fill.elapsed.as_secs_f64(),
        fill.rate(),
        fill.latency(0.5).as_secs_f64() * 1e3,
        fill.server_cpu / fill.elapsed.as_secs_f64(),
        fill.store_cpu.unwrap_or(f64::NAN) / fill.elapsed.as_secs_f64(),
        fill.failed,
        fill.first_failure
            .as_ref()
            .map(|f| format!("; first failure: {f}"))
            .unwrap_or_default()
    );
    let fill_stop = server.stop().await?;
    let db_mib = [db.clone(), dir.0.join("startup.db-wal")]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len() as f64 / (1024.0 * 1024.0))
        .sum::<f64>();
    let mut restarts = Vec::new();
    for attempt in 0..settings.restarts {
        let log = dir.0.join(format!("restart{attempt}.log"));
        let http = http_client(1)?;
        let spawned = Instant::now();
        let server = Server::spawn(&["--store", &store_url], None, &log).await?;
        let health = wait_healthy(&server, &http).await?;
        let ready = spawned.elapsed();
        let rss_mib = server.memory_mib("VmRSS:");
        let hwm_mib = server.memory_mib("VmHWM:");
        let restored = restored_ms(&server.log);
        let instances = health["instances"].as_u64().unwrap_or(0);
        let stop = server.stop().await?;
        eprintln!(
            "  restart {}: ready in {:.0} ms, restored {:?}, {instances} instances, VmRSS {:.1} MiB",
            attempt + 1,
            ready.as_secs_f64() * 1e3,
            restored,
            rss_mib.unwrap_or(f64::NAN)
        );
        restarts.push(Restart {
            ready,
            restored,
            instances,
            rss_mib,
            hwm_mib,
            stop,
        });
    }

    // Summary.
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== signpost registrations bench, {date}, nproc {cores}{} ==",
        if cpu.is_empty() {
            String::new()
        } else {
            format!(", {cpu}")
        }
    );
    let _ = writeln!(
        out,
        "throughput: {} clients ({}), {} distinct registrations per round over {} types (+{} warm-up), {} rounds per store, alternating; fresh server and empty store each round; server log filter {}",
        settings.clients,
        if settings.pipeline > 1 {
            format!("each pipelining {} requests", settings.pipeline)
        } else {
            "one request at a time each".to_string()
        },
        settings.count,
        settings.types,
        2 * settings.clients,
        settings.rounds,
        std::env::var("RUST_LOG").map_or(
            "info (default; registrations are logged at debug)".to_string(),
            |f| format!("RUST_LOG={f}")
        ),
    );
    let _ = writeln!(
        out,
        "{:<8} {:>10} {:>22} {:>8} {:>9} {:>9} {:>10} {:>13} {:>11}",
        "store",
        "median/s",
        "rounds reg/s",
        "failed",
        "p50 ms",
        "p99 ms",
        "srv cores",
        "store thread",
        "bench cores"
    );
    let mut medians = Vec::new();
    for store in stores {
        let loads: Vec<&Load> = results
            .iter()
            .filter(|(s, _)| *s == store)
            .map(|(_, l)| l)
            .collect();
        let each =
            |f: &dyn Fn(&Load) -> f64| median(&mut loads.iter().map(|l| f(l)).collect::<Vec<_>>());
        let rate = each(&|l| l.rate());
        medians.push(rate);
        let rounds = loads
            .iter()
            .map(|l| format!("{:.0}", l.rate()))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "{:<8} {:>10.0} {:>22} {:>8} {:>9.2} {:>9.2} {:>10.2} {:>13} {:>11.2}",
            store,
            rate,
            rounds,
            loads.iter().map(|l| l.failed).sum::<usize>(),
            each(&|l| l.latency(0.5).as_secs_f64() * 1e3),
            each(&|l| l.latency(0.99).as_secs_f64() * 1e3),
            each(&|l| l.server_cpu / l.elapsed.as_secs_f64()),
            if loads.iter().all(|l| l.store_cpu.is_some()) {
                format!(
                    "{:.2}",
                    each(&|l| l.store_cpu.unwrap_or(0.0) / l.elapsed.as_secs_f64())
                )
            } else {
                "-".to_string()
            },
            each(&|l| l.client_cpu / l.elapsed.as_secs_f64()),
        );
    }
    let _ = writeln!(
        out,
        "sqlite/memory ratio (medians): {:.2}",
        medians[1] / medians[0]
    );
    let _ = writeln!(
        out,
        "start-up: {} registrations stored ({} ok, {} failed, filled at {:.0}/s; db+wal {:.1} MiB; SIGTERM->exit {:.0} ms), {} restarts on the same file",
        settings.startup_n,
        fill.ok,
        fill.failed,
        fill.rate(),
        db_mib,
        fill_stop.as_secs_f64() * 1e3,
        settings.restarts
    );
    let _ = writeln!(
        out,
        "{:<8} {:>16} {:>14} {:>10} {:>11} {:>11} {:>9}",
        "restart",
        "spawn->health ms",
        "restored ms",
        "instances",
        "VmRSS MiB",
        "VmHWM MiB",
        "stop ms"
    );
    for (i, r) in restarts.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:<8} {:>16.0} {:>14} {:>10} {:>11.1} {:>11.1} {:>9.0}",
            i + 1,
            r.ready.as_secs_f64() * 1e3,
            r.restored
                .map_or("?".to_string(), |(n, ms)| format!("{ms:.0} ({n})")),
            r.instances,
            r.rss_mib.unwrap_or(f64::NAN),
            r.hwm_mib.unwrap_or(f64::NAN),
            r.stop.as_secs_f64() * 1e3,
        );
    }
    let column = |f: &dyn Fn(&Restart) -> Option<f64>| {
        median(&mut restarts.iter().filter_map(f).collect::<Vec<_>>())
    };
    let _ = writeln!(
        out,
        "{:<8} {:>16.0} {:>14.0} {:>10} {:>11.1} {:>11.1} {:>9.0}",
        "median",
        column(&|r| Some(r.ready.as_secs_f64() * 1e3)),
        column(&|r| r.restored.map(|(_, ms)| ms)),
        "",
        column(&|r| r.rss_mib),
        column(&|r| r.hwm_mib),
        column(&|r| Some(r.stop.as_secs_f64() * 1e3)),
    );
    print!("{out}");
    Ok(())
}
