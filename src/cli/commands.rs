//! The one-shot commands: each makes its request(s), prints, and returns
//! its exit code.

use std::process::ExitCode;

use super::args::{DiscoverArgs, HeartbeatArgs, IdArgs, ListArgs, RegisterArgs, WatchArgs};
use super::exit::failed;
use super::output::{colour_on_stdout, event_line, host_port, print_line, table};
use crate::client::{Client, Filter};

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("a service object serialises")
}

pub(crate) async fn register(client: Client, args: RegisterArgs) -> ExitCode {
    match client.register_once(&args.to_service()).await {
        Ok(view) if args.json => done(print_line(&json_text(&view))),
        Ok(view) => done(print_line(&view.id.to_string())),
        Err(error) => failed(&error),
    }
}

pub(crate) async fn heartbeat(client: Client, args: HeartbeatArgs) -> ExitCode {
    let beat = client.heartbeat(args.id, args.status.into(), args.output.as_deref());
    match beat.await {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => failed(&error),
    }
}

pub(crate) async fn deregister(client: Client, args: IdArgs) -> ExitCode {
    match client.deregister(args.id).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => failed(&error),
    }
}

pub(crate) async fn list(client: Client, args: ListArgs) -> ExitCode {
    let filter = Filter {
        service_type: args.service_type,
        tag: args.tag,
        health: args.health.map(Into::into),
    };
    match client.list(&filter).await {
        Ok(services) if args.json => done(print_line(&json_text(
            &serde_json::json!({ "services": services }),
        ))),
        Ok(services) => done(print_line(&table(
            &services,
            unix_now(),
            colour_on_stdout(),
        ))),
        Err(error) => failed(&error),
    }
}

pub(crate) async fn discover(client: Client, args: DiscoverArgs) -> ExitCode {
    match client
        .discover(&args.service_type, args.tag.as_deref())
        .await
    {
        Ok(view) => done(print_line(&host_port(&view.host, view.port))),
        Err(error) => failed(&error),
    }
}

/// Prints events until interrupted, or until stdout is closed.
pub(crate) async fn watch(client: Client, args: WatchArgs) -> ExitCode {
    let mut events = match client.events(args.service_type.as_deref()).await {
        Ok(events) => events,
        Err(error) => return failed(&error),
    };
    let colour = colour_on_stdout();
    loop {
        let event = match events.next().await {
            Ok(event) => event,
            Err(error) => return failed(&error),
        };
        if let Some(line) = event_line(&event, args.json, unix_now(), colour)
            && !print_line(&line)
        {
            return ExitCode::SUCCESS;
        }
    }
}

/// Success, whether or not stdout could take the output (a closed pipe is
/// the reader's choice).
fn done(_printed: bool) -> ExitCode {
    ExitCode::SUCCESS
}
