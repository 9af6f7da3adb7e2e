//! The `signpost` binary: parse flags, set up logging, run the server until
//! SIGINT or SIGTERM; or hand a client command (`register`, `run`, …) to
//! `signpost::cli`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use signpost::{Config, Server, Settings};

#[derive(Parser)]
#[command(
    version,
    about = "DNS-based service discovery: register over HTTP, find over DNS"
)]
#[command(args_conflicts_with_subcommands = true)]
#[command(after_help = signpost::cli::EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value, parsed once at start-up"
)]
enum Command {
    /// Run the DNS and admin servers (the default).
    Serve(ServeArgs),
    #[command(flatten)]
    Client(signpost::cli::Command),
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// TOML configuration file (default: the built-in config/signpost.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// DNS listen address, UDP and TCP [default: 127.0.0.1:8600].
    #[arg(long, value_name = "ADDR")]
    dns_listen: Option<SocketAddr>,
    /// Admin HTTP listen address [default: 127.0.0.1:8700].
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Zone served [default: svc.local].
    #[arg(long, value_name = "NAME")]
    zone: Option<String>,
    /// Where registrations live: "memory" or "sqlite:PATH" [default: sqlite:data/signpost.db].
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Threads answering DNS over UDP; 0 means one per core [default: 0].
    #[arg(long, value_name = "N")]
    dns_threads: Option<usize>,
}

/// The file (or the built-in default), then the flags and the environment
/// over it, validated once.
fn load_settings(args: ServeArgs) -> Result<Settings, String> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(addr) = args.dns_listen {
        config.dns.listen = addr;
    }
    if let Some(addr) = args.admin_listen {
        config.admin.listen = addr;
    }
    if let Some(zone) = args.zone {
        config.dns.zone = zone;
    }
    if let Some(store) = args.store {
        config.store.url = store;
    }
    if let Some(threads) = args.dns_threads {
        config.dns.threads = threads;
    }
    if let Ok(token) = std::env::var("SIGNPOST_ADMIN_TOKEN") {
        config.admin.token = token;
    }
    config.validate().map_err(|e| e.to_string())
}

/// Registers for SIGINT and SIGTERM *now* (not when first polled, as
/// `tokio::signal::ctrl_c()` would), and returns a future that completes on
/// either. Called before binding, so a signal that arrives at any moment
/// after start-up stops the server cleanly instead of killing it.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
    async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Client(command)) => return signpost::cli::main(command, Cli::command),
        None => cli.serve,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let settings = match load_settings(args) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("can start the tokio runtime");
    runtime.block_on(async {
        let shutdown = shutdown_signal();
        let server = match Server::bind(settings).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!("{error}");
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        };
        match server.run(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        }
    })
}
