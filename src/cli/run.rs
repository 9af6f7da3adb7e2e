//! `signpost run`: keeps an unmodified program registered for exactly as
//! long as it lives. The program starts first, whatever the registry's
//! state; registering, heartbeats (reporting what a local check sees),
//! registering again and backing off are the client library's
//! [`Registration`]; this file starts the child, passes signals on, and
//! exits with the child's code.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::args::RunArgs;
use super::exit::usage;
use super::output::host_port;
use super::signal::{send, terminal_signals_our_group};
use crate::checks::probe;
use crate::checks::{CheckRegistration, CheckSpec};
use crate::client::{Client, Registration, Reporter};
use crate::service::Health;

/// Longest the wrapper waits to deregister once the child has exited.
const DEREGISTER_WAIT: Duration = Duration::from_secs(10);
/// Longest default interval of a local check, seconds.
const MAX_DEFAULT_INTERVAL: u32 = 10;

pub(crate) async fn run(args: RunArgs, client: Client) -> ExitCode {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => default_name(&hostname(), args.service.port),
    };
    let service = args
        .service
        .to_service(&name, &args.service_type, &args.host);
    let check = match local_check(&args) {
        Ok(check) => check,
        Err(message) => return usage(&message),
    };
    let Some(wait_timeout) = Duration::try_from_secs_f64(args.wait_timeout).ok() else {
        return usage("--wait-timeout must be a number of seconds");
    };
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => return usage(&format!("cannot handle signals: {error}")),
    };
    let program = &args.command[0];
    let mut child = match tokio::process::Command::new(program)
        .args(&args.command[1..])
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            eprintln!(
                "signpost: cannot start {}: {error}",
                program.to_string_lossy()
            );
            let not_found = error.kind() == std::io::ErrorKind::NotFound;
            return ExitCode::from(if not_found { 127 } else { 126 });
        }
    };
    let (host, port) = (args.host.clone(), args.service.port);
    let ready = async { !args.wait_port || port_opens(&host, port, wait_timeout).await };
    tokio::pin!(ready);
    let (mut waiting, mut registration, mut checking) = (true, None::<Registration>, None);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            number = signals.next() => pass_on(&child, number),
            ready = &mut ready, if waiting => {
                waiting = false;
                if !ready {
                    tracing::warn!(
                        "nothing accepted connections on {} within {wait_timeout:?}: not registering",
                        host_port(&host, port)
                    );
                    continue;
                }
                let kept = client.keep_registered(service.clone());
                if let Some(check) = &check {
                    checking = Some(AbortOnDrop(tokio::spawn(check_loop(check.clone(), kept.reporter()))));
                }
                registration = Some(kept);
            }
        }
    };
    drop(checking);
    if let Some(registration) = registration {
        leave(registration).await;
    }
    match status {
        Ok(status) => ExitCode::from(exit_code(status)),
        Err(error) => {
            eprintln!(
                "signpost: lost track of {}: {error}",
                program.to_string_lossy()
            );
            ExitCode::from(1)
        }
    }
}

/// Deregisters, saying so when it cannot.
async fn leave(registration: Registration) {
    match tokio::time::timeout(DEREGISTER_WAIT, registration.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!("could not deregister: {error}"),
        Err(_) => tracing::warn!("could not deregister within {DEREGISTER_WAIT:?}"),
    }
}

/// The child's code, or 128 + the number of the signal that ended it.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

/// Passes a signal on to the child while it has not been reaped; not a
/// SIGINT that the terminal also sent it.
fn pass_on(child: &Child, number: i32) {
    if number == libc::SIGINT && terminal_signals_our_group() {
        return;
    }
    if let Some(pid) = child.id()
        && let Err(error) = send(pid, number)
    {
        tracing::warn!("could not pass signal {number} on: {error}");
    }
}

/// SIGINT, SIGTERM and SIGHUP, handled (not fatal to us) from now on.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The number of the next signal received.
    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => libc::SIGINT,
            _ = self.terminate.recv() => libc::SIGTERM,
            _ = self.hangup.recv() => libc::SIGHUP,
        }
    }
}

/// Whether something accepts TCP connections on `host:port` within
/// `limit`, trying every 100 ms.
async fn port_opens(host: &str, port: u16, limit: Duration) -> bool {
    let attempts = async {
        loop {
            let attempt = TcpStream::connect((host, port));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(limit, attempts).await.is_ok()
}

/// The check `--check-http` or `--check-tcp` asks for, validated by the
/// same rules as a registration's `check`.
fn local_check(args: &RunArgs) -> Result<Option<CheckSpec>, String> {
    let here = host_port(&args.host, args.service.port);
    let (http, tcp) = match (&args.check.check_http, &args.check.check_tcp) {
        (Some(path), _) if path.starts_with('/') => (Some(format!("http://{here}{path}")), None),
        (Some(url), _) => (Some(url.clone()), None),
        (None, Some(address)) if address.is_empty() => (None, Some(here)),
        (None, Some(address)) => (None, Some(address.clone())),
        (None, None) => return Ok(None),
    };
    let default_interval = args
        .service
        .ttl
        .map_or(MAX_DEFAULT_INTERVAL, |ttl| ttl / 3)
        .clamp(1, MAX_DEFAULT_INTERVAL);
    let check = CheckRegistration {
        http,
        tcp,
        interval: Some(args.interval.unwrap_or(f64::from(default_interval))),
        timeout: None,
        failures_before_critical: None,
        successes_before_passing: None,
        deregister_after: None,
        tls_skip_verify: None,
    };
    let flag = if check.http.is_some() {
        "--check-http"
    } else {
        "--check-tcp"
    };
    let spec = check.validate().map_err(|e| format!("{flag}: {e}"))?;
    Ok(Some(spec))
}

/// Checks the child every interval, reporting what it sees in the
/// heartbeats; logs each change of verdict.
async fn check_loop(check: CheckSpec, reporter: Reporter) {
    let mut last: Option<Health> = None;
    loop {
        // Run by the user, on their own host, for their own command: no
        // server's policy applies (checks.deny is the server's).
        let anywhere = crate::checks::target::TargetPolicy::default();
        let outcome = probe::run(&check.target, check.timeout, &anywhere).await;
        if last != Some(outcome.health) {
            tracing::info!("check {}: {}", outcome.health, outcome.output);
            last = Some(outcome.health);
        }
        reporter.report(outcome.health, Some(outcome.output));
        tokio::time::sleep(check.interval).await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// This machine's name, or `localhost` when it cannot be read.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `<hostname>-<port>` as a DNS label: the host name's first label,
/// lowercase, other characters as `-`, cut to fit 63 bytes.
fn default_name(hostname: &str, port: u16) -> String {
    let suffix = format!("-{port}");
    let first = hostname.split('.').next().unwrap_or("");
    let mut label: String = first
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect();
    label.truncate(63 - suffix.len());
    let label = label.trim_matches('-');
    let label = if label.is_empty() { "host" } else { label };
    format!("{label}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_name_is_a_dns_label_of_host_and_port() {
        assert_eq!(default_name("web01", 8000), "web01-8000");
        assert_eq!(default_name("Web01.example.com", 80), "web01-80");
        assert_eq!(default_name("my_box", 80), "my-box-80");
        assert_eq!(default_name("-._", 80), "host-80");
        let long = default_name(&"a".repeat(100), 65535);
        assert_eq!(long.len(), 63);
        assert!(long.ends_with("a-65535"));
        assert!(crate::service::is_dns_label(&default_name("Ünïcode-", 1)));
    }

    #[test]
    fn exit_codes_pass_through_and_signals_add_128() {
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
