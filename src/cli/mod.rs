//! The `signpost` binary's client commands (`register`, `heartbeat`,
//! `deregister`, `list`, `discover`, `watch`, `run`, `completions`), on
//! [`crate::client`]. `main.rs` parses the flags and calls [`main`]; this
//! is the binary's, not a library API.

mod args;
mod commands;
mod exit;
mod log;
mod output;
mod run;
mod signal;

use std::io::Write;
use std::process::ExitCode;

pub use args::{Command, EXIT_CODES};

use crate::client::Client;

/// Runs one client command; `cli` builds the whole command line (for
/// completions). Never panics on a refusal, an unreachable server or bad
/// usage: those are exit codes 1, 3 and 2 ([`EXIT_CODES`]).
pub fn main(command: Command, cli: impl FnOnce() -> clap::Command) -> ExitCode {
    if let Command::Completions(args) = &command {
        let mut cli = cli();
        let name = cli.get_name().to_string();
        // Into a buffer first: clap_complete panics when its writer fails
        // (a closed pipe), and a closed stdout is the reader's choice.
        let mut script = Vec::new();
        clap_complete::generate(args.shell, &mut cli, name, &mut script);
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(&script).and_then(|()| stdout.flush());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return exit::usage(&format!("cannot start: {error}")),
    };
    runtime.block_on(dispatch(command))
}

/// A client of `connection`, with its token (`--token`, or
/// `SIGNPOST_ADMIN_TOKEN`) when it has one.
fn client(connection: &args::Connection) -> Client {
    let client = Client::at(connection.addr.clone());
    match &connection.token {
        Some(token) if !token.is_empty() => client.with_token(token),
        _ => client,
    }
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Register(args) => commands::register(client(&args.connection), args).await,
        Command::Heartbeat(args) => commands::heartbeat(client(&args.connection), args).await,
        Command::Deregister(args) => commands::deregister(client(&args.connection), args).await,
        Command::List(args) => commands::list(client(&args.connection), args).await,
        Command::Discover(args) => commands::discover(client(&args.connection), args).await,
        Command::Watch(args) => {
            log::init();
            commands::watch(client(&args.connection), args).await
        }
        Command::Run(args) => {
            log::init();
            let client = client(&args.connection);
            run::run(args, client).await
        }
        Command::Completions(_) => ExitCode::SUCCESS,
    }
}
