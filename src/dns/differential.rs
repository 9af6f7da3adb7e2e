//! The two answer paths against each other, on random registries and random
//! questions, and on any bytes at all ([`check_packet`], what the
//! `dns_responder` fuzz target and its corpus replay run).
//!
//! Both paths answer through the same rule book, so with the random number
//! generator seeded alike they must send the same records in the same
//! order: the fast path's hand-written encoding is checked record for
//! record, names compared case-sensitively, against hickory's. The
//! registries hold what makes encoding hard: instances lapsed but not yet
//! swept, 255-byte TXT strings, 63-byte labels and names near 255 bytes,
//! IPv6 and hostname targets, types large enough to be sampled; the
//! questions every form of the grammar, in random case, every record type
//! we answer and some we do not, with and without EDNS, at payload sizes
//! from 512 to 64 KiB.
//!
//! Where hickory's compression gives up (it compresses at most 120 names
//! and remembers at most 64 per message; the fast path always points at
//! the question), a large message can differ in size. Then the answers one
//! path sent must begin the other's, and every extra must belong to an
//! answer sent; everywhere else the messages must be equal.
//!
//! Whatever the packet, each path's reply (or silence) is checked on its
//! own too ([`check_reply`]): only a runt or a response goes unanswered;
//! a reply is one whole message, with the request's id, opcode and RD,
//! within the size limit, echoing the question as asked.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

#[cfg(test)]
use hickory_proto::op::Query;
use hickory_proto::op::{Edns, Message, MessageType};
#[cfg(test)]
use hickory_proto::rr::RecordType;
use hickory_proto::rr::{Name, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::answer::{Transport, ZoneSettings, response_limit};
use super::{Responder, fast, message};
use crate::clock::{Clock, ManualClock};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::select::Steering;
use crate::service::{Health, Host, ValidRegistration, validate_host};

/// Who asks, in these tests.
pub(super) const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A registry and what it holds, for building questions about it.
pub(crate) struct Fixture {
    responder: Responder,
    #[cfg_attr(not(test), allow(dead_code))]
    zone: String,
    #[cfg_attr(not(test), allow(dead_code))]
    types: Vec<String>,
    /// (type, name, tags) of every instance.
    #[cfg_attr(not(test), allow(dead_code))]
    instances: Vec<(String, String, Vec<String>)>,
    /// When the instances were registered, unix ms.
    registered_at: u64,
}

const TAGS: [&str; 4] = ["api", "v6", "rare", "a-tag-that-is-rather-long-for-a-tag"];

/// A random label of `len` characters of `a-z 0-9 -`, not starting or
/// ending with `-`.
fn label(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len)
        .map(|at| {
            let edge = at == 0 || at + 1 == len;
            match rng.u8(..if edge { 36 } else { 37 }) {
                n @ 0..=25 => char::from(b'a' + n),
                n @ 26..=35 => char::from(b'0' + n - 26),
                _ => '-',
            }
        })
        .collect()
}

fn short_or_long_label(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..10) {
        0 => label(rng, 63),
        1 => {
            let len = rng.usize(20..40);
            label(rng, len)
        }
        _ => {
            let len = rng.usize(1..8);
            label(rng, len)
        }
    }
}

fn random_host(rng: &mut fastrand::Rng) -> Host {
    let text = match rng.u8(..6) {
        0..=2 => format!("10.{}.{}.{}", rng.u8(..), rng.u8(..), rng.u8(1..)),
        3 => format!("fd00::{:x}:{:x}", rng.u16(..), rng.u16(1..)),
        4 => format!("{}.example.com", short_or_long_label(rng)),
        // A long hostname: four labels of 60.
        _ => (0..4).map(|_| label(rng, 60)).collect::<Vec<_>>().join("."),
    };
    validate_host(&text).unwrap()
}

fn random_metadata(rng: &mut fastrand::Rng) -> BTreeMap<String, String> {
    let pairs = match rng.u8(..8) {
        0 => 64,
        1..=4 => 0,
        _ => rng.usize(1..4),
    };
    (0..pairs)
        .map(|n| {
            let key = format!("k{n}");
            // Sometimes the longest string a TXT record holds: 255 bytes.
            let len = if rng.u8(..3) == 0 {
                255 - key.len() - 1
            } else {
                rng.usize(0..20)
            };
            let value: String = (0..len).map(|_| char::from(rng.u8(b' '..=b'~'))).collect();
            (key, value)
        })
        .collect()
}

/// Registers an instance of `service_type` for each of `names`, with
/// random hosts, tags, metadata, lifetimes (some of 1 s, which lapse
/// before later questions), priorities, weights and health; records each
/// in `instances`.
fn populate(
    rng: &mut fastrand::Rng,
    registry: &Registry,
    service_type: &str,
    names: impl Iterator<Item = String>,
    instances: &mut Vec<(String, String, Vec<String>)>,
) {
    for name in names {
        let tags: Vec<String> = TAGS
            .iter()
            .filter(|_| rng.u8(..3) == 0)
            .map(|t| t.to_string())
            .collect();
        let spec = ValidRegistration {
            name: name.clone(),
            service_type: service_type.to_string(),
            host: random_host(rng),
            port: rng.u16(1..),
            tags: tags.clone(),
            metadata: random_metadata(rng),
            ttl: *rng.choice(&[1, 1, 30, 3600]).unwrap(),
            priority: rng.u16(..),
            weight: rng.u16(..),
            locality: None,
            check: None,
        };
        let health = *rng
            .choice(&[Health::Passing, Health::Warning, Health::Critical])
            .unwrap();
        let identity = registry.identity_for(&spec);
        registry.register(spec, identity, health);
        instances.push((service_type.to_string(), name, tags));
    }
}

/// The zone's settings: `apex`, `nameserver`, the TTLs and steering.
fn settings(apex: Name, nameserver: &str, ttls: (u32, u32), steering: Steering) -> ZoneSettings {
    ZoneSettings {
        apex,
        nameserver: Name::from_ascii(nameserver).unwrap(),
        nameserver_addresses: vec![
            "192.0.2.53".parse().unwrap(),
            "2001:db8::53".parse().unwrap(),
        ],
        ttl: ttls.0,
        negative_ttl: ttls.1,
        steering,
    }
}

#[cfg(test)]
fn fixture(rng: &mut fastrand::Rng) -> Fixture {
    let zone = match rng.u8(..4) {
        0 => format!("{}.example.internal", label(rng, 40)),
        _ => "svc.local".to_string(),
    };
    let apex = Name::from_ascii(format!("{zone}.")).unwrap();
    let nameserver = match rng.u8(..4) {
        0 => "ns1.example.net.".to_string(),
        1 => format!("hostmaster.{zone}."),
        2 => format!("{zone}."),
        _ => format!("ns.{zone}."),
    };
    let registry = Registry::new(apex.clone());
    let mut types: Vec<String> = (0..rng.usize(1..5))
        .map(|_| short_or_long_label(rng))
        .collect();
    // Types named like the nameserver: their questions share its name.
    if rng.u8(..4) == 0 {
        types.push("ns".into());
    }
    types.sort();
    types.dedup();
    let registered_at = crate::registry::now_ms();
    let mut instances = Vec::new();
    for service_type in &types {
        let count = match rng.u8(..10) {
            0 => 300, // sampled: more than `LARGE_SET`
            1 => 0,
            _ => rng.usize(1..12),
        };
        let names: Vec<String> = (0..count)
            .map(|n| {
                if count > 20 {
                    format!("i{n:04}")
                } else {
                    short_or_long_label(rng)
                }
            })
            .collect();
        populate(
            rng,
            &registry,
            service_type,
            names.into_iter(),
            &mut instances,
        );
    }
    let ttls = (
        *rng.choice(&[0, 5, 300]).unwrap(),
        *rng.choice(&[0, 5, 60]).unwrap(),
    );
    let settings = settings(apex, &nameserver, ttls, Steering::default());
    Fixture {
        responder: Responder::new(registry, settings, Arc::new(Metrics::default())),
        zone,
        types,
        instances,
        registered_at,
    }
}

/// The one registry the fuzz target asks about: fixed, so that a finding
/// replays, on a manual clock, so that what has lapsed depends only on the
/// `now` asked at. Zone `svc.local`, name server `ns.svc.local` (also a
/// type), types `web` (6 instances), `db` (12), `ns` (2), `big` (300, so
/// sampled) and a 63-character one of `x` (3); instances `i0`, `i1`, …
/// but the second of each small type has a 63-character name. Panic mode
/// at 60 %.
pub(crate) fn fuzz_fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        const REGISTERED_AT: u64 = 1_800_000_000_000;
        let mut rng = fastrand::Rng::with_seed(13);
        let apex = Name::from_ascii("svc.local.").unwrap();
        let clock = Clock::Manual(ManualClock::new(REGISTERED_AT));
        let registry = Registry::with_clock(apex.clone(), clock);
        let long_type = "x".repeat(63);
        let types = [
            ("web", 6),
            ("db", 12),
            ("ns", 2),
            ("big", 300),
            (long_type.as_str(), 3),
        ];
        let mut instances = Vec::new();
        for (service_type, count) in types {
            let long_name = label(&mut rng, 63);
            let names = (0..count).map(|n| match n {
                1 if count < 20 => long_name.clone(),
                _ => format!("i{n}"),
            });
            populate(&mut rng, &registry, service_type, names, &mut instances);
        }
        let steering = Steering {
            panic_threshold: 60,
            ..Steering::default()
        };
        let settings = settings(apex, "ns.svc.local.", (300, 60), steering);
        Fixture {
            responder: Responder::new(registry, settings, Arc::new(Metrics::default())),
            zone: "svc.local".into(),
            types: types.iter().map(|(t, _)| t.to_string()).collect(),
            instances,
            registered_at: REGISTERED_AT,
        }
    })
}

/// Asks both paths `packet`, as any bytes from a client, over UDP and TCP,
/// when everything registered is live and after the 1 s lifetimes lapsed
/// (the sweep never ran), and checks every reply ([`compare`]). Panics on
/// any difference: what the `dns_responder` fuzz target runs.
pub(crate) fn check_packet(packet: &[u8]) {
    let fixture = fuzz_fixture();
    for transport in [Transport::Udp, Transport::Tcp] {
        for now in [fixture.registered_at, fixture.registered_at + 1500] {
            compare(&fixture.responder, packet, transport, now, 0x5167);
        }
    }
}

#[cfg(test)]
/// `text` with each letter upper-cased at random.
fn random_case(rng: &mut fastrand::Rng, text: &str) -> String {
    text.chars()
        .map(|c| {
            if rng.bool() {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
/// A random name in (or just outside of) the fixture's zone.
fn random_name(rng: &mut fastrand::Rng, fixture: &Fixture) -> String {
    let any_type = |rng: &mut fastrand::Rng| {
        rng.choice(&fixture.types)
            .cloned()
            .unwrap_or_else(|| "none".into())
    };
    let any_tag = |rng: &mut fastrand::Rng| {
        if rng.u8(..5) == 0 {
            "absent".to_string()
        } else {
            rng.choice(TAGS).unwrap().to_string()
        }
    };
    let instance = |rng: &mut fastrand::Rng| match rng.choice(&fixture.instances) {
        Some((service_type, name, _)) if rng.u8(..6) != 0 => (service_type.clone(), name.clone()),
        _ => (any_type(rng), "nobody".to_string()),
    };
    let below = match rng.u8(..17) {
        0 => String::new(),
        1 | 2 => any_type(rng),
        3 => format!("_{}._sub.{}", any_tag(rng), any_type(rng)),
        4 | 5 => {
            let (service_type, name) = instance(rng);
            format!("{name}.{service_type}")
        }
        6 => format!("_{}._tcp", any_type(rng)),
        7 => format!("_{}._sub._{}._tcp", any_tag(rng), any_type(rng)),
        8 => {
            let (service_type, name) = instance(rng);
            format!("{name}._{service_type}._tcp")
        }
        9 => "_services._dns-sd._udp".into(),
        10 => rng.choice(["_tcp", "_udp", "_dns-sd._udp"]).unwrap().into(),
        11 => format!("_sub.{}", any_type(rng)),
        12 => format!("_sub._{}._tcp", any_type(rng)),
        13 => "a.b.c.d.e".into(),
        14 => rng
            .choice(["ns", "hostmaster", "_", "__._sub.x"])
            .unwrap()
            .into(),
        15 => format!("{}.{}", label(rng, 5), label(rng, 5)),
        _ => return format!("{}.example.org.", any_type(rng)), // outside
    };
    let name = if below.is_empty() {
        format!("{}.", fixture.zone)
    } else {
        format!("{below}.{}.", fixture.zone)
    };
    random_case(rng, &name)
}

#[cfg(test)]
const QTYPES: [RecordType; 13] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::TXT,
    RecordType::PTR,
    RecordType::SOA,
    RecordType::NS,
    RecordType::ANY,
    RecordType::MX,
    RecordType::CNAME,
    RecordType::HINFO,
    RecordType::CAA,
    RecordType::Unknown(65280),
];

#[cfg(test)]
/// A plain query (the fast path's kind), or `None` when the name is too long.
fn random_query(rng: &mut fastrand::Rng, fixture: &Fixture) -> Option<(Vec<u8>, usize)> {
    let name = Name::from_ascii(random_name(rng, fixture)).ok()?;
    let mut message = Message::query();
    message.metadata.id = rng.u16(..);
    message.metadata.recursion_desired = rng.bool();
    message.metadata.checking_disabled = rng.u8(..4) == 0;
    message.add_query(Query::query(name, *rng.choice(&QTYPES).unwrap()));
    let limit = if rng.u8(..4) == 0 {
        512
    } else {
        let mut edns = Edns::new();
        let any = rng.u16(512..);
        let payload = *rng
            .choice(&[512, 600, 1232, 1400, 4096, 65535, any])
            .unwrap();
        edns.set_max_payload(payload);
        edns.set_dnssec_ok(rng.bool());
        message.edns = Some(edns);
        usize::from(payload.clamp(512, 1232))
    };
    Some((message.to_vec().ok()?, limit))
}

/// `count` plain queries of every form about the fuzz registry, for the
/// fuzz target's seed corpus.
#[cfg(test)]
pub(crate) fn seed_queries(count: usize) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let fixture = fuzz_fixture();
    std::iter::from_fn(|| Some(random_query(&mut rng, fixture)))
        .flatten()
        .map(|(packet, _)| packet)
        .take(count)
        .collect()
}

/// A record as text, names in the case they were sent.
fn text(records: &[Record]) -> Vec<String> {
    records.iter().map(Record::to_string).collect()
}

/// How the two paths' answers to one packet compared.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Compared {
    /// The fast path left the packet to the general one.
    NotTaken,
    /// Both sent exactly the same records.
    Same,
    /// Both sent what the rule book decided, but compression made the
    /// messages differ in size, and so in what fit.
    Fitted,
}

/// Asks both paths `packet` at `now` with the generator seeded alike;
/// checks each reply on its own ([`check_reply`]) and, when the fast path
/// took the packet, what they sent against each other and against every
/// record the answer holds before any size limit.
pub(super) fn compare(
    responder: &Responder,
    packet: &[u8],
    transport: Transport,
    now: u64,
    seed: u64,
) -> Compared {
    fastrand::seed(seed);
    let mut fast_bytes = Vec::new();
    let taken = fast::respond(
        &responder.zone,
        &responder.wire,
        packet,
        transport,
        CLIENT,
        now,
        &mut fast_bytes,
    );
    fastrand::seed(seed);
    let general_bytes = message::respond(&responder.zone, packet, transport, CLIENT, now);
    let general = check_reply(packet, general_bytes.as_deref(), transport, "general");
    if !taken {
        return Compared::NotTaken;
    }
    let fast = check_reply(packet, Some(&fast_bytes), transport, "fast");
    let (Some(fast), Some(general), Some(general_bytes)) = (fast, general, general_bytes) else {
        unreachable!("check_reply: a packet the fast path takes is answered")
    };
    let request = Message::from_vec(packet).unwrap_or_else(|e| {
        panic!("the fast path answered what hickory cannot parse ({e}): {packet:02x?}")
    });
    let context = format!("{:?} {transport:?} seed {seed}", request.queries);
    let limit = response_limit(transport, request.edns.as_ref().map(Edns::max_payload));
    assert_eq!(fast.queries, general.queries, "{context}");
    assert_eq!(
        fast.queries[0].name().to_string(),
        request.queries[0].name().to_string(),
        "{context}: the question is echoed as asked"
    );
    assert_eq!(fast.edns.is_some(), general.edns.is_some(), "{context}");
    if let (Some(f), Some(g)) = (&fast.edns, &general.edns) {
        assert_eq!(f.max_payload(), g.max_payload(), "{context}");
        assert_eq!(f.flags().dnssec_ok, g.flags().dnssec_ok, "{context}");
        assert_eq!(
            g.flags().dnssec_ok,
            request.edns.as_ref().unwrap().flags().dnssec_ok,
            "{context}: DO copied"
        );
    }
    // What both must have taken their records from, with the generator
    // seeded as they had it.
    fastrand::seed(seed);
    let (reference, authorities) = message::unlimited(&responder.zone, &request, limit, now);
    for (name, sent) in [("fast", &fast), ("general", &general)] {
        check_against(sent, &reference, &authorities, &format!("{context} {name}"));
    }
    let same = fast_bytes.len() == general_bytes.len()
        && text(&fast.answers) == text(&general.answers)
        && text(&fast.additionals) == text(&general.additionals);
    if same {
        assert_eq!(fast.metadata, general.metadata, "{context}");
        assert_eq!(
            text(&fast.authorities),
            text(&general.authorities),
            "{context}"
        );
    } else {
        // Compression made the messages differ in size, and so in what fit.
        assert_eq!(
            fast.metadata.response_code, general.metadata.response_code,
            "{context}"
        );
        // The fast path compresses at least as well, so never sends fewer
        // answers.
        assert!(
            fast.answers.len() >= general.answers.len(),
            "{context}: the fast path sent fewer answers than hickory's"
        );
        return Compared::Fitted;
    }
    Compared::Same
}

/// Checks what one path (`path`) made of `packet`, whatever its bytes,
/// and returns the reply parsed: silence only for a runt or a response;
/// otherwise one whole message (nothing after it) with the request's id,
/// QR set, the opcode and RD as asked, within the size limit (512 bytes
/// over UDP for a request that does not parse), echoing the question as
/// asked when the request has exactly one.
fn check_reply(
    packet: &[u8],
    reply: Option<&[u8]>,
    transport: Transport,
    path: &str,
) -> Option<Message> {
    let runt_or_response = packet.len() < 12 || packet[2] & 0x80 != 0;
    let Some(reply) = reply else {
        assert!(runt_or_response, "{path}: no reply to {packet:02x?}");
        return None;
    };
    let context = format!("{path} {transport:?}\n request {packet:02x?}\n reply {reply:02x?}");
    assert!(
        !runt_or_response,
        "{context}: a runt or a response answered"
    );
    let mut decoder = BinDecoder::new(reply);
    let response = Message::read(&mut decoder)
        .unwrap_or_else(|e| panic!("{context}: the reply does not parse: {e}"));
    assert!(decoder.is_empty(), "{context}: bytes after the reply");
    assert_eq!(reply[..2], packet[..2], "{context}: the id");
    assert_eq!(
        response.metadata.message_type,
        MessageType::Response,
        "{context}"
    );
    assert_eq!(
        reply[2] & 0x79,
        packet[2] & 0x79,
        "{context}: opcode and RD"
    );
    let request = Message::from_vec(packet).ok();
    let limit = match &request {
        Some(request) => response_limit(transport, request.edns.as_ref().map(Edns::max_payload)),
        None => response_limit(transport, None),
    };
    assert!(
        reply.len() <= limit,
        "{context}: {} > {limit} bytes",
        reply.len()
    );
    if let Some(request) = request
        && let [asked] = &request.queries[..]
    {
        let [echoed] = &response.queries[..] else {
            panic!("{context}: the question is not echoed");
        };
        assert!(
            echoed.name().eq_case(asked.name()),
            "{context}: name as asked"
        );
        assert_eq!(echoed.query_type(), asked.query_type(), "{context}");
        assert_eq!(echoed.query_class(), asked.query_class(), "{context}");
    }
    Some(response)
}

/// Checks that `sent` holds what the reference holds, within what fit:
/// answers from the first, in order (all of them unless TC is set); the
/// authority section whole (unless TC); and additional records that are
/// extras of the answers sent, in order.
fn check_against(
    sent: &Message,
    reference: &[(Record, Vec<Record>)],
    authorities: &[Record],
    context: &str,
) {
    let answers = text(&sent.answers);
    let expected: Vec<String> = reference.iter().map(|(r, _)| r.to_string()).collect();
    assert!(
        answers.len() <= expected.len() && answers[..] == expected[..answers.len()],
        "{context}: answers\n sent {answers:#?}\n expected {expected:#?}"
    );
    if !sent.truncation {
        assert_eq!(answers.len(), expected.len(), "{context}: answers all sent");
        assert_eq!(text(&sent.authorities), text(authorities), "{context}");
    } else {
        assert!(
            answers.len() < expected.len() || sent.authorities.len() < authorities.len(),
            "{context}: TC with everything sent"
        );
    }
    let extras: Vec<String> = reference[..answers.len()]
        .iter()
        .flat_map(|(_, extras)| extras.iter().map(Record::to_string))
        .collect();
    let mut rest = extras.iter();
    for additional in text(&sent.additionals) {
        assert!(
            rest.any(|extra| *extra == additional),
            "{context}: additional {additional} is not an extra of an answer sent, in order\n extras {extras:#?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_paths_send_the_same_answers() {
        let mut exact = 0;
        let mut inexact = 0;
        let mut taken = 0;
        for registry_seed in 0..120u64 {
            let mut rng = fastrand::Rng::with_seed(registry_seed);
            let fixture = fixture(&mut rng);
            // Now, and after the 1 s instances lapsed (the sweep never ran).
            for now in [fixture.registered_at, fixture.registered_at + 1500] {
                for question in 0..60u64 {
                    let Some((packet, _)) = random_query(&mut rng, &fixture) else {
                        continue;
                    };
                    let transport = if rng.u8(..3) == 0 {
                        Transport::Tcp
                    } else {
                        Transport::Udp
                    };
                    let seed = registry_seed * 1000 + question;
                    match compare(&fixture.responder, &packet, transport, now, seed) {
                        Compared::Same => exact += 1,
                        Compared::Fitted => inexact += 1,
                        Compared::NotTaken => {
                            // Only questions outside the zone go the general way.
                            let name = Message::from_vec(&packet).unwrap().queries[0]
                                .name()
                                .clone();
                            let apex = Name::from_ascii(format!("{}.", fixture.zone)).unwrap();
                            assert!(!apex.zone_of(&name), "the fast path left {name}");
                            continue;
                        }
                    }
                    taken += 1;
                }
            }
        }
        assert!(taken > 10_000, "{taken} questions");
        // The size differences are hickory's compression limits, which only
        // large answers reach.
        assert!(
            inexact * 20 < exact,
            "{inexact} of {} answers differed in size",
            exact + inexact
        );
    }
}
