//! What the process-level benchmarks (`checks`, `registrations`) share: the
//! real `signpost` binary as a child process, a scratch directory, and
//! /proc readings. Each bench uses a different part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_signpost");
/// Longest wait for a server to log its admin address or answer /v1/health.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a server to exit after SIGTERM.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// A positive integer setting from the environment, or `default`.
pub(crate) fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => panic!("{name} must be a positive integer, got {value:?}"),
        },
        Err(_) => default,
    }
}

/// A scratch directory, removed when dropped.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos:09}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server process on port 0, killed if dropped while running.
pub(crate) struct Server {
    pub child: Child,
    pub pid: u32,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Server {
    /// Spawns the binary with `args` (after port-0 listen addresses), with
    /// `RUST_LOG` set to `log_filter` when given, logging to `log`. Returns
    /// once the admin address is logged (the server binds after restoring
    /// its store).
    pub(crate) async fn spawn(
        args: &[&str],
        log_filter: Option<&str>,
        log: &Path,
    ) -> Result<Server> {
        let mut command = Command::new(BIN);
        command
            .args(["--dns-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("SIGNPOST_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(log)?))
            .kill_on_drop(true);
        if let Some(filter) = log_filter {
            command.env("RUST_LOG", filter);
        }
        let mut child = command.spawn()?;
        let pid = child.id().ok_or("server exited at once")?;
        let deadline = Instant::now() + START_TIMEOUT;
        let admin = loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(addr) = text.lines().find_map(|line| {
                let (_, rest) = line.split_once("admin listening on http://")?;
                rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
            }) {
                break addr;
            }
            if let Some(status) = child.try_wait()? {
                return Err(format!("server exited ({status}) before listening:\n{text}").into());
            }
            if Instant::now() > deadline {
                return Err(format!("server did not listen within {START_TIMEOUT:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        Ok(Server {
            child,
            pid,
            admin,
            log: log.to_path_buf(),
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Sends SIGTERM and waits for a clean exit; returns how long it took.
    pub(crate) async fn stop(mut self) -> Result<Duration> {
        let started = Instant::now();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        if !kill.success() {
            return Err(format!("kill -TERM {} failed", self.pid).into());
        }
        let status = tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .map_err(|_| format!("server did not exit within {STOP_TIMEOUT:?} of SIGTERM"))??;
        if !status.success() {
            return Err(format!("server exited with {status} after SIGTERM").into());
        }
        Ok(started.elapsed())
    }

    /// CPU seconds (user + system) the server has used so far.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.pid))
    }

    /// A `Vm…` line of /proc/PID/status, in MiB.
    pub(crate) fn memory_mib(&self, field: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }
}

/// utime + stime of a /proc/…/stat file, in seconds (0 when unreadable).
pub(crate) fn cpu_seconds(stat_path: &str) -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        shell_line("getconf", &["CLK_TCK"])
            .and_then(|s| s.parse().ok())
            .unwrap_or(100.0)
    });
    let Ok(stat) = std::fs::read_to_string(stat_path) else {
        return 0.0;
    };
    // Fields after the ")" closing the command name: state is field 3, so
    // utime (14) and stime (15) are at indexes 11 and 12.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    (field(11).unwrap_or(0.0) + field(12).unwrap_or(0.0)) / ticks
}

/// The median (NaN for none); sorts `values`.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The trimmed stdout of a command, if it ran and printed anything.
pub(crate) fn shell_line(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}
