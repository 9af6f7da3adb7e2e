//! Micro-benchmark of the DNS answer path, without sockets: the time
//! `Responder::respond_into` takes per query, by kind of question, through
//! the fast path and through the general path (`Responder::respond`, the
//! reference it replaced for these questions), with the registry holding
//! the benchmark data set alone and then alongside many more instances.
//!
//! Run with `cargo bench --bench answer_path`. Settings (env): ROUNDS=5
//! (medians are reported), QUERIES=200000 per round, BIG=1000000 (instances
//! in the large registry, as BIG/10 types of 10; 0 skips it), HUGE=100000
//! (instances of one more type, asked for last; 0 skips it), STEER=0 (1:
//! the data set's instances get weights 1-10 and two priorities, inst08 and
//! inst09 backups, so answers are weighted and failover is decided; for the
//! cost of steering against the same build with STEER=0). A value that is
//! not a whole number in range stops it with a message naming the variable.
//! Under `cargo test` (no `--bench` argument) it does nothing.
//! `bench/answer_path.sh OLD NEW` runs two builds' executables alternately.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use signpost::dns::{Handled, Responder, Transport, ZoneSettings};
use signpost::metrics::Metrics;
use signpost::registry::Registry;
use signpost::service::{Health, ValidRegistration, validate_host};

/// Who asks: a client in no locality.
const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The whole number in environment variable `name`, `default` when it is
/// unset, at least `min`. Any other value stops the benchmark: a typo must
/// not quietly measure something else.
fn env_usize(name: &str, default: usize, min: usize) -> usize {
    let value = match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => return default,
        Err(std::env::VarError::NotUnicode(value)) => format!("{value:?}"),
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if n >= min => return n,
            _ => format!("{value:?}"),
        },
    };
    let wanted = match min {
        0 => "a whole number".to_string(),
        _ => format!("a whole number of at least {min}"),
    };
    eprintln!("answer_path: {name} must be {wanted} (unset: {default}), got {name}={value}");
    std::process::exit(2);
}

/// A registration of `name` of `service_type` at `host`, for a day.
fn spec(name: String, service_type: String, host: &str, port: u16) -> ValidRegistration {
    ValidRegistration {
        name,
        service_type,
        host: validate_host(host).unwrap(),
        port,
        tags: vec![],
        metadata: BTreeMap::new(),
        ttl: 86400,
        priority: 1,
        weight: 1,
        locality: None,
        check: None,
    }
}

/// Registers `name` of `service_type` at `host`, passing, for a day.
fn register(registry: &Registry, name: String, service_type: String, host: &str, port: u16) {
    let spec = spec(name, service_type, host, port);
    register_spec(registry, spec);
}

fn register_spec(registry: &Registry, spec: ValidRegistration) {
    let identity = registry.identity_for(&spec);
    registry.register(spec, identity, Health::Passing);
}

/// Registers `types` types of 10 instances, `typeNNNNNN`/`instMM`; with
/// `steer`, each with a weight of 1-10 and inst08, inst09 as backups.
fn load(registry: &Registry, first_type: usize, types: usize, steer: bool) {
    for n in first_type..first_type + types {
        for m in 0..10u16 {
            let host = format!("10.{}.{}.{m}", n / 256 % 256, n % 256);
            let mut spec = spec(
                format!("inst{m:02}"),
                format!("type{n:06}"),
                &host,
                8000 + m,
            );
            if steer {
                spec.weight = m + 1;
                spec.priority = if m >= 8 { 10 } else { 0 };
            }
            register_spec(registry, spec);
        }
    }
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 7;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    message.edns = Some(edns);
    message.to_vec().unwrap()
}

/// The benchmark's query kinds, each over the first 100 types.
fn kinds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let over_types = |make: &dyn Fn(usize) -> Vec<u8>| (0..100).map(make).collect::<Vec<_>>();
    vec![
        (
            "type A (10 records)",
            over_types(&|n| query(&format!("type{n:06}.svc.local."), RecordType::A)),
        ),
        (
            "type SRV (10 + 10 glue)",
            over_types(&|n| query(&format!("type{n:06}.svc.local."), RecordType::SRV)),
        ),
        (
            "instance A",
            over_types(&|n| {
                query(
                    &format!("inst{:02}.type{n:06}.svc.local.", n % 10),
                    RecordType::A,
                )
            }),
        ),
        (
            "NXDOMAIN",
            over_types(&|n| query(&format!("nosuch{n}.svc.local."), RecordType::A)),
        ),
        (
            "DNS-SD PTR",
            over_types(&|n| query(&format!("_type{n:06}._tcp.svc.local."), RecordType::PTR)),
        ),
    ]
}

/// Median nanoseconds per query over `rounds` rounds of `queries` queries.
fn measure(rounds: usize, queries: usize, mut answer: impl FnMut(usize)) -> f64 {
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            for i in 0..queries {
                answer(i);
            }
            started.elapsed().as_nanos() as f64 / queries as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn report(responder: &Responder, rounds: usize, queries: usize, general_too: bool) {
    let mut out = Vec::with_capacity(1232);
    for (kind, packets) in kinds() {
        let fast = measure(rounds, queries, |i| {
            let packet = &packets[i % packets.len()];
            let handled =
                responder.respond_into(black_box(packet), Transport::Udp, CLIENT, &mut out);
            assert_eq!(handled, Handled::Answer);
            black_box(&out);
        });
        if general_too {
            let general = measure(rounds, queries / 4, |i| {
                let packet = &packets[i % packets.len()];
                black_box(responder.respond_general(black_box(packet), Transport::Udp, CLIENT));
            });
            println!(
                "  {kind:<24} fast {fast:>7.0} ns   general {general:>7.0} ns   ({:.1}x)",
                general / fast
            );
        } else {
            println!("  {kind:<24} fast {fast:>7.0} ns");
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds = env_usize("ROUNDS", 5, 1);
    let queries = env_usize("QUERIES", 200_000, 10);
    let big = env_usize("BIG", 1_000_000, 0);
    let huge = env_usize("HUGE", 100_000, 0);
    let steer = env_usize("STEER", 0, 0) > 0;
    let apex = Name::from_ascii("svc.local.").unwrap();
    let zone = ZoneSettings {
        apex: apex.clone(),
        nameserver: Name::from_ascii("ns.svc.local.").unwrap(),
        nameserver_addresses: Vec::new(),
        ttl: 5,
        negative_ttl: 5,
        steering: Default::default(),
    };
    let registry = Registry::new(apex);
    load(&registry, 0, 100, steer);
    let responder = Responder::new(registry.clone(), zone, Arc::new(Metrics::default()));
    println!(
        "answer path, median of {rounds} rounds x {queries} queries, 1 000 instances (100 types x 10):"
    );
    report(&responder, rounds, queries, true);
    if big > 1000 {
        let before = rss_mib();
        let started = Instant::now();
        load(&registry, 100, big / 10 - 100, steer);
        println!(
            "{} instances ({} types x 10), loaded in {:.1} s, +{:.0} MiB RSS in this process:",
            registry.len(),
            big / 10,
            started.elapsed().as_secs_f64(),
            rss_mib() - before
        );
        report(&responder, rounds, queries, false);
    }
    if huge > 0 {
        for i in 0..huge {
            let host = format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255);
            register(&registry, format!("i{i:07}"), "huge".into(), &host, 80);
        }
        // One instance unlike the rest: the only IPv6 one, the only tagged one.
        let odd = ValidRegistration {
            tags: vec!["rare".into()],
            ..spec("odd".into(), "huge".into(), "fd00::1", 80)
        };
        let identity = registry.identity_for(&odd);
        registry.register(odd, identity, Health::Passing);
        // Another type as large, all but one of its instances critical.
        for i in 0..huge {
            let host = format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255);
            let spec = spec(format!("i{i:07}"), "down".into(), &host, 80);
            let identity = registry.identity_for(&spec);
            let health = if i == huge / 2 {
                Health::Passing
            } else {
                Health::Critical
            };
            registry.register(spec, identity, health);
        }
        println!(
            "huge: {huge} IPv4 instances and one IPv6 one tagged rare; down: {huge} instances, one not critical (answers sample what fits, TC set):"
        );
        let mut out = Vec::with_capacity(1232);
        for (name, qtype) in [
            ("huge.svc.local.", RecordType::A),
            ("huge.svc.local.", RecordType::SRV),
            ("huge.svc.local.", RecordType::AAAA),
            ("_rare._sub.huge.svc.local.", RecordType::AAAA),
            ("_rare._sub.huge.svc.local.", RecordType::A),
            ("_absent._sub.huge.svc.local.", RecordType::A),
            ("down.svc.local.", RecordType::A),
            ("down.svc.local.", RecordType::SRV),
        ] {
            let packet = query(name, qtype);
            let ns = measure(rounds, queries / 10, |_| {
                let handled =
                    responder.respond_into(black_box(&packet), Transport::Udp, CLIENT, &mut out);
                assert_eq!(handled, Handled::Answer);
            });
            println!("  {name:<30} {:<6} {ns:>9.0} ns", qtype.to_string());
        }
    }
}
