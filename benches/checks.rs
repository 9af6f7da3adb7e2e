//! Active HTTP health checks of the real `signpost` binary at scale.
//!
//! Run with `cargo bench --bench checks` (or `bench/checks.sh`). It is a
//! benchmark, not a test: under `cargo test` (no `--bench` argument) it
//! prints a note and exits.
//!
//! Each of ROUNDS rounds: a fresh `--store memory` server (separate process,
//! 127.0.0.1 port 0, log filter `warn` except the crate-root start-up lines
//! that tell its admin address), and a fresh local HTTP endpoint inside this
//! process (hand-written HTTP/1.1, answers `200 ok` and closes; it records
//! the accept time and path of every request). COUNT instances `i00000`..
//! are registered as fast as CLIENTS concurrent clients allow, each with
//! `check: {http: http://127.0.0.1:PORT/health/iNNNNN, interval: INTERVAL,
//! timeout: min(2, INTERVAL)}`, so every request names its instance. From
//! the moment registration ends, DURATION seconds are measured:
//!
//! - checks/s the endpoint received (and per 1-s bucket: min/median/max),
//!   against the ideal COUNT / INTERVAL;
//! - server CPU over the window (cores, and µs per check), this process's
//!   CPU (it runs the endpoint), server VmRSS / VmHWM at the end;
//! - the spread of first checks (jittered over the first interval): per
//!   100 ms bucket over the part of the first interval where every instance
//!   is registered (registration end .. registration start + INTERVAL), the
//!   most first checks in any 10 ms, the share checked within INTERVAL + 1 s
//!   of registration end, and each first check's delay after its own
//!   registration returned;
//! - checks per instance in the window, and the gap between consecutive
//!   checks of one instance (the scheduler falling behind shows here);
//! - from `/metrics`: `signpost_checks_total`, failures by kind, and
//!   instances by health.
//!
//! Settings (env): ROUNDS=3 COUNT=10000 CLIENTS=64 INTERVAL=10 DURATION=30.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod support;
use support::{BIN, Result, Server, TempDir, cpu_seconds, env_usize, median, shell_line};

/// Only the crate-root lines (start-up, shutdown) at info: they tell the
/// admin address. Everything else (per registration, per health change) warn.
const LOG_FILTER: &str = "warn,signpost=info,signpost::=warn";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
/// Path of a request that did not name an instance.
const OTHER: u32 = u32::MAX;

struct Settings {
    rounds: usize,
    count: usize,
    clients: usize,
    interval: usize,
    duration: usize,
}

/// One request the endpoint received: accept time (seconds since the bench
/// started) and the instance its path names.
#[derive(Clone, Copy)]
struct Hit {
    at: f64,
    instance: u32,
}

/// The local HTTP endpoint every check targets; stops when dropped.
struct Endpoint {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    async fn start(epoch: Instant) -> Result<Endpoint> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let recorded = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                let at = epoch.elapsed().as_secs_f64();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    if let Some(instance) = answer(stream).await {
                        recorded.lock().unwrap().push(Hit { at, instance });
                    }
                });
            }
        });
        Ok(Endpoint { port, hits, task })
    }

    /// The requests so far, by accept time.
    fn hits(&self) -> Vec<Hit> {
        let mut hits = self.hits.lock().unwrap().clone();
        hits.sort_by(|a, b| a.at.total_cmp(&b.at));
        hits
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head, answers `200 ok`, closes; returns the instance
/// the path names (OTHER for any other path), None for no request.
async fn answer(mut stream: TcpStream) -> Option<u32> {
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || head.len() > 8192 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let _ = stream.write_all(RESPONSE).await;
    let _ = stream.shutdown().await;
    let line = std::str::from_utf8(head.split(|&b| b == b'\r').next()?).ok()?;
    let path = line.split(' ').nth(1)?;
    Some(
        path.strip_prefix("/health/i")
            .and_then(|n| n.parse().ok())
            .unwrap_or(OTHER),
    )
}

/// What registering every instance did.
struct Registered {
    created: usize,
    first_failure: Option<String>,
    /// Seconds since the bench started.
    start: f64,
    end: f64,
    /// When each instance's registration returned 201 (NaN otherwise).
    done_at: Vec<f64>,
}

async fn register_all(
    server: &Server,
    settings: &Settings,
    endpoint_port: u16,
    epoch: Instant,
) -> Result<Registered> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(settings.clients)
        .timeout(Duration::from_secs(60))
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let url: Arc<str> = server.url("/v1/services").into();
    let (count, interval) = (settings.count, settings.interval);
    let start = epoch.elapsed().as_secs_f64();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..settings.clients {
        let (next, url, http) = (next.clone(), url.clone(), http.clone());
        tasks.spawn(async move {
            let mut done = Vec::new();
            let mut failure = None;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    break (done, failure);
                }
                let name = format!("i{index:05}");
                let body = serde_json::json!({
                    "name": name, "type": "bench", "host": "10.0.0.1", "port": 8080, "ttl": 60,
                    "check": {
                        "http": format!("http://127.0.0.1:{endpoint_port}/health/{name}"),
                        "interval": interval,
                        "timeout": interval.min(2),
                    },
                });
                let outcome = match http.post(&*url).json(&body).send().await {
                    Ok(response) if response.status().as_u16() == 201 => response
                        .bytes()
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Ok(response) => Err(format!(
                        "HTTP {}: {}",
                        response.status(),
                        response.text().await.unwrap_or_default()
                    )),
                    Err(error) => Err(error.to_string()),
                };
                match outcome {
                    Ok(()) => done.push((index, epoch.elapsed().as_secs_f64())),
                    Err(message) => {
                        failure.get_or_insert(message);
                    }
                }
            }
        });
    }
    let mut registered = Registered {
        created: 0,
        first_failure: None,
        start,
        end: 0.0,
        done_at: vec![f64::NAN; count],
    };
    while let Some(joined) = tasks.join_next().await {
        let (done, failure) = joined?;
        registered.created += done.len();
        for (index, at) in done {
            registered.done_at[index] = at;
        }
        if registered.first_failure.is_none() {
            registered.first_failure = failure;
        }
    }
    registered.end = epoch.elapsed().as_secs_f64();
    Ok(registered)
}

/// The value of a `/metrics` line `series value`.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(f64::NAN)
}

/// `q` quantile of sorted `values` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Min, median, max of counts.
fn spread(counts: &[usize]) -> [f64; 3] {
    let mut values: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
    let mid = median(&mut values);
    [
        values.first().copied().unwrap_or(f64::NAN),
        mid,
        values.last().copied().unwrap_or(f64::NAN),
    ]
}

/// Counts of sorted `times` in `buckets` buckets of `width` from `from`.
fn bucket_counts(times: &[f64], from: f64, width: f64, buckets: usize) -> Vec<usize> {
    let mut counts = vec![0; buckets];
    for &t in times {
        let i = ((t - from) / width).floor();
        if i >= 0.0 && (i as usize) < buckets {
            counts[i as usize] += 1;
        }
    }
    counts
}

/// Most of sorted `times` within any window shorter than `width`.
fn densest(times: &[f64], width: f64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= width {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// Medians over 11 draws of `count` uniformly random times in `seconds`:
/// min and max per 100 ms bucket, and the most in any 10 ms. What a
/// perfectly random (not evenly spaced) schedule would show.
fn uniform_reference(count: usize, seconds: f64) -> [f64; 3] {
    let draws: Vec<[f64; 3]> = (0..11)
        .map(|_| {
            let mut times: Vec<f64> = (0..count).map(|_| fastrand::f64() * seconds).collect();
            times.sort_by(f64::total_cmp);
            let buckets = bucket_counts(&times, 0.0, 0.1, (seconds / 0.1).floor() as usize);
            let [min, _, max] = spread(&buckets);
            [min, max, densest(&times, 0.01) as f64]
        })
        .collect();
    [0, 1, 2].map(|i| median(&mut draws.iter().map(|d| d[i]).collect::<Vec<_>>()))
}

/// What one round measured.
struct Round {
    created: usize,
    first_failure: Option<String>,
    reg_seconds: f64,
    checks_per_s: f64,
    per_second: [f64; 3],
    server_cores: f64,
    us_per_check: f64,
    bench_cores: f64,
    rss_mib: f64,
    hwm_mib: f64,
    /// First checks per 100 ms bucket, and how many buckets / which window.
    first_per_100ms: [f64; 3],
    first_window: (f64, f64),
    first_max_10ms: f64,
    all_max_10ms: f64,
    /// uniform_reference over the first-check window: 100 ms min, max.
    random_100ms: [f64; 2],
    /// The most in 10 ms of as many uniformly random first checks over
    /// one interval, and of as many random checks as the window had.
    random_first_10ms: f64,
    random_all_10ms: f64,
    within_interval_pct: f64,
    never_checked: usize,
    /// First check after its registration returned, seconds: p10, p50, p90, max.
    first_delay: [f64; 4],
    per_instance: [f64; 3],
    below_floor: usize,
    /// Gap between consecutive checks of one instance, seconds: min, p50, p99, max.
    gaps: [f64; 4],
    other_paths: usize,
    checks_total: f64,
    failures: Vec<(&'static str, f64)>,
    by_health: [f64; 3],
}

async fn round(settings: &Settings, dir: &Path, index: usize, epoch: Instant) -> Result<Round> {
    let endpoint = Endpoint::start(epoch).await?;
    let server = Server::spawn(
        &["--store", "memory"],
        Some(LOG_FILTER),
        &dir.join(format!("round{index}.log")),
    )
    .await?;
    let registered = register_all(&server, settings, endpoint.port, epoch).await?;
    let (start, end) = (registered.start, registered.end);
    let (server_cpu, bench_cpu) = (server.cpu_seconds(), cpu_seconds("/proc/self/stat"));
    let window = settings.duration as f64;
    let interval = settings.interval as f64;
    tokio::time::sleep_until((epoch + Duration::from_secs_f64(end + window)).into()).await;
    let server_cpu = server.cpu_seconds() - server_cpu;
    let bench_cpu = cpu_seconds("/proc/self/stat") - bench_cpu;
    let rss_mib = server.memory_mib("VmRSS:").unwrap_or(f64::NAN);
    let hwm_mib = server.memory_mib("VmHWM:").unwrap_or(f64::NAN);
    let hits = endpoint.hits();
    let metrics = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(server.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    server.stop().await?;
    drop(endpoint);

    let n = settings.count;
    let in_window: Vec<f64> = hits
        .iter()
        .map(|h| h.at)
        .filter(|&t| t >= end && t < end + window)
        .collect();
    let mut per_instance: Vec<Vec<f64>> = vec![Vec::new(); n];
    for hit in &hits {
        if let Some(times) = per_instance.get_mut(hit.instance as usize) {
            times.push(hit.at);
        }
    }
    let mut firsts: Vec<f64> = per_instance
        .iter()
        .filter_map(|t| t.first().copied())
        .collect();
    firsts.sort_by(f64::total_cmp);
    // Every instance is registered, and first checks arrive at the full
    // rate, from registration end to registration start + interval.
    let mut first_window = (end, start + interval);
    if first_window.1 - first_window.0 < 1.0 {
        first_window.1 = end + interval;
    }
    let buckets = ((first_window.1 - first_window.0) / 0.1).floor() as usize;
    let random_first = uniform_reference(n, interval);
    let random_window = uniform_reference(
        (n as f64 / interval * (first_window.1 - first_window.0)) as usize,
        first_window.1 - first_window.0,
    );
    let mut delays: Vec<f64> = per_instance
        .iter()
        .zip(&registered.done_at)
        .filter_map(|(t, done)| Some(t.first()? - done))
        .collect();
    delays.sort_by(f64::total_cmp);
    let mut gaps: Vec<f64> = per_instance
        .iter()
        .flat_map(|t| t.windows(2).map(|w| w[1] - w[0]))
        .collect();
    gaps.sort_by(f64::total_cmp);
    let counts: Vec<usize> = per_instance
        .iter()
        .map(|t| {
            t.iter()
                .filter(|&&at| at >= end && at < end + window)
                .count()
        })
        .collect();
    let floor = (window / interval).floor() as usize;
    let failures = ["timeout", "refused", "status", "error"]
        .into_iter()
        .map(|kind| {
            let series = format!("signpost_check_failures_total{{kind=\"{kind}\"}}");
            (kind, metric(&metrics, &series))
        })
        .collect();
    let health = |h: &str| {
        metric(
            &metrics,
            &format!("signpost_instances_by_health{{health=\"{h}\"}}"),
        )
    };
    Ok(Round {
        created: registered.created,
        first_failure: registered.first_failure,
        reg_seconds: end - start,
        checks_per_s: in_window.len() as f64 / window,
        per_second: spread(&bucket_counts(&in_window, end, 1.0, settings.duration)),
        server_cores: server_cpu / window,
        us_per_check: server_cpu / in_window.len() as f64 * 1e6,
        bench_cores: bench_cpu / window,
        rss_mib,
        hwm_mib,
        first_per_100ms: spread(&bucket_counts(&firsts, first_window.0, 0.1, buckets)),
        first_window: (first_window.0 - end, first_window.1 - end),
        first_max_10ms: densest(&firsts, 0.01) as f64,
        all_max_10ms: densest(&in_window, 0.01) as f64,
        random_100ms: [random_window[0], random_window[1]],
        random_first_10ms: random_first[2],
        random_all_10ms: uniform_reference(in_window.len(), window)[2],
        within_interval_pct: firsts
            .iter()
            .filter(|&&t| t <= end + interval + 1.0)
            .count() as f64
            * 100.0
            / n as f64,
        never_checked: per_instance.iter().filter(|t| t.is_empty()).count(),
        first_delay: [0.1, 0.5, 0.9, 1.0].map(|q| quantile(&delays, q)),
        per_instance: spread(&counts),
        below_floor: counts.iter().filter(|&&c| c + 1 < floor).count(),
        gaps: [0.0, 0.5, 0.99, 1.0].map(|q| quantile(&gaps, q)),
        other_paths: hits.iter().filter(|h| h.instance == OTHER).count(),
        checks_total: metric(&metrics, "signpost_checks_total"),
        failures,
        by_health: [health("passing"), health("warning"), health("critical")],
    })
}

/// A column of a summary table: header, width, decimals, value.
type Column = (&'static str, usize, usize, fn(&Round) -> f64);

const LOAD: &[Column] = &[
    ("reg/s", 7, 0, |r| r.created as f64 / r.reg_seconds),
    ("201s", 6, 0, |r| r.created as f64),
    ("checks/s", 8, 1, |r| r.checks_per_s),
    ("1s min", 6, 0, |r| r.per_second[0]),
    ("1s med", 6, 0, |r| r.per_second[1]),
    ("1s max", 6, 0, |r| r.per_second[2]),
    ("srv cores", 9, 3, |r| r.server_cores),
    ("srv µs/check", 12, 1, |r| r.us_per_check),
    ("RSS MiB", 7, 1, |r| r.rss_mib),
    ("HWM MiB", 7, 1, |r| r.hwm_mib),
    ("bench cores", 11, 3, |r| r.bench_cores),
    ("failed", 6, 0, |r| r.failures.iter().map(|f| f.1).sum()),
    ("passing", 7, 0, |r| r.by_health[0]),
];

const SPREAD: &[Column] = &[
    ("1st/100ms min", 13, 0, |r| r.first_per_100ms[0]),
    ("med", 4, 0, |r| r.first_per_100ms[1]),
    ("max", 4, 0, |r| r.first_per_100ms[2]),
    ("rnd min", 7, 0, |r| r.random_100ms[0]),
    ("max", 4, 0, |r| r.random_100ms[1]),
    ("1st/10ms max", 12, 0, |r| r.first_max_10ms),
    ("rnd", 4, 0, |r| r.random_first_10ms),
    ("all/10ms max", 12, 0, |r| r.all_max_10ms),
    ("rnd", 4, 0, |r| r.random_all_10ms),
    ("1st ≤I+1s %", 11, 2, |r| r.within_interval_pct),
    ("delay p50 s", 11, 2, |r| r.first_delay[1]),
    ("per inst min", 12, 0, |r| r.per_instance[0]),
    ("med", 4, 0, |r| r.per_instance[1]),
    ("max", 4, 0, |r| r.per_instance[2]),
    ("gap min s", 9, 3, |r| r.gaps[0]),
    ("p50", 6, 3, |r| r.gaps[1]),
    ("p99", 6, 3, |r| r.gaps[2]),
    ("max", 6, 3, |r| r.gaps[3]),
];

fn table(out: &mut String, columns: &[Column], rounds: &[Round]) {
    let _ = write!(out, "{:<6}", "round");
    for (header, width, _, _) in columns {
        let _ = write!(out, " {header:>width$}");
    }
    out.push('\n');
    let mut row = |label: &str, value: &dyn Fn(&Column) -> f64| {
        let _ = write!(out, "{label:<6}");
        for column @ (_, width, decimals, _) in columns {
            let _ = write!(out, " {:>width$.decimals$}", value(column));
        }
        out.push('\n');
    };
    for (i, r) in rounds.iter().enumerate() {
        row(&(i + 1).to_string(), &|c| (c.3)(r));
    }
    if rounds.len() > 1 {
        row("median", &|c| {
            median(&mut rounds.iter().map(|r| (c.3)(r)).collect::<Vec<_>>())
        });
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benches/checks.rs is a benchmark: run `cargo bench --bench checks`");
        return Ok(());
    }
    let epoch = Instant::now();
    let settings = Settings {
        rounds: env_usize("ROUNDS", 3),
        count: env_usize("COUNT", 10_000),
        clients: env_usize("CLIENTS", 64),
        interval: env_usize("INTERVAL", 10),
        duration: env_usize("DURATION", 30),
    };
    let dir = TempDir::new("signpost-bench-checks")?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = shell_line("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]).unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("model name"))?;
            Some(line.split_once(':')?.1.trim().to_string())
        })
        .unwrap_or_default();
    let (n, interval) = (settings.count as f64, settings.interval as f64);
    eprintln!(
        "signpost checks bench: rounds={} count={} clients={} interval={} s duration={} s\n  binary {BIN}\n  scratch {}",
        settings.rounds,
        settings.count,
        settings.clients,
        settings.interval,
        settings.duration,
        dir.0.display()
    );
    let mut rounds = Vec::new();
    for i in 0..settings.rounds {
        let r = round(&settings, &dir.0, i, epoch).await?;
        eprintln!(
            "  round {}: registered {}/{} in {:.2} s{}; {:.1} checks/s (1-s buckets {:.0}/{:.0}/{:.0}); \
             server {:.3} cores, {:.1} µs/check, RSS {:.1} MiB, HWM {:.1} MiB; bench {:.3} cores\n    \
             first checks per 100 ms over +{:.2}..+{:.2} s: {:.0}/{:.0}/{:.0} (random {:.0}..{:.0}), densest 10 ms {:.0} (random {:.0}), all checks {:.0} (random {:.0}); \
             {:.2} % within I+1 s, {} never checked; delay after registration p10/p50/p90/max {:.2}/{:.2}/{:.2}/{:.2} s\n    \
             checks per instance {:.0}/{:.0}/{:.0} ({} below {}); gaps min/p50/p99/max {:.3}/{:.3}/{:.3}/{:.3} s; \
             checks_total {} failures {} other paths {}; passing/warning/critical {}/{}/{}",
            i + 1,
            r.created,
            settings.count,
            r.reg_seconds,
            r.first_failure
                .as_ref()
                .map(|f| format!(" (first failure: {f})"))
                .unwrap_or_default(),
            r.checks_per_s,
            r.per_second[0],
            r.per_second[1],
            r.per_second[2],
            r.server_cores,
            r.us_per_check,
            r.rss_mib,
            r.hwm_mib,
            r.bench_cores,
            r.first_window.0,
            r.first_window.1,
            r.first_per_100ms[0],
            r.first_per_100ms[1],
            r.first_per_100ms[2],
            r.random_100ms[0],
            r.random_100ms[1],
            r.first_max_10ms,
            r.random_first_10ms,
            r.all_max_10ms,
            r.random_all_10ms,
            r.within_interval_pct,
            r.never_checked,
            r.first_delay[0],
            r.first_delay[1],
            r.first_delay[2],
            r.first_delay[3],
            r.per_instance[0],
            r.per_instance[1],
            r.per_instance[2],
            r.below_floor,
            (settings.duration / settings.interval).saturating_sub(1),
            r.gaps[0],
            r.gaps[1],
            r.gaps[2],
            r.gaps[3],
            r.checks_total,
            r.failures
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            r.other_paths,
            r.by_health[0],
            r.by_health[1],
            r.by_health[2],
        );
        rounds.push(r);
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== signpost {} checks bench, {date}, nproc {cores}{} ==",
        env!("CARGO_PKG_VERSION"),
        if cpu.is_empty() {
            String::new()
        } else {
            format!(", {cpu}")
        }
    );
    let _ = writeln!(
        out,
        "{} instances, HTTP check every {} s (timeout {} s) against one local endpoint in the bench process; \
         registered by {} clients; measured {} s from registration end; {} rounds, fresh server (--store memory, RUST_LOG={LOG_FILTER}) each",
        settings.count,
        settings.interval,
        settings.interval.min(2),
        settings.clients,
        settings.duration,
        settings.rounds
    );
    let _ = writeln!(
        out,
        "ideal: {:.1} checks/s, {:.1} first checks per 100 ms, {:.1} per 10 ms on average, {:.1} checks per instance in the window, gap {} s; \
         rnd = the same count of uniformly random times (median of 11 draws), what perfect random jitter would show",
        n / interval,
        n / interval / 10.0,
        n / interval / 100.0,
        settings.duration as f64 / interval,
        settings.interval
    );
    table(&mut out, LOAD, &rounds);
    table(&mut out, SPREAD, &rounds);
    print!("{out}");
    Ok(())
}
