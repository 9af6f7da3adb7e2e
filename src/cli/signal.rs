//! Passing a signal on to `run`'s child. The only unsafe code outside
//! `dns::udp`: std can only SIGKILL a child, and these are plain system
//! calls on integers.
#![allow(unsafe_code)]

use std::io;

/// Sends `signal` to process `pid` (the caller's child, not yet reaped).
pub(crate) fn send(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    // The pid is our child's and the child has not been reaped (tokio's
    // `Child::id` is `None` once it has), so it names no other process.
    let result = unsafe { libc::kill(pid, signal) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether our process group is the foreground group of the terminal on
/// stdin: then a Ctrl-C reached the child (which shares our group) from
/// the terminal itself, and passing SIGINT on would deliver it twice.
pub(crate) fn terminal_signals_our_group() -> bool {
    // SAFETY: tcgetpgrp(3) and getpgrp(2) take and return integers and
    // touch no memory of ours; tcgetpgrp returns -1 when stdin is not a
    // terminal, which is never a process group.
    unsafe { libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp() }
}
