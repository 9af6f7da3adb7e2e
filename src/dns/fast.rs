//! The fast path: a plain query read by hand and its answer written
//! straight into wire format.
//!
//! It takes any plain query for a name in the zone: one question of class
//! IN, opcode QUERY, at most an OPT record (EDNS version 0, options hickory
//! would not parse into typed values), nothing else. Everything else
//! returns `false` and goes the general way ([`super::message`]): refusals,
//! FORMERR, BADVERS, zone transfers, names outside the zone.
//!
//! What to answer is decided by the rule book ([`super::answer`]), as for
//! the general path; this module only writes it. What makes it fast is what
//! it does not do: no message objects, no `Record`s, no heap allocation
//! beyond the answer's one list, no compression table. Names are compressed
//! by pointing at the question or at a name this answer already wrote,
//! whose offsets are known as it writes.

use std::net::IpAddr;

use hickory_proto::rr::RecordType;

use super::answer::{
    Answer, Member, OPT_RECORD_LEN, RFC8482_CPU, Records, SOA_EXPIRE, SOA_REFRESH, SOA_RETRY,
    Subject, Transport, Zone, ZoneSettings, most_records, response_flags, response_limit,
};
use super::node::{MAX_DEPTH, Node};
use crate::service::{Host, Instance};

// Record types as the wire has them: converting a `RecordType` costs a
// match per record, a fifth of writing an SRV answer's records.
const TYPE_A: u16 = 1;
const TYPE_NS: u16 = 2;
const TYPE_SOA: u16 = 6;
const TYPE_PTR: u16 = 12;
const TYPE_HINFO: u16 = 13;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// A name of at most 255 bytes has at most 127 labels.
const MAX_LABELS: usize = 128;
/// Compression pointers reach only the first 16 KiB of a message.
const POINTER_REACH: usize = 0x4000;
/// The question name starts right after the header.
const QUESTION_AT: usize = 12;
/// The SOA RNAME's label, left of the apex.
const HOSTMASTER: &[u8] = b"\x0ahostmaster";
/// EDNS options that hickory parses into typed values (and may reject):
/// NSID, DAU, DHU, N3U, client subnet. A query carrying one goes the general
/// way, so malformed ones get its FORMERR.
const TYPED_EDNS_OPTIONS: [u16; 5] = [3, 5, 6, 7, 8];

/// The zone's names in wire form, worked out once.
#[derive(Debug)]
pub(crate) struct ZoneWire {
    /// The apex, lowercase, uncompressed.
    apex: Vec<u8>,
    apex_labels: usize,
    /// The nameserver (NS target, SOA MNAME): the labels left of the apex
    /// when it is inside the zone (then followed by the apex as asked),
    /// else the whole name.
    nameserver: Vec<u8>,
    nameserver_in_zone: bool,
    ttl: u32,
    negative_ttl: u32,
}

impl ZoneWire {
    pub(crate) fn new(zone: &ZoneSettings) -> ZoneWire {
        let apex = crate::names::to_wire(&zone.apex);
        let full = crate::names::to_wire(&zone.nameserver.to_lowercase());
        let in_zone = zone.apex.zone_of(&zone.nameserver);
        let nameserver = if in_zone {
            full[..full.len() - apex.len()].to_vec()
        } else {
            full
        };
        ZoneWire {
            apex_labels: zone.apex.iter().count(),
            apex,
            nameserver,
            nameserver_in_zone: in_zone,
            ttl: zone.ttl,
            negative_ttl: zone.negative_ttl,
        }
    }
}

/// A query the fast path can take, as offsets into its packet.
struct Question {
    /// End of the question section; the response repeats it as asked.
    end: usize,
    /// Where each label of the query name starts.
    labels: [u16; MAX_LABELS],
    label_count: usize,
    qtype: u16,
    /// The client's OPT record, when it sent one.
    edns: Option<RequestEdns>,
}

/// What the response's OPT record depends on.
#[derive(Clone, Copy)]
struct RequestEdns {
    payload: u16,
    /// The DO bit, which the response copies (RFC 3225 §3).
    dnssec_ok: bool,
}

/// Reads a query the fast path can take; `None` for anything else.
fn parse(packet: &[u8]) -> Option<Question> {
    let u16_at = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]))
    };
    // A query (QR clear) with opcode QUERY, one question, nothing else but
    // possibly an OPT record.
    if packet.len() < 12 || packet[2] & 0xf8 != 0 {
        return None;
    }
    if u16_at(4)? != 1 || u16_at(6)? != 0 || u16_at(8)? != 0 || u16_at(10)? > 1 {
        return None;
    }
    let mut labels = [0u16; MAX_LABELS];
    let mut label_count = 0;
    let mut at = QUESTION_AT;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        // No compression pointers in a question we take, and at most 255
        // bytes of name.
        if len > 63 || label_count == MAX_LABELS || at + 1 + len - QUESTION_AT >= 255 {
            return None;
        }
        labels[label_count] = at as u16;
        label_count += 1;
        at += 1 + len;
    }
    let qtype = u16_at(at)?;
    if u16_at(at + 2)? != CLASS_IN {
        return None;
    }
    let end = at + 4;
    let mut edns = None;
    let mut at = end;
    if packet[11] == 1 {
        // OPT: root owner, type 41, class = payload size, TTL = extended
        // rcode, version, flags; then well-formed options.
        if *packet.get(at)? != 0 || u16_at(at + 1)? != TYPE_OPT {
            return None;
        }
        if *packet.get(at + 6)? != 0 {
            return None; // EDNS version: BADVERS is the general path's
        }
        edns = Some(RequestEdns {
            payload: u16_at(at + 3)?,
            dnssec_ok: *packet.get(at + 7)? & 0x80 != 0,
        });
        let rdata_len = usize::from(u16_at(at + 9)?);
        at += 11;
        let rdata_end = at + rdata_len;
        while at < rdata_end {
            let code = u16_at(at)?;
            if TYPED_EDNS_OPTIONS.contains(&code) {
                return None;
            }
            at += 4 + usize::from(u16_at(at + 2)?);
        }
        if at != rdata_end {
            return None;
        }
    }
    // Trailing bytes: let the general parser decide what they mean.
    if at != packet.len() {
        return None;
    }
    Some(Question {
        end,
        labels,
        label_count,
        qtype,
        edns,
    })
}

/// Answers `packet` into `out` if it is a query the fast path takes, as of
/// `now_ms`; false (and `out` unspecified) when the general path must
/// answer it. `wire` is the zone's names in wire form; `client` is who
/// asked (for locality).
pub(crate) fn respond(
    zone: &Zone,
    wire: &ZoneWire,
    packet: &[u8],
    transport: Transport,
    client: IpAddr,
    now_ms: u64,
    out: &mut Vec<u8>,
) -> bool {
    let Some(question) = parse(packet) else {
        return false;
    };
    // Where the apex would start in the name: `depth` labels in. (The apex
    // has at least one label: the root zone is never served.)
    let Some(depth) = question.label_count.checked_sub(wire.apex_labels) else {
        return false;
    };
    let apex_at = usize::from(question.labels[depth]);
    // In the zone? (Case-insensitive; anything else is REFUSED, the
    // general path's business.)
    if !packet[apex_at..question.end - 4].eq_ignore_ascii_case(&wire.apex) {
        return false;
    }
    if matches!(question.qtype, 41 | 249 | 250 | 251 | 252) {
        // IXFR, AXFR: refused; OPT, TKEY, TSIG: FORMERR; the general path's.
        return false;
    }
    let label = |index: usize| -> &[u8] {
        let at = usize::from(question.labels[index]);
        &packet[at + 1..at + 1 + usize::from(packet[at])]
    };
    let node = Node::parse(depth, (0..depth.min(MAX_DEPTH)).map(label));
    // PTR answers name `<name>._<type>._tcp.<zone>`: the question name, or
    // for a subtype its part from `_<type>`.
    let service_at = match node {
        Node::Service { tag: Some(_), .. } => usize::from(question.labels[2]),
        _ => QUESTION_AT,
    };
    let limit = response_limit(transport, question.edns.map(|e| e.payload));
    let opt_len = if question.edns.is_some() {
        OPT_RECORD_LEN
    } else {
        0
    };
    let registry = &zone.registry;
    let qtype = RecordType::from(question.qtype);
    let subject = Subject::find(registry, node);
    let settings = &zone.settings;
    let locality = settings.steering.locality_of(client);
    let most = most_records(limit);
    let answer = subject.answer(registry, settings, qtype, locality, now_ms, most);
    let mut message = Writer {
        out,
        budget: limit - opt_len,
        question_end: question.end,
        apex_at,
        service_at,
        answers: 0,
        authorities: 0,
        additionals: 0,
        truncated: false,
    };
    message.out.clear();
    message.out.extend_from_slice(&packet[..question.end]);
    message.answer(&answer, wire, registry.version() as u32);
    if let Some(edns) = question.edns {
        message.out.extend_from_slice(&opt_record(edns.dnssec_ok));
        message.additionals += 1;
    }
    let flags = response_flags(
        [packet[2], packet[3]],
        true,
        message.truncated,
        answer.rcode,
    );
    let out = message.out;
    out[2..4].copy_from_slice(&flags);
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..8].copy_from_slice(&message.answers.to_be_bytes());
    out[8..10].copy_from_slice(&message.authorities.to_be_bytes());
    out[10..12].copy_from_slice(&message.additionals.to_be_bytes());
    zone.count(qtype, &answer, message.truncated);
    true
}

/// Our OPT record: root owner, our payload size, no extended rcode,
/// version 0, the DO bit as asked, no options.
fn opt_record(dnssec_ok: bool) -> [u8; OPT_RECORD_LEN] {
    let size = super::answer::MAX_UDP_PAYLOAD.to_be_bytes();
    let flags = if dnssec_ok { 0x80 } else { 0 };
    [0, 0, 41, size[0], size[1], 0, 0, flags, 0, 0, 0]
}

/// The response being written, within `budget` bytes.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    budget: usize,
    /// Where the answer section starts.
    question_end: usize,
    /// Offset of the apex in the question, as asked.
    apex_at: usize,
    /// Offset of `_<type>._tcp.<zone>` in the question, for PTR targets.
    service_at: usize,
    answers: u16,
    authorities: u16,
    additionals: u16,
    truncated: bool,
}

impl Writer<'_> {
    /// Appends one record written by `write`, if it fits; else leaves
    /// nothing and returns false.
    fn record(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mark = self.out.len();
        write(self.out);
        if self.out.len() > self.budget {
            self.out.truncate(mark);
            return false;
        }
        true
    }

    /// Appends an answer record; on the first that does not fit, sets TC
    /// and returns false.
    fn answer_record(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        if self.record(write) {
            self.answers += 1;
            true
        } else {
            self.truncated = true;
            false
        }
    }

    /// Appends an additional record if it fits.
    fn additional(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        let fits = self.record(write);
        if fits {
            self.additionals += 1;
        }
        fits
    }

    /// Writes the answer and authority sections, and the extras of the
    /// answers sent.
    fn answer(&mut self, answer: &Answer<'_>, wire: &ZoneWire, serial: u32) {
        let owner = QUESTION_AT;
        match &answer.records {
            Records::None => {
                if self.soa(wire, wire.negative_ttl, serial) {
                    self.authorities += 1;
                } else {
                    self.truncated = true;
                }
            }
            Records::Soa => {
                if self.soa(wire, wire.ttl, serial) {
                    self.answers += 1;
                } else {
                    self.truncated = true;
                }
            }
            Records::Ns => {
                let apex_at = self.apex_at;
                let asked_for_it = self.asks_for(wire);
                self.answer_record(|out| {
                    begin_record(out, owner, TYPE_NS, wire.ttl);
                    with_rdlength(out, |out| {
                        if asked_for_it {
                            pointer(out, QUESTION_AT);
                        } else {
                            nameserver(out, wire, apex_at);
                        }
                    });
                });
            }
            Records::Hinfo => {
                self.answer_record(|out| {
                    begin_record(out, owner, TYPE_HINFO, wire.ttl);
                    with_rdlength(out, |out| {
                        out.push(RFC8482_CPU.len() as u8);
                        out.extend_from_slice(RFC8482_CPU.as_bytes());
                        out.push(0);
                    });
                });
            }
            Records::Browse(types) => self.browse(types, wire),
            Records::Instances {
                rrtype,
                ttl,
                members,
            } => self.instances(*rrtype, *ttl, members),
            Records::Addresses { ttl, addresses } => {
                for ip in addresses {
                    let rrtype = if ip.is_ipv4() { TYPE_A } else { TYPE_AAAA };
                    let fits = self.answer_record(|out| {
                        begin_record(out, QUESTION_AT, rrtype, *ttl);
                        address_rdata(out, *ip);
                    });
                    if !fits {
                        break;
                    }
                }
            }
            // Reverse names are outside the zone, the general path's; written
            // here all the same, so both encoders can write every answer.
            Records::Reverse { ttl, members } => {
                for member in members {
                    let target = &member.instance.target_wire;
                    let fits = self.answer_record(|out| {
                        begin_record(out, QUESTION_AT, TYPE_PTR, *ttl);
                        rdata(out, target);
                    });
                    if !fits {
                        break;
                    }
                }
            }
        }
    }

    /// Whether the question asked for the nameserver's own name, exactly
    /// as the zone's settings spell it. Then its name is written as a
    /// pointer to the question, as hickory's compression would.
    fn asks_for(&self, wire: &ZoneWire) -> bool {
        wire.nameserver_in_zone && self.out[QUESTION_AT..self.apex_at] == wire.nameserver[..]
    }

    /// Writes the zone's SOA (owner: the apex as asked) if it fits.
    fn soa(&mut self, wire: &ZoneWire, ttl: u32, serial: u32) -> bool {
        let apex_at = self.apex_at;
        // A question for the nameserver's or hostmaster's own name: hickory
        // would point at it, so this does too.
        let mname_is_question = self.asks_for(wire);
        let rname_is_question = &self.out[QUESTION_AT..apex_at] == HOSTMASTER;
        // A nameserver called hostmaster: the RNAME is the MNAME.
        let rname_is_mname = wire.nameserver_in_zone && wire.nameserver == HOSTMASTER;
        self.record(|out| {
            begin_record(out, apex_at, TYPE_SOA, ttl);
            with_rdlength(out, |out| {
                let mname_at = out.len();
                if mname_is_question {
                    pointer(out, QUESTION_AT);
                } else {
                    nameserver(out, wire, apex_at);
                }
                if rname_is_question {
                    pointer(out, QUESTION_AT);
                } else if rname_is_mname && mname_at < POINTER_REACH {
                    pointer(out, mname_at);
                } else {
                    out.extend_from_slice(HOSTMASTER);
                    pointer(out, apex_at);
                }
                for value in [
                    serial,
                    SOA_REFRESH,
                    SOA_RETRY,
                    SOA_EXPIRE,
                    wire.negative_ttl,
                ] {
                    out.extend_from_slice(&value.to_be_bytes());
                }
            });
        })
    }

    /// PTR records to `_<type>._tcp.<zone>`, pointing at the first `_tcp`
    /// label written.
    fn browse(&mut self, types: &[String], wire: &ZoneWire) {
        let apex_at = self.apex_at;
        let mut tcp_at = 0;
        for service_type in types {
            let fits = self.answer_record(|out| {
                begin_record(out, QUESTION_AT, TYPE_PTR, wire.ttl);
                with_rdlength(out, |out| {
                    out.push(service_type.len() as u8 + 1);
                    out.push(b'_');
                    out.extend_from_slice(service_type.as_bytes());
                    if tcp_at != 0 && tcp_at < POINTER_REACH {
                        pointer(out, tcp_at);
                    } else {
                        tcp_at = out.len();
                        out.extend_from_slice(b"\x04_tcp");
                        pointer(out, apex_at);
                    }
                });
            });
            if !fits {
                break;
            }
        }
    }

    /// One RRset of `rrtype` over `members`, then the extras of the
    /// members sent.
    fn instances(&mut self, rrtype: RecordType, ttl: u32, members: &[Member<'_>]) {
        let service_at = self.service_at;
        let code = u16::from(rrtype);
        let mut sent = 0;
        for member in members {
            let instance = member.instance;
            let fits = self.answer_record(|out| {
                begin_record(out, QUESTION_AT, code, ttl);
                match code {
                    TYPE_A | TYPE_AAAA => {
                        if let Some((_, ip)) = address(instance) {
                            address_rdata(out, ip);
                        }
                    }
                    TYPE_SRV => srv_rdata(out, instance),
                    TYPE_TXT => rdata(out, &instance.txt_wire),
                    _ => with_rdlength(out, |out| {
                        // PTR to `<name>._<type>._tcp`: the instance label,
                        // then the service name in the question.
                        label(out, instance.spec.name.as_bytes());
                        pointer(out, service_at);
                    }),
                }
            });
            if !fits {
                break;
            }
            sent += 1;
        }
        if !matches!(code, TYPE_SRV | TYPE_PTR) {
            return;
        }
        // Each answer's name (its SRV target, its PTR's instance name) is
        // found again by walking the records written.
        let mut at = self.question_end;
        for member in &members[..sent] {
            let rdata_at = at + 12;
            at = rdata_at + usize::from(u16::from_be_bytes([self.out[at + 10], self.out[at + 11]]));
            if code == TYPE_SRV {
                self.glue(member.instance, member.ttl, rdata_at + 6);
            } else {
                self.dnssd_extras(member, rdata_at);
            }
        }
    }

    /// The instance's address under its SRV target (written at
    /// `target_at`; 0 for nowhere), as an additional record if it fits.
    fn glue(&mut self, instance: &Instance, ttl: u32, target_at: usize) {
        let Some((rrtype, ip)) = address(instance) else {
            return;
        };
        self.additional(|out| {
            if target_at != 0 && target_at < POINTER_REACH {
                pointer(out, target_at);
            } else {
                out.extend_from_slice(&instance.target_wire);
            }
            record_fields(out, rrtype, ttl);
            address_rdata(out, ip);
        });
    }

    /// RFC 6763 §12.1: with each PTR answer, the instance's SRV, TXT and
    /// address, each if it fits. The PTR's rdata (the instance's name) is
    /// at `name_at`.
    fn dnssd_extras(&mut self, member: &Member<'_>, name_at: usize) {
        let instance = member.instance;
        let service_at = self.service_at;
        let instance_name = |out: &mut Vec<u8>| {
            if name_at < POINTER_REACH {
                pointer(out, name_at);
            } else {
                label(out, instance.spec.name.as_bytes());
                pointer(out, service_at);
            }
        };
        let mut target_at = 0;
        let srv = self.additional(|out| {
            instance_name(out);
            record_fields(out, TYPE_SRV, member.ttl);
            target_at = out.len() + 8;
            srv_rdata(out, instance);
        });
        self.additional(|out| {
            instance_name(out);
            record_fields(out, TYPE_TXT, member.ttl);
            rdata(out, &instance.txt_wire);
        });
        self.glue(instance, member.ttl, if srv { target_at } else { 0 });
    }
}

/// Writes a compression pointer to `at`.
fn pointer(out: &mut Vec<u8>, at: usize) {
    out.extend_from_slice(&(0xc000 | at as u16).to_be_bytes());
}

/// Writes one label.
fn label(out: &mut Vec<u8>, label: &[u8]) {
    out.push(label.len() as u8);
    out.extend_from_slice(label);
}

/// The nameserver's name: its labels and the apex as asked (at `apex_at`)
/// when it is in the zone, else the whole name.
fn nameserver(out: &mut Vec<u8>, wire: &ZoneWire, apex_at: usize) {
    out.extend_from_slice(&wire.nameserver);
    if wire.nameserver_in_zone {
        pointer(out, apex_at);
    }
}

/// Starts a record whose owner is a pointer to `owner_at`.
fn begin_record(out: &mut Vec<u8>, owner_at: usize, rrtype: u16, ttl: u32) {
    pointer(out, owner_at);
    record_fields(out, rrtype, ttl);
}

/// Type, class IN and TTL of a record whose owner was just written.
fn record_fields(out: &mut Vec<u8>, rrtype: u16, ttl: u32) {
    out.extend_from_slice(&rrtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
}

/// RDLENGTH and RDATA.
fn rdata(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// RDLENGTH, then the RDATA `write` writes.
fn with_rdlength(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let len_at = out.len();
    out.extend_from_slice(&[0, 0]);
    write(out);
    let len = (out.len() - len_at - 2) as u16;
    out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
}

/// SRV RDLENGTH and RDATA; the target is never compressed (RFC 2782).
fn srv_rdata(out: &mut Vec<u8>, instance: &Instance) {
    let spec = &instance.spec;
    let target = &instance.target_wire;
    out.extend_from_slice(&((6 + target.len()) as u16).to_be_bytes());
    out.extend_from_slice(&spec.priority.to_be_bytes());
    out.extend_from_slice(&spec.weight.to_be_bytes());
    out.extend_from_slice(&spec.port.to_be_bytes());
    out.extend_from_slice(target);
}

/// The instance's address record type and address, when its host is an IP.
fn address(instance: &Instance) -> Option<(u16, IpAddr)> {
    match instance.spec.host {
        Host::Ip(ip @ IpAddr::V4(_)) => Some((TYPE_A, ip)),
        Host::Ip(ip @ IpAddr::V6(_)) => Some((TYPE_AAAA, ip)),
        Host::Name(_) => None,
    }
}

/// RDLENGTH and RDATA of an A or AAAA record.
fn address_rdata(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(ip) => rdata(out, &ip.octets()),
        IpAddr::V6(ip) => rdata(out, &ip.octets()),
    }
}
