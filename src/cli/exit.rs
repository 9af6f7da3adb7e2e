//! Exit codes, and what is said on stderr on the way out.

use std::process::ExitCode;

use crate::client::Error;

/// The server refused; its message is on stderr.
pub(crate) const REFUSED: u8 = 1;
/// Bad usage (clap exits with 2 for its own errors too).
pub(crate) const USAGE: u8 = 2;
/// The server could not be reached.
pub(crate) const UNREACHABLE: u8 = 3;

/// Says why on stderr (the server's message alone for a refusal) and
/// returns the exit code for `error`.
pub(crate) fn failed(error: &Error) -> ExitCode {
    match error {
        Error::Refused { message, .. } => {
            eprintln!("{message}");
            ExitCode::from(REFUSED)
        }
        Error::Unreachable { .. } => {
            eprintln!("error: {error}");
            ExitCode::from(UNREACHABLE)
        }
        _ => {
            eprintln!("error: {error}");
            ExitCode::from(REFUSED)
        }
    }
}

/// Bad usage found after parsing: says why, exit code 2.
pub(crate) fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(USAGE)
}
