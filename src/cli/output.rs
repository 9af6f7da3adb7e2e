//! What the commands print: the `list` table, `watch` lines, `discover`'s
//! `host:port`, and colour (only on a terminal, never with `NO_COLOR`).

use std::io::{IsTerminal, Write};

use crate::client::{ChangeKind, Event, Health, ResyncCause, ServiceView};

/// Whether stdout gets colour.
pub(crate) fn colour_on_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Writes `text` and a newline to stdout. A closed stdout (`| head`) is
/// not an error worth more than stopping: false then.
pub(crate) fn print_line(text: &str) -> bool {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .is_ok()
}

fn paint(text: &str, code: &str, colour: bool) -> String {
    if colour {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn health_colour(health: Health) -> &'static str {
    match health {
        Health::Passing => "32",
        Health::Warning => "33",
        Health::Critical => "31",
    }
}

/// `host:port`, IPv6 in brackets.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Seconds left as `42s`, `4m05s`, `2h05m`; `expired` when none.
pub(crate) fn expires_in(seconds: f64) -> String {
    if seconds <= 0.0 {
        return "expired".into();
    }
    let seconds = seconds.ceil() as u64;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// The aligned table `list` prints; `now` in unix seconds.
pub(crate) fn table(services: &[ServiceView], now: f64, colour: bool) -> String {
    const HEADER: [&str; 7] = [
        "TYPE",
        "NAME",
        "ADDRESS",
        "PORT",
        "HEALTH",
        "EXPIRES IN",
        "TAGS",
    ];
    let rows: Vec<[String; 7]> = services
        .iter()
        .map(|s| {
            [
                s.service_type.clone(),
                s.name.clone(),
                s.host.clone(),
                s.port.to_string(),
                s.health.to_string(),
                expires_in(s.expires_at - now),
                s.tags.join(","),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [String; 7], health: Option<Health>| {
        let mut out = String::new();
        for (column, cell) in cells.into_iter().enumerate() {
            let last = column == HEADER.len() - 1;
            let pad = if last {
                0
            } else {
                widths[column] - cell.chars().count() + 2
            };
            let shown = match (column, health) {
                (4, Some(health)) => paint(&cell, health_colour(health), colour),
                _ => cell,
            };
            out.push_str(&shown);
            out.push_str(&" ".repeat(pad));
        }
        out.trim_end().to_string()
    };
    let mut lines = vec![paint(&line(HEADER.map(String::from), None), "1", colour)];
    for (row, service) in rows.into_iter().zip(services) {
        lines.push(line(row, Some(service.health)));
    }
    lines.join("\n")
}

/// `HH:MM:SSZ` of a unix time (UTC: no time zone database needed).
fn clock(timestamp: f64) -> String {
    let seconds = timestamp.max(0.0) as u64 % 86_400;
    format!(
        "{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

/// The line `watch` prints for an event; `None` when there is nothing to
/// say (a reconnection, with --json).
pub(crate) fn event_line(event: &Event, json: bool, now: f64, colour: bool) -> Option<String> {
    match event {
        Event::Change(change) if json => Some(change.json.clone()),
        Event::Resync(resync) if json => resync.json.clone(),
        Event::Change(change) => {
            let kind = format!("{:<10}", change.kind.as_str());
            let what = match (&change.kind, &change.service) {
                (ChangeKind::Panic, _) => {
                    let data = &change.data;
                    let entered = data["panic"].as_bool().unwrap_or(false);
                    format!(
                        "{} {} panic mode ({} of {} instances not critical)",
                        data["service_type"].as_str().unwrap_or("?"),
                        if entered { "entered" } else { "left" },
                        data["not_critical"],
                        data["instances"],
                    )
                }
                (_, Some(service)) => describe_change(change.kind.clone(), service, change, colour),
                (_, None) => change.data.to_string(),
            };
            Some(format!("{} {kind} {what}", clock(change.timestamp)))
        }
        Event::Resync(resync) => {
            let why = match resync.cause {
                ResyncCause::Lagged { missed } => format!("missed {missed} events"),
                ResyncCause::Reconnected => "reconnected".to_string(),
            };
            let state = match &resync.services {
                Some(services) => format!("; {} live instances now", services.len()),
                None => String::new(),
            };
            Some(format!("{} {:<10} {why}{state}", clock(now), "resync"))
        }
    }
}

fn describe_change(
    kind: ChangeKind,
    service: &ServiceView,
    change: &crate::client::Change,
    colour: bool,
) -> String {
    let who = format!(
        "{}/{} {}",
        service.service_type,
        service.name,
        host_port(&service.host, service.port)
    );
    let health = paint(
        service.health.as_str(),
        health_colour(service.health),
        colour,
    );
    match kind {
        ChangeKind::Register => format!("{who} {health}"),
        ChangeKind::Health => match change.previous() {
            Some(previous) => format!("{who} {previous} -> {health}"),
            None => format!("{who} {health}"),
        },
        _ => match change.reason() {
            Some(reason) => format!("{who} ({reason})"),
            None => who,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, host: &str, health: Health, tags: &[&str]) -> ServiceView {
        ServiceView {
            id: uuid::Uuid::nil(),
            name: name.into(),
            service_type: "web".into(),
            host: host.into(),
            port: 8080,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            metadata: Default::default(),
            ttl: 30,
            priority: 0,
            weight: 1,
            locality: None,
            registered_at: 1000.0,
            last_heartbeat: 1000.0,
            expires_at: 1030.0,
            health,
            output: None,
            check: None,
            check_health: None,
            check_output: None,
            owner: None,
        }
    }

    #[test]
    fn the_table_is_aligned_and_coloured_only_when_asked() {
        let services = [
            service("web-1", "10.0.0.5", Health::Passing, &["api", "v2"]),
            service("web-22", "::1", Health::Critical, &[]),
        ];
        let plain = table(&services, 1000.5, false);
        assert_eq!(
            plain,
            "TYPE  NAME    ADDRESS   PORT  HEALTH    EXPIRES IN  TAGS\n\
             web   web-1   10.0.0.5  8080  passing   30s         api,v2\n\
             web   web-22  ::1       8080  critical  30s"
        );
        let coloured = table(&services, 1000.5, true);
        assert!(coloured.contains("\x1b[31mcritical\x1b[0m"), "{coloured}");
        assert!(coloured.starts_with("\x1b[1mTYPE"), "{coloured}");
        assert_eq!(
            table(&[], 0.0, false),
            "TYPE  NAME  ADDRESS  PORT  HEALTH  EXPIRES IN  TAGS"
        );
    }

    #[test]
    fn durations_addresses_and_clocks_read_well() {
        assert_eq!(expires_in(0.0), "expired");
        assert_eq!(expires_in(0.2), "1s");
        assert_eq!(expires_in(59.0), "59s");
        assert_eq!(expires_in(245.0), "4m05s");
        assert_eq!(expires_in(7500.0), "2h05m");
        assert_eq!(host_port("10.0.0.5", 80), "10.0.0.5:80");
        assert_eq!(host_port("::1", 80), "[::1]:80");
        assert_eq!(host_port("db.example", 5432), "db.example:5432");
        assert_eq!(clock(86_400.0 + 3_723.9), "01:02:03Z");
    }
}
