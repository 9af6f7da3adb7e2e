//! Counters for `/metrics`, rendered in the Prometheus text format.
//!
//! Every counter is a relaxed atomic: the DNS path pays one `fetch_add` per
//! query. Gauges (instances registered and serving) are computed from the
//! registry when scraped, so they cannot drift from it.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::checks::probe::FailureKind;
use crate::registry::Registry;
use crate::service::Health;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Query types counted separately; everything else is `other`.
const QTYPES: [&str; 10] = [
    "A", "AAAA", "SRV", "TXT", "PTR", "SOA", "NS", "ANY", "HINFO", "other",
];
/// Response codes counted separately; everything else is `other`.
const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS",
];

fn qtype_index(qtype: RecordType) -> usize {
    match qtype {
        RecordType::A => 0,
        RecordType::AAAA => 1,
        RecordType::SRV => 2,
        RecordType::TXT => 3,
        RecordType::PTR => 4,
        RecordType::SOA => 5,
        RecordType::NS => 6,
        RecordType::ANY => 7,
        RecordType::HINFO => 8,
        _ => 9,
    }
}

fn rcode_index(rcode: ResponseCode) -> usize {
    match rcode {
        ResponseCode::NoError => 0,
        ResponseCode::FormErr => 1,
        ResponseCode::ServFail => 2,
        ResponseCode::NXDomain => 3,
        ResponseCode::NotImp => 4,
        ResponseCode::Refused => 5,
        _ => 6,
    }
}

/// All of signpost's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    queries: [[Counter; RCODES.len()]; QTYPES.len()],
    /// Packets dropped without an answer (too short, or a response).
    pub dns_dropped: Counter,
    /// UDP answers cut to fit the client's payload size (TC set).
    pub dns_truncated: Counter,
    /// TCP connections refused because the connection limit was reached.
    pub dns_tcp_refused: Counter,
    /// Answers about a type in panic mode (critical instances included).
    pub dns_panic_answers: Counter,
    /// UDP queries over the rate limit, dropped unanswered.
    pub dns_rate_limited_dropped: Counter,
    /// UDP queries over the rate limit, answered with TC (the slip).
    pub dns_rate_limited_slipped: Counter,
    /// Forwarded queries an upstream answered (its answer relayed).
    pub dns_forwarded_answered: Counter,
    /// Forwarded queries no upstream answered (SERVFAIL).
    pub dns_forwarded_failed: Counter,
    /// Queries not forwarded because `dns.forward_max_in_flight` were
    /// (SERVFAIL at once).
    pub dns_forwarded_refused: Counter,
    pub registrations_created: Counter,
    pub registrations_replaced: Counter,
    pub registrations_rejected: Counter,
    pub deregistrations: Counter,
    pub heartbeats: Counter,
    pub heartbeats_unknown: Counter,
    pub expired: Counter,
    /// Writes the store could not commit (answered 503, nothing applied).
    pub store_write_failures: Counter,
    /// Active checks completed, whatever their result.
    pub checks_run: Counter,
    /// Failed checks, by [`FailureKind`] (in `FailureKind::ALL` order).
    check_failures: [Counter; 4],
    /// Instances removed because they stayed critical `deregister_after`.
    pub deregistered_critical: Counter,
    /// Events a slow `/v1/events` subscriber missed.
    pub events_missed: Counter,
    /// `/v1/events` streams refused: `admin.events_max_streams` were open.
    pub events_refused: Counter,
    /// Registrations refused by `registry.registrations_per_source` (429).
    pub registrations_limited: Counter,
    /// Registrations refused because the registry was full (507).
    pub registrations_full: Counter,
    /// Admin connections closed at once: `admin.max_connections` reached.
    pub admin_refused_limit: Counter,
    /// Admin connections closed at once: their source held
    /// `admin.max_connections_per_source`.
    pub admin_refused_per_source: Counter,
    /// Admin connections closed after `admin.idle_timeout` without a byte.
    pub admin_idle_closed: Counter,
}

impl Metrics {
    /// Counts one answered query.
    pub fn count_query(&self, qtype: RecordType, rcode: ResponseCode) {
        self.queries[qtype_index(qtype)][rcode_index(rcode)].inc();
    }

    /// Counts one failed check.
    pub fn count_check_failure(&self, kind: FailureKind) {
        self.check_failures[kind as usize].inc();
    }

    /// Failed checks of one kind so far.
    pub fn check_failures(&self, kind: FailureKind) -> u64 {
        self.check_failures[kind as usize].get()
    }

    /// Answered queries of one type and rcode (as named in `/metrics`).
    pub fn queries(&self, qtype: &str, rcode: &str) -> u64 {
        let q = QTYPES.iter().position(|t| *t == qtype);
        let r = RCODES.iter().position(|c| *c == rcode);
        match (q, r) {
            (Some(q), Some(r)) => self.queries[q][r].get(),
            _ => 0,
        }
    }

    /// The Prometheus text exposition of every metric.
    /// `subscribers` is the number of connected `/v1/events` streams.
    pub fn render(&self, registry: &Registry, subscribers: usize) -> String {
        let mut out = String::with_capacity(4096);
        self.render_queries(&mut out);
        self.render_counters(&mut out);
        render_gauges(&mut out, registry, subscribers);
        out
    }

    fn render_queries(&self, out: &mut String) {
        out.push_str("# HELP signpost_dns_queries_total DNS queries answered, by query type and response code.\n");
        out.push_str("# TYPE signpost_dns_queries_total counter\n");
        for (q, qtype) in QTYPES.iter().enumerate() {
            for (r, rcode) in RCODES.iter().enumerate() {
                let n = self.queries[q][r].get();
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "signpost_dns_queries_total{{qtype=\"{qtype}\",rcode=\"{rcode}\"}} {n}"
                    );
                }
            }
        }
    }

    /// The plain counters. Over 100 lines only because it is one table, a
    /// counter per entry, each field on its own line.
    fn render_counters(&self, out: &mut String) {
        let counters: &[(&str, &str, &str, u64)] = &[
            (
                "signpost_dns_dropped_total",
                "DNS packets dropped unanswered (runt or not a query).",
                "",
                self.dns_dropped.get(),
            ),
            (
                "signpost_dns_truncated_total",
                "UDP answers truncated to the client's payload size.",
                "",
                self.dns_truncated.get(),
            ),
            (
                "signpost_dns_tcp_refused_total",
                "TCP connections closed at once because the limit was reached.",
                "",
                self.dns_tcp_refused.get(),
            ),
            (
                "signpost_dns_panic_answers_total",
                "Answers about a type in panic mode, which include its critical instances.",
                "",
                self.dns_panic_answers.get(),
            ),
            (
                "signpost_dns_forwarded_total",
                "Queries forwarded to upstream nameservers, by result: answered (an upstream's answer relayed), failed (none answered: SERVFAIL), refused (dns.forward_max_in_flight reached: SERVFAIL at once).",
                "result=\"answered\"",
                self.dns_forwarded_answered.get(),
            ),
            (
                "signpost_dns_forwarded_total",
                "",
                "result=\"failed\"",
                self.dns_forwarded_failed.get(),
            ),
            (
                "signpost_dns_forwarded_total",
                "",
                "result=\"refused\"",
                self.dns_forwarded_refused.get(),
            ),
            (
                "signpost_dns_rate_limited_total",
                "UDP queries over dns.rate_limit, by what was done with them.",
                "action=\"dropped\"",
                self.dns_rate_limited_dropped.get(),
            ),
            (
                "signpost_dns_rate_limited_total",
                "",
                "action=\"slipped\"",
                self.dns_rate_limited_slipped.get(),
            ),
            (
                "signpost_registrations_total",
                "Registration requests, by result.",
                "result=\"created\"",
                self.registrations_created.get(),
            ),
            (
                "signpost_registrations_total",
                "",
                "result=\"replaced\"",
                self.registrations_replaced.get(),
            ),
            (
                "signpost_registrations_total",
                "",
                "result=\"rejected\"",
                self.registrations_rejected.get(),
            ),
            (
                "signpost_registrations_total",
                "",
                "result=\"limited\"",
                self.registrations_limited.get(),
            ),
            (
                "signpost_registrations_total",
                "",
                "result=\"full\"",
                self.registrations_full.get(),
            ),
            (
                "signpost_deregistrations_total",
                "Instances removed by DELETE.",
                "",
                self.deregistrations.get(),
            ),
            (
                "signpost_heartbeats_total",
                "Heartbeats, by result.",
                "result=\"ok\"",
                self.heartbeats.get(),
            ),
            (
                "signpost_heartbeats_total",
                "",
                "result=\"unknown\"",
                self.heartbeats_unknown.get(),
            ),
            (
                "signpost_expired_total",
                "Instances removed because their TTL lapsed.",
                "",
                self.expired.get(),
            ),
            (
                "signpost_store_write_failures_total",
                "Store writes that could not be committed (answered 503, nothing changed).",
                "",
                self.store_write_failures.get(),
            ),
            (
                "signpost_checks_total",
                "Active health checks completed.",
                "",
                self.checks_run.get(),
            ),
            (
                "signpost_deregistered_critical_total",
                "Instances removed after staying critical for their check's deregister_after.",
                "",
                self.deregistered_critical.get(),
            ),
            (
                "signpost_events_missed_total",
                "Events that slow /v1/events subscribers missed (each told with a lagged event).",
                "",
                self.events_missed.get(),
            ),
            (
                "signpost_events_refused_total",
                "/v1/events streams refused because admin.events_max_streams were open.",
                "",
                self.events_refused.get(),
            ),
            (
                "signpost_admin_connections_closed_total",
                "Admin connections closed by signpost, by reason: limit (admin.max_connections reached), per_source (the source held admin.max_connections_per_source), idle (no byte for admin.idle_timeout).",
                "reason=\"limit\"",
                self.admin_refused_limit.get(),
            ),
            (
                "signpost_admin_connections_closed_total",
                "",
                "reason=\"per_source\"",
                self.admin_refused_per_source.get(),
            ),
            (
                "signpost_admin_connections_closed_total",
                "",
                "reason=\"idle\"",
                self.admin_idle_closed.get(),
            ),
        ];
        for &(name, help, labels, value) in counters {
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            }
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP signpost_check_failures_total Failed health checks, by kind.\n# TYPE signpost_check_failures_total counter"
        );
        for kind in FailureKind::ALL {
            let _ = writeln!(
                out,
                "signpost_check_failures_total{{kind=\"{}\"}} {}",
                kind.as_str(),
                self.check_failures[kind as usize].get()
            );
        }
    }
}

/// The gauges, computed from the registry when scraped.
fn render_gauges(out: &mut String, registry: &Registry, subscribers: usize) {
    // Running counts kept by the registry: O(1), not a pass over anything.
    let counts = registry.counts();
    let _ = writeln!(
        out,
        "# HELP signpost_instances_by_health Unexpired instances, by health (the worse of heartbeat and check).\n# TYPE signpost_instances_by_health gauge"
    );
    for (health, count) in [
        (Health::Passing, counts.passing()),
        (Health::Warning, counts.warning),
        (Health::Critical, counts.critical()),
    ] {
        let _ = writeln!(
            out,
            "signpost_instances_by_health{{health=\"{health}\"}} {count}"
        );
    }
    let (instances, serving, types) = (counts.instances, counts.not_critical, counts.types);
    let gauges = [
        (
            "signpost_instances",
            "Instances registered and unexpired.",
            instances,
        ),
        (
            "signpost_instances_serving",
            "Instances DNS serves now (unexpired, passing or warning).",
            serving,
        ),
        (
            "signpost_types",
            "Service types with at least one instance.",
            types,
        ),
        (
            "signpost_event_subscribers",
            "Connected /v1/events streams.",
            subscribers,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
}
