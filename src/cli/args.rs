//! The client commands' flags (clap), and what they turn into.

use std::ffi::OsString;

use clap::{Args, Subcommand, ValueEnum};
use uuid::Uuid;

use crate::client::{Address, Check, Health, NewService};

/// What `--help` says about exit codes.
pub const EXIT_CODES: &str = "\
Exit codes (the client commands):
  0  done
  1  the server refused (its error message on stderr)
  2  bad usage
  3  the server could not be reached (the address tried on stderr)
`signpost run` exits with its command's code instead (128 + the signal's
number when a signal ended it, 127 when it could not be started).";

/// The commands that talk to a running server's admin API.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register an instance; prints its id (the object with --json).
    #[command(after_help = EXIT_CODES)]
    Register(RegisterArgs),
    /// Renew an instance's TTL, reporting its health.
    #[command(after_help = EXIT_CODES)]
    Heartbeat(HeartbeatArgs),
    /// Remove an instance.
    #[command(after_help = EXIT_CODES)]
    Deregister(IdArgs),
    /// List live instances as a table (the API's JSON with --json).
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
    /// Print host:port of one serving instance of TYPE, for scripts.
    #[command(after_help = EXIT_CODES)]
    Discover(DiscoverArgs),
    /// Print one line per event until interrupted; reconnects when the
    /// server restarts.
    #[command(after_help = EXIT_CODES)]
    Watch(WatchArgs),
    /// Run CMD and keep it registered for exactly as long as it lives.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// Where the admin API is.
#[derive(Debug, Clone, Args)]
pub(crate) struct Connection {
    /// The admin API.
    #[arg(
        long,
        value_name = "URL",
        env = "SIGNPOST_ADDR",
        default_value = "http://127.0.0.1:8700"
    )]
    pub(crate) addr: Address,
    /// The admin API token, when the server has tokens. Prefer the
    /// environment variable: a command's arguments are visible to every
    /// user of the host (ps).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SIGNPOST_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
}

/// What every registration says besides its type, name and host.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServiceArgs {
    /// Its port.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: u16,
    /// A tag (repeat for more).
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,
    /// A metadata pair, served as TXT (repeat for more).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = key_value)]
    pub(crate) meta: Vec<(String, String)>,
    /// Seconds it lives without a heartbeat [default: the server's, 30].
    #[arg(long, value_name = "SECONDS")]
    pub(crate) ttl: Option<u32>,
    /// Lower is preferred; higher priorities are backups [default: 0].
    #[arg(long)]
    pub(crate) priority: Option<u16>,
    /// Share of traffic within its priority [default: 1].
    #[arg(long)]
    pub(crate) weight: Option<u16>,
    /// Where it runs (a DNS label), for answers steered by locality.
    #[arg(long)]
    pub(crate) locality: Option<String>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.into(), value.into())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

impl ServiceArgs {
    pub(crate) fn to_service(&self, name: &str, service_type: &str, host: &str) -> NewService {
        let mut service = NewService::new(name, service_type, host, self.port);
        for tag in &self.tags {
            service = service.tag(tag);
        }
        for (key, value) in &self.meta {
            service = service.meta(key, value);
        }
        if let Some(ttl) = self.ttl {
            service = service.ttl(ttl);
        }
        if let Some(priority) = self.priority {
            service = service.priority(priority);
        }
        if let Some(weight) = self.weight {
            service = service.weight(weight);
        }
        if let Some(locality) = &self.locality {
            service = service.locality(locality);
        }
        service
    }
}

#[derive(Debug, Clone, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub(crate) connection: Connection,
    /// Its type (a DNS label: <type>.<zone>).
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) service_type: String,
    /// Its name, unique within the type (a DNS label).
    #[arg(long)]
    pub(crate) name: String,
    /// Where it is reached: an IP address or a host name.
    #[arg(long)]
    pub(crate) host: String,
    #[command(flatten)]
    pub(crate) service: ServiceArgs,
    #[command(flatten)]
    pub(crate) check: ServerCheckArgs,
    /// Seconds between checks [default: 10].
    #[arg(long, value_name = "SECONDS", requires = "ServerCheckArgs")]
    pub(crate) interval: Option<f64>,
    /// Print the whole service object, as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// An active check the server runs.
#[derive(Debug, Clone, Args)]
#[group(multiple = false)]
pub(crate) struct ServerCheckArgs {
    /// The server GETs this URL: 2xx passing, 429 warning, else critical.
    #[arg(long, value_name = "URL")]
    pub(crate) check_http: Option<String>,
    /// The server connects to this address: connected is passing.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) check_tcp: Option<String>,
}

impl RegisterArgs {
    pub(crate) fn to_service(&self) -> NewService {
        let service = self
            .service
            .to_service(&self.name, &self.service_type, &self.host);
        let check = match (&self.check.check_http, &self.check.check_tcp) {
            (Some(url), _) => Check::http(url),
            (None, Some(address)) => Check::tcp(address),
            (None, None) => return service,
        };
        match self.interval {
            Some(seconds) => service.check(check.interval(seconds_arg(seconds))),
            None => service.check(check),
        }
    }
}

/// Seconds as given (a negative or absurd value is the server's to refuse).
fn seconds_arg(seconds: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(seconds).unwrap_or_default()
}

/// A health as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Status {
    Passing,
    Warning,
    Critical,
}

impl From<Status> for Health {
    fn from(status: Status) -> Health {
        match status {
            Status::Passing => Health::Passing,
            Status::Warning => Health::Warning,
            Status::Critical => Health::Critical,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct HeartbeatArgs {
    #[command(flatten)]
    pub(crate) connection: Connection,
    /// The instance's id (as `register` printed it).
    pub(crate) id: Uuid,
    /// The health to report (critical: still registered, out of DNS).
    #[arg(long, value_enum, default_value = "passing")]
    pub(crate) status: Status,
    /// Why, shown in the service object.
    #[arg(long, value_name = "TEXT")]
    pub(crate) output: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub(crate) connection: Connection,
    /// The instance's id.
    pub(crate) id: Uuid,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub(crate) connection: Connection,
    /// Only this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) service_type: Option<String>,
    /// Only instances with this tag.
    #[arg(long)]
    pub(crate) tag: Option<String>,
    /// Only this health (passing: what DNS serves, warning included).
    #[arg(long, value_enum)]
    pub(crate) health: Option<Status>,
    /// Print the API's JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DiscoverArgs {
    #[command(flatten)]
    pub(crate) connection: Connection,
    /// The type to find.
    #[arg(value_name = "TYPE")]
    pub(crate) service_type: String,
    /// Only instances with this tag.
    #[arg(long)]
    pub(crate) tag: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub(crate) connection: Connection,
    /// Only events of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) service_type: Option<String>,
    /// Print each event's JSON as the server sent it.
    #[arg(long)]
    pub(crate) json: bool,
}

const RUN_HELP: &str = "\
Starts CMD (stdin, stdout and stderr passed through) and registers it,
heartbeating every ttl/3 and registering again if the registry forgets it.
SIGINT, SIGTERM and SIGHUP are passed on to CMD. When CMD exits, signpost
deregisters it and exits with CMD's exit code (128 + the signal's number
when a signal ended it; 127 when CMD could not be started, 2 for bad
usage). CMD starts even when the registry cannot be reached: signpost
keeps trying, and says what it does on stderr.

Example: signpost run --type web --port 8000 --check-http / -- python3 -m http.server 8000";

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub(crate) connection: Connection,
    /// Its type (a DNS label: <type>.<zone>).
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) service_type: String,
    /// Its name [default: <hostname>-<port>].
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Where others reach it: this machine's address when they run
    /// elsewhere.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    #[command(flatten)]
    pub(crate) service: ServiceArgs,
    #[command(flatten)]
    pub(crate) check: LocalCheckArgs,
    /// Seconds between checks [default: a third of --ttl, at most 10].
    #[arg(long, value_name = "SECONDS", requires = "LocalCheckArgs")]
    pub(crate) interval: Option<f64>,
    /// Register only once something accepts TCP connections on
    /// --host:--port.
    #[arg(long)]
    pub(crate) wait_port: bool,
    /// Seconds --wait-port waits before giving up registering.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60.0,
        requires = "wait_port"
    )]
    pub(crate) wait_timeout: f64,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub(crate) command: Vec<OsString>,
}

/// A check signpost runs itself against CMD, reporting `critical` in its
/// heartbeats while it fails.
#[derive(Debug, Clone, Args)]
#[group(multiple = false)]
pub(crate) struct LocalCheckArgs {
    /// GET this URL, or this path on --host:--port: 2xx passing, 429
    /// warning, else critical.
    #[arg(long, value_name = "PATH|URL")]
    pub(crate) check_http: Option<String>,
    /// Connect to HOST:PORT [default: --host:--port]: connected is passing.
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = "")]
    pub(crate) check_tcp: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}
