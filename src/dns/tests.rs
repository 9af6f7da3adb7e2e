//! The rule book on a fixed registry holding every kind of instance: each
//! question asked of both paths (compared by [`differential::compare`]),
//! and what the answers to large types, browsing and odd packets must be.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use super::answer::{Transport, ZoneSettings};
use super::differential::{Compared, compare};
use super::{Handled, Responder, fast};
use crate::metrics::Metrics;
use crate::registry::{Registry, now_ms};
use crate::service::{Health, ValidRegistration, validate_host};

use super::differential::CLIENT;

fn spec(name: &str, service_type: &str, host: &str, tags: &[&str]) -> ValidRegistration {
    ValidRegistration {
        name: name.into(),
        service_type: service_type.into(),
        host: validate_host(host).unwrap(),
        port: 8080,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        metadata: BTreeMap::new(),
        ttl: 60,
        priority: 3,
        weight: 7,
        locality: None,
        check: None,
    }
}

fn register(registry: &Registry, spec: ValidRegistration, health: Health) {
    let identity = registry.identity_for(&spec);
    registry.register(spec, identity, health);
}

/// Every kind of instance: passing, warning and critical; IPv4, IPv6 and
/// hostname hosts; with and without tags and metadata; a type with no
/// serving instance.
fn responder(nameserver: &str) -> Responder {
    let apex = Name::from_ascii("svc.local.").unwrap();
    let registry = Registry::new(apex.clone());
    let mut a1 = spec("a1", "web", "10.0.0.1", &["api"]);
    a1.metadata.insert("k".into(), "v".into());
    let mut a3 = spec("a3", "web", "fd00::3", &["api", "v6"]);
    a3.metadata.insert("x".into(), "1".into());
    a3.metadata.insert("y".into(), "2".into());
    let mut h = spec("h", "named", "host.example.org", &[]);
    h.metadata.insert("a".into(), "b".into());
    for (spec, health) in [
        (a1, Health::Passing),
        (spec("a2", "web", "10.0.0.2", &[]), Health::Warning),
        (a3, Health::Passing),
        (
            spec("a4", "web", "db.example.com", &["named"]),
            Health::Passing,
        ),
        (
            spec("down", "web", "10.0.0.9", &["api", "down"]),
            Health::Critical,
        ),
        (spec("only", "v6", "fd00::1", &["api"]), Health::Passing),
        (spec("dead", "gone", "10.0.1.1", &["api"]), Health::Critical),
        (h, Health::Passing),
    ] {
        register(&registry, spec, health);
    }
    let zone = ZoneSettings {
        apex,
        nameserver: Name::from_ascii(nameserver).unwrap(),
        nameserver_addresses: vec![
            "192.0.2.53".parse().unwrap(),
            "2001:db8::53".parse().unwrap(),
        ],
        ttl: 5,
        negative_ttl: 7,
        steering: Default::default(),
    };
    Responder::new(registry, zone, Arc::new(Metrics::default()))
}

fn register_many(responder: &Responder, service_type: &str, count: usize) {
    for i in 0..count {
        let host = format!("10.1.{}.{}", i / 200, i % 200);
        register(
            &responder.zone.registry,
            spec(&format!("many{i:04}"), service_type, &host, &["t"]),
            Health::Passing,
        );
    }
}

fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 4242;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut opt = Edns::new();
        opt.set_max_payload(4096);
        message.edns = Some(opt);
    }
    message.to_vec().unwrap()
}

/// Compares both paths on `packet`; true when the fast path took it.
fn both(responder: &Responder, packet: &[u8], transport: Transport) -> bool {
    compare(responder, packet, transport, now_ms(), fastrand::u64(..)) != Compared::NotTaken
}

/// The rcode and answer data of the answer to `name`/`qtype`.
fn ask(
    responder: &Responder,
    name: &str,
    qtype: RecordType,
    transport: Transport,
) -> (ResponseCode, Vec<String>) {
    let packet = query(name, qtype, true);
    assert!(both(responder, &packet, transport), "{name} {qtype}");
    let mut out = Vec::new();
    assert_eq!(
        responder.respond_into(&packet, transport, CLIENT, &mut out),
        Handled::Answer
    );
    let message = Message::from_vec(&out).unwrap();
    let answers = message.answers.iter().map(|r| r.data.to_string()).collect();
    (message.metadata.response_code, answers)
}

#[test]
fn every_question_in_the_zone_is_taken_by_the_fast_path_and_answered_alike() {
    let names = [
        "svc.local.",
        "SVC.Local.",
        "web.svc.local.",
        "WeB.Svc.LOCAL.",
        "v6.svc.local.",
        "named.svc.local.",
        "gone.svc.local.",
        "nope.svc.local.",
        "a1.web.svc.local.",
        "A3.web.svc.local.",
        "a4.web.svc.local.",
        "down.web.svc.local.",
        "zz.web.svc.local.",
        "a1.nope.svc.local.",
        "_web._tcp.svc.local.",
        "_WEB._TCP.svc.local.",
        "_gone._tcp.svc.local.",
        "_named._tcp.svc.local.",
        "_nope._tcp.svc.local.",
        "a1._web._tcp.svc.local.",
        "A1._Web._Tcp.svc.local.",
        "a.b.c.d.e.svc.local.",
        "h.named.svc.local.",
        "_services._dns-sd._udp.svc.local.",
        "_tcp.svc.local.",
        "_dns-sd._udp.svc.local.",
        "_sub.web.svc.local.",
        "_sub._web._tcp.svc.local.",
        "_sub.gone.svc.local.",
        "ns.svc.local.",
        "hostmaster.svc.local.",
        // Subtypes: a tag some serving instances carry, one only a critical
        // instance carries, one nobody carries, one on a type with no
        // serving instance, and the same as DNS-SD subtypes.
        "_api._sub.web.svc.local.",
        "_API._Sub.WEB.svc.local.",
        "_v6._sub.web.svc.local.",
        "_named._sub.web.svc.local.",
        "_down._sub.web.svc.local.",
        "_nope._sub.web.svc.local.",
        "_api._sub.gone.svc.local.",
        "_api._sub.nope.svc.local.",
        "_api._sub._web._tcp.svc.local.",
        "_API._SUB._Web._TCP.svc.local.",
        "_v6._sub._web._tcp.svc.local.",
        "_down._sub._web._tcp.svc.local.",
        "_api._sub._v6._tcp.svc.local.",
        "_api._sub._gone._tcp.svc.local.",
        "_nope._sub._web._tcp.svc.local.",
        "__._sub.web.svc.local.",
        "_._sub.web.svc.local.",
        "_api._sub.__._tcp.svc.local.",
    ];
    let qtypes = [
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
    ];
    for nameserver in ["ns.svc.local.", "ns1.example.net.", "svc.local."] {
        let responder = responder(nameserver);
        for name in names {
            for qtype in qtypes {
                for edns in [false, true] {
                    for transport in [Transport::Udp, Transport::Tcp] {
                        let packet = query(name, qtype, edns);
                        assert!(
                            both(&responder, &packet, transport),
                            "{name} {qtype} went the general way"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn what_is_not_a_plain_question_in_the_zone_goes_the_general_way() {
    let responder = responder("ns.svc.local.");
    let mut out = Vec::new();
    for (name, qtype) in [
        ("web.svc.local.", RecordType::AXFR),
        ("web.svc.local.", RecordType::IXFR),
        ("web.other.", RecordType::A),
        ("local.", RecordType::A),
    ] {
        let packet = query(name, qtype, true);
        assert!(
            !fast::respond(
                &responder.zone,
                &responder.wire,
                &packet,
                Transport::Udp,
                CLIENT,
                now_ms(),
                &mut out
            ),
            "{name} {qtype}"
        );
        let general = responder
            .respond_general(&packet, Transport::Udp, CLIENT)
            .unwrap();
        let general = Message::from_vec(&general).unwrap();
        assert_eq!(general.metadata.response_code, ResponseCode::Refused);
    }
    let mut packet = query("web.svc.local.", RecordType::A, false);
    packet.push(0); // trailing garbage
    assert!(!fast::respond(
        &responder.zone,
        &responder.wire,
        &packet,
        Transport::Udp,
        CLIENT,
        now_ms(),
        &mut out
    ));
    let mut packet = query("web.svc.local.", RecordType::A, false);
    packet[2] |= 0x80; // a response: dropped
    assert!(!fast::respond(
        &responder.zone,
        &responder.wire,
        &packet,
        Transport::Udp,
        CLIENT,
        now_ms(),
        &mut out
    ));
    assert_eq!(
        responder.respond_into(&packet, Transport::Udp, CLIENT, &mut out),
        Handled::Drop
    );
    let whole = query("web.svc.local.", RecordType::A, true);
    for cut in 0..whole.len() {
        let packet = &whole[..cut];
        assert!(!fast::respond(
            &responder.zone,
            &responder.wire,
            packet,
            Transport::Udp,
            CLIENT,
            now_ms(),
            &mut out
        ));
    }
}

#[test]
fn mutated_queries_the_fast_path_takes_get_the_general_answer() {
    let responder = responder("ns.svc.local.");
    let seeds: Vec<Vec<u8>> = [
        "web.svc.local.",
        "a1.web.svc.local.",
        "_web._tcp.svc.local.",
        "_api._sub.web.svc.local.",
        "_api._sub._web._tcp.svc.local.",
        "svc.local.",
    ]
    .iter()
    .flat_map(|name| {
        [RecordType::A, RecordType::SRV, RecordType::PTR].map(|qtype| query(name, qtype, true))
    })
    .collect();
    let mut rng = fastrand::Rng::with_seed(20261123);
    let mut taken = 0;
    let mut out = Vec::new();
    for _ in 0..20_000 {
        let mut packet = rng.choice(&seeds).unwrap().clone();
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..packet.len());
            match rng.u8(..3) {
                0 => packet[at] = rng.u8(..),
                1 => packet[at] ^= 1 << rng.u8(..8),
                _ => packet[at] = packet[at].to_ascii_uppercase(),
            }
        }
        if !fast::respond(
            &responder.zone,
            &responder.wire,
            &packet,
            Transport::Udp,
            CLIENT,
            now_ms(),
            &mut out,
        ) {
            continue;
        }
        taken += 1;
        assert!(
            Message::from_vec(&packet).is_ok(),
            "the fast path answered a packet hickory cannot parse: {packet:?}"
        );
        assert!(both(&responder, &packet, Transport::Udp));
    }
    assert!(
        taken > 1000,
        "only {taken} mutated packets took the fast path"
    );
}

/// `packet` (ending in an OPT record without options) with one option.
fn with_option(mut packet: Vec<u8>, code: u16, data: &[u8]) -> Vec<u8> {
    let len_at = packet.len() - 2;
    let len = (4 + data.len()) as u16;
    packet[len_at..].copy_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(&code.to_be_bytes());
    packet.extend_from_slice(&(data.len() as u16).to_be_bytes());
    packet.extend_from_slice(data);
    packet
}

#[test]
fn edns_options_clients_send_are_handled() {
    let responder = responder("ns.svc.local.");
    let plain = query("web.svc.local.", RecordType::SRV, true);
    // A client cookie (dig sends one by default): fast, same answer.
    let cookie = with_option(plain.clone(), 10, &[7; 8]);
    assert!(both(&responder, &cookie, Transport::Udp));
    // Client subnet, well-formed and not: the general path's business.
    let mut out = Vec::new();
    for data in [&[0, 1, 24, 0, 10, 0, 0][..], &[0, 1, 99][..]] {
        let subnet = with_option(plain.clone(), 8, data);
        assert!(!fast::respond(
            &responder.zone,
            &responder.wire,
            &subnet,
            Transport::Udp,
            CLIENT,
            now_ms(),
            &mut out
        ));
        assert!(
            responder
                .respond_general(&subnet, Transport::Udp, CLIENT)
                .is_some()
        );
    }
}

#[test]
fn the_do_bit_is_copied_into_the_response() {
    let responder = responder("ns.svc.local.");
    for dnssec_ok in [false, true] {
        let mut message = Message::from_vec(&query("web.svc.local.", RecordType::A, true)).unwrap();
        message.edns.as_mut().unwrap().set_dnssec_ok(dnssec_ok);
        let packet = message.to_vec().unwrap();
        assert!(both(&responder, &packet, Transport::Udp));
        let mut out = Vec::new();
        assert_eq!(
            responder.respond_into(&packet, Transport::Udp, CLIENT, &mut out),
            Handled::Answer
        );
        let edns = Message::from_vec(&out).unwrap().edns.unwrap();
        assert_eq!(edns.flags().dnssec_ok, dnssec_ok);
    }
}

#[test]
fn udp_truncation_matches_in_count_and_flag() {
    let responder = responder("ns.svc.local.");
    register_many(&responder, "big", 200);
    for (qtype, edns) in [(RecordType::A, false), (RecordType::SRV, true)] {
        let packet = query("big.svc.local.", qtype, edns);
        assert!(both(&responder, &packet, Transport::Udp));
        let mut out = Vec::new();
        assert_eq!(
            responder.respond_into(&packet, Transport::Udp, CLIENT, &mut out),
            Handled::Answer
        );
        let message = Message::from_vec(&out).unwrap();
        assert!(message.metadata.truncation);
        assert!(out.len() <= if edns { 1232 } else { 512 });
    }
}

/// A type under the sampling threshold is answered from all of its
/// instances, shuffled, also when few fit.
#[test]
fn small_types_are_answered_from_every_instance() {
    let responder = responder("ns.svc.local.");
    register_many(&responder, "big", 200);
    let packet = query("_t._sub.big.svc.local.", RecordType::A, false);
    let mut seen = BTreeSet::new();
    for _ in 0..150 {
        let udp = responder
            .respond_general(&packet, Transport::Udp, CLIENT)
            .unwrap();
        let udp = Message::from_vec(&udp).unwrap();
        assert!(udp.metadata.truncation);
        seen.extend(udp.answers.iter().map(|r| r.data.to_string()));
    }
    assert_eq!(seen.len(), 200, "every instance gets its turn");
}

/// The DNS-SD browse answer over many types: every type over TCP, as many
/// as fit with TC over UDP.
#[test]
fn browsing_many_types_lists_what_fits() {
    let responder = responder("ns.svc.local.");
    for n in 0..300 {
        register_many(&responder, &format!("many{n:03}"), 1);
    }
    let packet = query("_services._dns-sd._udp.svc.local.", RecordType::PTR, true);
    assert!(both(&responder, &packet, Transport::Tcp));
    assert!(both(&responder, &packet, Transport::Udp));
    let tcp = responder
        .respond_general(&packet, Transport::Tcp, CLIENT)
        .unwrap();
    let tcp = Message::from_vec(&tcp).unwrap();
    assert!(!tcp.metadata.truncation);
    let listed: BTreeSet<String> = tcp.answers.iter().map(|r| r.data.to_string()).collect();
    // The fixture's serving types, and the 300.
    assert_eq!(listed.len(), 300 + 3, "{listed:?}");
    assert!(listed.contains("_many299._tcp.svc.local."));
    let mut out = Vec::new();
    assert_eq!(
        responder.respond_into(&packet, Transport::Udp, CLIENT, &mut out),
        Handled::Answer
    );
    let udp = Message::from_vec(&out).unwrap();
    assert!(udp.metadata.truncation && !udp.answers.is_empty());
    assert!(udp.answers.len() < 1232 / 16);
}

/// Questions on a huge type that the sampling does not bound (no record of
/// the type asked for, or no instance of the address family) are answered
/// alike on both paths, over UDP and TCP.
#[test]
fn nodata_questions_on_large_types_answer_alike() {
    let responder = responder("ns.svc.local.");
    register_many(&responder, "huge", 1000);
    for (name, qtype) in [
        ("huge.svc.local.", RecordType::AAAA),
        ("huge.svc.local.", RecordType::TXT),
        ("huge.svc.local.", RecordType::PTR),
        ("_huge._tcp.svc.local.", RecordType::A),
    ] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let (rcode, answers) = ask(&responder, name, qtype, transport);
            assert_eq!(
                (rcode, answers.len()),
                (ResponseCode::NoError, 0),
                "{name} {qtype}"
            );
        }
    }
}

#[test]
fn large_types_are_sampled_fairly_and_completely_over_tcp() {
    let responder = responder("ns.svc.local.");
    register_many(&responder, "huge", 1000);
    // Over TCP everything fits: the sample is the whole set.
    let (_, all) = ask(&responder, "huge.svc.local.", RecordType::A, Transport::Tcp);
    assert_eq!(all.len(), 1000);
    // Over UDP: as many as fit, TC set, and every instance gets its turn.
    let packet = query("huge.svc.local.", RecordType::A, true);
    let mut seen = BTreeSet::new();
    let mut firsts = BTreeSet::new();
    for _ in 0..200 {
        let mut out = Vec::new();
        assert_eq!(
            responder.respond_into(&packet, Transport::Udp, CLIENT, &mut out),
            Handled::Answer
        );
        let message = Message::from_vec(&out).unwrap();
        assert!(message.metadata.truncation);
        assert_eq!(message.answers.len(), (1232 - 11 - 12 - 20) / 16);
        firsts.insert(message.answers[0].to_string());
        seen.extend(message.answers.iter().map(|r| r.to_string()));
    }
    assert!(
        seen.len() > 990,
        "only {} of 1000 instances ever answered",
        seen.len()
    );
    assert!(
        firsts.len() > 150,
        "only {} different first records",
        firsts.len()
    );
    // A tag subdomain of the type is sampled the same way.
    let (_, tagged) = ask(
        &responder,
        "_t._sub.huge.svc.local.",
        RecordType::A,
        Transport::Tcp,
    );
    assert_eq!(tagged.len(), 1000);
    let (_, udp) = ask(
        &responder,
        "_t._sub.huge.svc.local.",
        RecordType::A,
        Transport::Udp,
    );
    assert_eq!(udp.len(), (1232 - 11 - 12 - 27) / 16);
}

/// One instance unlike the others in a huge type (the only IPv6 one, the
/// only one with a tag) is found by A/AAAA and tag questions, not missed by
/// the sampling, and a health change or a deregistration shows at once.
#[test]
fn the_odd_one_out_of_a_large_type_is_found() {
    let responder = responder("ns.svc.local.");
    register_many(&responder, "huge", 1000);
    let odd = spec("odd", "huge", "fd00::99", &["rare"]);
    let identity = responder.zone.registry.identity_for(&odd);
    let odd = responder
        .zone
        .registry
        .register(odd, identity, Health::Passing)
        .instance;
    for transport in [Transport::Udp, Transport::Tcp] {
        let only_odd = (ResponseCode::NoError, vec!["fd00::99".to_string()]);
        let ask = |name, qtype| ask(&responder, name, qtype, transport);
        assert_eq!(ask("huge.svc.local.", RecordType::AAAA), only_odd);
        assert_eq!(
            ask("_rare._sub.huge.svc.local.", RecordType::AAAA),
            only_odd
        );
        assert_eq!(
            ask("_rare._sub.huge.svc.local.", RecordType::A),
            (ResponseCode::NoError, vec![])
        );
        let (rcode, ptr) = ask("_rare._sub._huge._tcp.svc.local.", RecordType::PTR);
        assert_eq!((rcode, ptr.len()), (ResponseCode::NoError, 1));
        assert_eq!(
            ask("_absent._sub.huge.svc.local.", RecordType::A).0,
            ResponseCode::NXDomain
        );
    }
    // Critical, then deregistered: the name the tag makes is gone, the type
    // stays (NODATA); passing again in between, it is back.
    let gone = || {
        assert_eq!(
            ask(
                &responder,
                "huge.svc.local.",
                RecordType::AAAA,
                Transport::Udp
            ),
            (ResponseCode::NoError, vec![])
        );
        let tagged = ask(
            &responder,
            "_rare._sub.huge.svc.local.",
            RecordType::AAAA,
            Transport::Udp,
        );
        assert_eq!(tagged.0, ResponseCode::NXDomain);
    };
    let beat = |health| {
        responder
            .zone
            .registry
            .heartbeat(odd.id, health, None)
            .unwrap()
    };
    beat(Health::Critical);
    gone();
    beat(Health::Passing);
    let back = ask(
        &responder,
        "huge.svc.local.",
        RecordType::AAAA,
        Transport::Udp,
    );
    assert_eq!(back.1.len(), 1);
    responder.zone.registry.deregister(odd.id).unwrap();
    gone();
}

/// A type whose name is 63 characters has no DNS-SD name (`_<type>` would
/// be 64): browsing leaves it out instead of writing an invalid label.
#[test]
fn browsing_leaves_out_types_without_a_dns_sd_name() {
    let responder = responder("ns.svc.local.");
    let long = "t".repeat(63);
    register_many(&responder, &long, 1);
    let (_, types) = ask(
        &responder,
        "_services._dns-sd._udp.svc.local.",
        RecordType::PTR,
        Transport::Tcp,
    );
    assert_eq!(types.len(), 3, "{types:?}");
    let (rcode, answers) = ask(
        &responder,
        &format!("{long}.svc.local."),
        RecordType::A,
        Transport::Udp,
    );
    assert_eq!((rcode, answers.len()), (ResponseCode::NoError, 1));
}
