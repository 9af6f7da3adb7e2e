//! The fast answer path: the questions discovery clients ask all the time,
//! answered straight from the registry into wire format.
//!
//! It takes a plain query (one question, at most an OPT record, EDNS version
//! 0) for `<type>` (A, AAAA, SRV, anything else as NODATA), `<name>.<type>`,
//! `_<type>._tcp`, their subtypes `_<tag>._sub.<type>` and
//! `_<tag>._sub._<type>._tcp`, and names too deep to exist. Everything else returns
//! `false` and goes the general way ([`super::message`]), which is the
//! reference: a test checks that both give the same answers.
//!
//! Nothing is cached between queries. Each answer reads the type's current
//! snapshot and filters its instances by lifetime and health at answer time,
//! so a registration, removal, expiry or health change shows in the very next
//! answer. What makes it fast is what it does not do: no message objects, no
//! per-record names or heap allocation beyond one small list, no compression
//! table. Names are compressed by pointing at the question or at a name this
//! answer already wrote, whose offsets are known as it writes.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};

use super::message::{CLASSIC_UDP_LIMIT, MAX_UDP_PAYLOAD, Responder, TCP_LIMIT, Transport};
use super::zone::{Candidates, LARGE_SET, Label, ZoneSettings, family_asked, most_records};
use crate::registry::{TypeSet, now_ms};
use crate::service::{Host, Instance};

const TYPE_A: u16 = 1;
const TYPE_PTR: u16 = 12;
const TYPE_SOA: u16 = 6;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// A name of at most 255 bytes has at most 127 labels.
const MAX_LABELS: usize = 128;
/// Compression pointers reach only the first 16 KiB of a message.
const POINTER_REACH: usize = 0x4000;
/// EDNS options that hickory parses into typed values (and may reject):
/// NSID, DAU, DHU, N3U, client subnet. A query carrying one goes the general
/// way, so malformed ones get its FORMERR.
const TYPED_EDNS_OPTIONS: [u16; 5] = [3, 5, 6, 7, 8];

/// The zone's names in wire form, worked out once.
#[derive(Debug)]
pub struct ZoneWire {
    /// The apex, lowercase, uncompressed.
    apex: Vec<u8>,
    apex_labels: usize,
    /// The SOA MNAME: the labels left of the apex when it is inside the
    /// zone (then followed by a pointer to the apex), else the whole name.
    nameserver: Vec<u8>,
    nameserver_in_zone: bool,
    ttl: u32,
    negative_ttl: u32,
}

impl ZoneWire {
    pub fn new(zone: &ZoneSettings) -> ZoneWire {
        let apex = name_wire(&zone.apex);
        let full = name_wire(&zone.nameserver.to_lowercase());
        let in_zone = zone.apex.zone_of(&zone.nameserver) && full.len() > apex.len();
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

/// A name as uncompressed wire bytes, ending with the root label.
pub fn name_wire(name: &Name) -> Vec<u8> {
    let mut wire = Vec::with_capacity(name.len() + 1);
    for label in name.iter() {
        wire.push(label.len() as u8);
        wire.extend_from_slice(label);
    }
    wire.push(0);
    wire
}

/// A query the fast path can take, as offsets into its packet.
struct Question {
    /// End of the question section; the response repeats it as asked.
    end: usize,
    /// Where each label of the query name starts.
    labels: [u16; MAX_LABELS],
    label_count: usize,
    qtype: u16,
    /// The payload size the client offered, when it sent an OPT record.
    edns_payload: Option<u16>,
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
    let mut at = 12;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        // No compression pointers in a question we take, and at most 255
        // bytes of name.
        if len > 63 || label_count == MAX_LABELS || at + 1 + len - 12 >= 255 {
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
    let mut edns_payload = None;
    let mut at = end;
    if packet[11] == 1 {
        // OPT: root owner, type 41, class = payload size, TTL = extended
        // rcode, version, flags; then well-formed options.
        if *packet.get(at)? != 0 || u16_at(at + 1)? != TYPE_OPT {
            return None;
        }
        let version = *packet.get(at + 6)?;
        if version != 0 {
            return None;
        }
        edns_payload = Some(u16_at(at + 3)?);
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
        edns_payload,
    })
}

/// What a fast-path query name refers to.
enum Node {
    /// `<type>`, or `_<tag>._sub.<type>` with the tag: the type's snapshot.
    Type(Arc<TypeSet>, Option<Label>),
    /// `_<type>._tcp`, or `_<tag>._sub._<type>._tcp` with the tag.
    Service(Arc<TypeSet>, Option<Label>),
    /// `<name>.<type>`, serving.
    Instance(Arc<Instance>),
    Missing,
}

/// Answers `packet` into `out` if it is a query the fast path takes; false
/// (and `out` unspecified) when the general path must answer it.
pub fn respond(
    responder: &Responder,
    packet: &[u8],
    transport: Transport,
    out: &mut Vec<u8>,
) -> bool {
    let Some(question) = parse(packet) else {
        return false;
    };
    let wire = &responder.wire;
    // Where the apex would start in the name: `depth` labels in. (The apex
    // has at least one label: the root zone is never served.)
    let Some(depth) = question.label_count.checked_sub(wire.apex_labels) else {
        return false;
    };
    let apex_at = usize::from(question.labels[depth]);
    // In the zone? (Case-insensitive; anything else is REFUSED, the
    // general path's business.)
    let asked_apex = &packet[apex_at..question.end - 4];
    if !asked_apex.eq_ignore_ascii_case(&wire.apex) {
        return false;
    }
    if matches!(question.qtype, 251..=252 | 255) {
        return false; // IXFR, AXFR, ANY
    }
    let label = |index: usize| -> &[u8] {
        let at = usize::from(question.labels[index]);
        &packet[at + 1..at + 1 + usize::from(packet[at])]
    };
    let registry = &responder.registry;
    let now = now_ms();
    let node = match depth {
        1 if label(0).first() != Some(&b'_') => {
            match registry.type_set(Label::new(label(0)).as_str()) {
                Some(set) => Node::Type(set, None),
                None => Node::Missing,
            }
        }
        2 if label(0).first() != Some(&b'_') && label(1).first() != Some(&b'_') => {
            let name = Label::new(label(0));
            registry
                .type_set(Label::new(label(1)).as_str())
                .and_then(|set| set.find(name.as_str()).cloned())
                .filter(|instance| instance.is_serving(now))
                .map_or(Node::Missing, Node::Instance)
        }
        2 if label(1).eq_ignore_ascii_case(b"_tcp") => {
            let service = Label::new(label(0));
            match service.underscored() {
                Some(service_type) if !service_type.is_empty() => {
                    match registry.type_set(service_type) {
                        Some(set) => Node::Service(set, None),
                        None => Node::Missing,
                    }
                }
                _ => return false,
            }
        }
        // `_<tag>._sub.<type>`
        3 if label(1).eq_ignore_ascii_case(b"_sub")
            && label(0).len() > 1
            && label(0)[0] == b'_'
            && label(2).first() != Some(&b'_') =>
        {
            let tag = Label::new(&label(0)[1..]);
            match registry.type_set(Label::new(label(2)).as_str()) {
                Some(set) => Node::Type(set, Some(tag)),
                None => Node::Missing,
            }
        }
        // `_<tag>._sub._<type>._tcp`
        4 if label(1).eq_ignore_ascii_case(b"_sub")
            && label(3).eq_ignore_ascii_case(b"_tcp")
            && label(0).len() > 1
            && label(0)[0] == b'_'
            && label(2).len() > 1
            && label(2)[0] == b'_' =>
        {
            let tag = Label::new(&label(0)[1..]);
            match registry.type_set(Label::new(&label(2)[1..]).as_str()) {
                Some(set) => Node::Service(set, Some(tag)),
                None => Node::Missing,
            }
        }
        5.. => Node::Missing,
        _ => return false,
    };
    // PTR answers name `<name>._<type>._tcp.<zone>`: the question name, or
    // for a subtype its part from `_<type>`.
    let service_at = match node {
        Node::Service(_, Some(_)) => usize::from(question.labels[2]),
        _ => 12,
    };
    let limit = match (transport, question.edns_payload) {
        (Transport::Tcp, _) => TCP_LIMIT,
        (Transport::Udp, None) => CLASSIC_UDP_LIMIT,
        (Transport::Udp, Some(payload)) => usize::from(payload.clamp(512, MAX_UDP_PAYLOAD)),
    };
    let opt_len = if question.edns_payload.is_some() {
        OPT_RECORD.len()
    } else {
        0
    };
    let mut message = Message {
        out,
        service_at,
        budget: limit - opt_len,
        answers: 0,
        authorities: 0,
        additionals: 0,
        truncated: false,
    };
    message.out.clear();
    message.out.extend_from_slice(&packet[..question.end]);
    let rcode = write_answer(
        &mut message,
        wire,
        &node,
        question.qtype,
        now,
        apex_at,
        registry.version() as u32,
    );
    if question.edns_payload.is_some() {
        message.out.extend_from_slice(&OPT_RECORD);
        message.additionals += 1;
    }
    let out = message.out;
    // Header: id kept; QR, AA, TC, RD as asked; RA, AD clear; CD as asked.
    out[2] = 0x80 | 0x04 | if message.truncated { 0x02 } else { 0 } | (packet[2] & 0x01);
    out[3] = (packet[3] & 0x10) | rcode.low();
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..8].copy_from_slice(&message.answers.to_be_bytes());
    out[8..10].copy_from_slice(&message.authorities.to_be_bytes());
    out[10..12].copy_from_slice(&message.additionals.to_be_bytes());
    responder
        .metrics
        .count_query(RecordType::from(question.qtype), rcode);
    if message.truncated {
        responder.metrics.dns_truncated.inc();
    }
    true
}

/// Our OPT record: root owner, payload 1232, no extended rcode, version 0,
/// no flags, no options.
const OPT_RECORD: [u8; 11] = {
    let size = MAX_UDP_PAYLOAD.to_be_bytes();
    [0, 0, 41, size[0], size[1], 0, 0, 0, 0, 0, 0]
};

/// The response being written, within `budget` bytes.
struct Message<'a> {
    out: &'a mut Vec<u8>,
    /// Offset of `_<type>._tcp.<zone>` in the question, for PTR targets.
    service_at: usize,
    budget: usize,
    answers: u16,
    authorities: u16,
    additionals: u16,
    truncated: bool,
}

impl Message<'_> {
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
}

/// One member of an answer RRset: an instance, its own TTL, and where its
/// answer record went (for the extras that point back at it).
struct Member<'a> {
    instance: &'a Instance,
    ttl: u32,
    /// Offset of the name extras refer to by pointer (SRV target, PTR name),
    /// once written.
    name_at: usize,
}

/// Writes the answer and authority sections (and extras) for `node`;
/// returns the rcode.
fn write_answer(
    message: &mut Message<'_>,
    wire: &ZoneWire,
    node: &Node,
    qtype: u16,
    now: u64,
    apex_at: usize,
    serial: u32,
) -> ResponseCode {
    let rrtype = match node {
        Node::Type(..) => matches!(qtype, TYPE_A | TYPE_AAAA | TYPE_SRV).then_some(qtype),
        Node::Service(..) => matches!(qtype, TYPE_PTR | TYPE_SRV).then_some(qtype),
        Node::Instance(_) => {
            matches!(qtype, TYPE_A | TYPE_AAAA | TYPE_SRV | TYPE_TXT).then_some(qtype)
        }
        Node::Missing => None,
    };
    let (members, exists) = match node {
        Node::Type(set, tag) | Node::Service(set, tag) => {
            let tag = tag.as_ref().map(Label::as_str);
            match Candidates::of(set, tag, rrtype.and_then(family_asked)) {
                Some(candidates) => {
                    // Only what can fit is needed: see `most_records`.
                    let wanted = candidates.wanted(most_records(message.budget));
                    let (members, found) =
                        serving_members(candidates.run(), wanted, rrtype, now, wire.ttl);
                    (members, found || candidates.exist_beyond_run(now))
                }
                // No instance carries the tag: the name does not exist.
                None => (Vec::new(), false),
            }
        }
        Node::Instance(instance) => {
            serving_members(std::iter::once(instance), 1, rrtype, now, wire.ttl)
        }
        Node::Missing => (Vec::new(), false),
    };
    let mut members = members;
    if !exists {
        write_soa(message, wire, apex_at, serial);
        return ResponseCode::NXDomain;
    }
    let Some(rrtype) = rrtype.filter(|_| !members.is_empty()) else {
        write_soa(message, wire, apex_at, serial);
        return ResponseCode::NoError;
    };
    let rrset_ttl = members.iter().map(|m| m.ttl).min().unwrap_or(wire.ttl);
    fastrand::shuffle(&mut members);
    let mut sent = 0;
    let service_at = message.service_at;
    for member in &mut members {
        let instance = member.instance;
        let fits = message.record(|out| {
            begin_record(out, 0x0c, rrtype, rrset_ttl);
            match rrtype {
                TYPE_A | TYPE_AAAA => {
                    if let Some((_, ip)) = address(instance) {
                        address_rdata(out, ip);
                    }
                }
                TYPE_SRV => {
                    member.name_at = out.len() + 8;
                    srv_rdata(out, instance);
                }
                TYPE_TXT => rdata(out, &instance.txt_wire),
                _ => {
                    // PTR to `<name>._<type>._tcp`: the instance label, then
                    // the question name.
                    let name = instance.spec.name.as_bytes();
                    out.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
                    member.name_at = out.len();
                    out.push(name.len() as u8);
                    out.extend_from_slice(name);
                    out.extend_from_slice(&(0xc000 | service_at as u16).to_be_bytes());
                }
            }
        });
        if !fits {
            message.truncated = true;
            break;
        }
        message.answers += 1;
        sent += 1;
    }
    for member in &members[..sent] {
        match rrtype {
            TYPE_SRV => {
                glue(message, member.instance, member.ttl, member.name_at);
            }
            TYPE_PTR => dnssd_extras(message, member),
            _ => {}
        }
    }
    ResponseCode::NoError
}

/// The serving instances among `candidates` that have a record of `rrtype`
/// (none when it is `None`; at most `capacity`), and whether any instance
/// serves at all (the name exists as long as one does).
fn serving_members<'a>(
    candidates: impl Iterator<Item = &'a Arc<Instance>>,
    capacity: usize,
    rrtype: Option<u16>,
    now: u64,
    max_ttl: u32,
) -> (Vec<Member<'a>>, bool) {
    let mut members = Vec::with_capacity(capacity.min(LARGE_SET));
    let mut exists = false;
    for instance in candidates {
        if members.len() == capacity {
            break;
        }
        if !instance.is_serving(now) {
            continue;
        }
        exists = true;
        // With no record type to collect, one serving instance settles it:
        // a NODATA question on a huge type must not visit every instance.
        let Some(rrtype) = rrtype else { break };
        if !matches!(rrtype, TYPE_A | TYPE_AAAA)
            || address(instance).is_some_and(|(of, _)| of == rrtype)
        {
            members.push(Member {
                instance,
                ttl: instance.remaining_secs(now).min(max_ttl),
                name_at: 0,
            });
        }
    }
    (members, exists)
}

/// Starts a record whose owner is a pointer to `owner_at`.
fn begin_record(out: &mut Vec<u8>, owner_at: usize, rrtype: u16, ttl: u32) {
    out.extend_from_slice(&(0xc000 | owner_at as u16).to_be_bytes());
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

/// Writes a name: a pointer to `at` when one can reach it, else in full.
fn name_or_pointer(out: &mut Vec<u8>, at: usize, full: &[u8]) {
    if at != 0 && at < POINTER_REACH {
        out.extend_from_slice(&(0xc000 | at as u16).to_be_bytes());
    } else {
        out.extend_from_slice(full);
    }
}

/// The instance's address under its SRV target (written at `target_at`), as
/// an additional record if it fits.
fn glue(message: &mut Message<'_>, instance: &Instance, ttl: u32, target_at: usize) {
    let Some((rrtype, ip)) = address(instance) else {
        return;
    };
    if message.record(|out| {
        name_or_pointer(out, target_at, &instance.target_wire);
        record_fields(out, rrtype, ttl);
        address_rdata(out, ip);
    }) {
        message.additionals += 1;
    }
}

/// RFC 6763 §12.1: with each PTR answer, the instance's SRV, TXT and
/// address, each if it fits.
fn dnssd_extras(message: &mut Message<'_>, member: &Member<'_>) {
    let instance = member.instance;
    let service_at = message.service_at;
    let mut target_at = 0;
    if message.record(|out| {
        instance_name(out, member, service_at);
        record_fields(out, TYPE_SRV, member.ttl);
        target_at = out.len() + 8;
        srv_rdata(out, instance);
    }) {
        message.additionals += 1;
    } else {
        target_at = 0;
    }
    if message.record(|out| {
        instance_name(out, member, service_at);
        record_fields(out, TYPE_TXT, member.ttl);
        rdata(out, &instance.txt_wire);
    }) {
        message.additionals += 1;
    }
    glue(message, instance, member.ttl, target_at);
}

/// `<name>._<type>._tcp`, as the PTR answer at `member.name_at` wrote it:
/// a pointer there when one reaches, else the label and a pointer to the
/// service name at `service_at`.
fn instance_name(out: &mut Vec<u8>, member: &Member<'_>, service_at: usize) {
    if member.name_at < POINTER_REACH {
        out.extend_from_slice(&(0xc000 | member.name_at as u16).to_be_bytes());
    } else {
        let name = member.instance.spec.name.as_bytes();
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&(0xc000 | service_at as u16).to_be_bytes());
    }
}

/// The zone SOA in the authority section (negative answers), its owner a
/// pointer to the apex in the question.
fn write_soa(message: &mut Message<'_>, wire: &ZoneWire, apex_at: usize, serial: u32) {
    let pointer = (0xc000 | apex_at as u16).to_be_bytes();
    let written = message.record(|out| {
        out.extend_from_slice(&pointer);
        record_fields(out, TYPE_SOA, wire.negative_ttl);
        let len_at = out.len();
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&wire.nameserver);
        if wire.nameserver_in_zone {
            out.extend_from_slice(&pointer);
        }
        out.push(10);
        out.extend_from_slice(b"hostmaster");
        out.extend_from_slice(&pointer);
        for value in [serial, 3600, 600, 86400, wire.negative_ttl] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        let len = (out.len() - len_at - 2) as u16;
        out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    });
    if written {
        message.authorities += 1;
    } else {
        message.truncated = true;
    }
}

#[cfg(test)]
mod tests {
    //! The fast path against the general one, which is the reference: for
    //! every question the fast path takes, both must give the same answer
    //! (records compared as sets, since each answer is shuffled).

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::{Name, Record, RecordType};

    use super::*;
    use crate::metrics::Metrics;
    use crate::registry::Registry;
    use crate::service::{Health, ValidRegistration};

    fn responder(nameserver: &str) -> Responder {
        let apex = Name::from_ascii("svc.local.").unwrap();
        let registry = Registry::new(apex.clone());
        type Fixture<'a> = (
            &'a str,
            &'a str,
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a [&'a str],
            Health,
        );
        let instances: [Fixture<'_>; 8] = [
            (
                "a1",
                "web",
                "10.0.0.1",
                &[("k", "v")],
                &["api"],
                Health::Passing,
            ),
            ("a2", "web", "10.0.0.2", &[], &[], Health::Warning),
            (
                "a3",
                "web",
                "fd00::3",
                &[("x", "1"), ("y", "2")],
                &["api", "v6"],
                Health::Passing,
            ),
            (
                "a4",
                "web",
                "db.example.com",
                &[],
                &["named"],
                Health::Passing,
            ),
            (
                "down",
                "web",
                "10.0.0.9",
                &[],
                &["api", "down"],
                Health::Critical,
            ),
            ("only", "v6", "fd00::1", &[], &["api"], Health::Passing),
            ("dead", "gone", "10.0.1.1", &[], &["api"], Health::Critical),
            (
                "h",
                "named",
                "host.example.org",
                &[("a", "b")],
                &[],
                Health::Passing,
            ),
        ];
        for (name, service_type, host, metadata, tags, health) in instances {
            let spec = ValidRegistration {
                name: name.into(),
                service_type: service_type.into(),
                host: crate::service::validate_host(host).unwrap(),
                port: 8080,
                tags: tags.iter().map(|t| t.to_string()).collect(),
                metadata: metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                ttl: 60,
                priority: 3,
                weight: 7,
                check: None,
            };
            let identity = registry.identity_for(&spec);
            registry.register(spec, identity, health);
        }
        let zone = ZoneSettings {
            apex: apex.clone(),
            nameserver: Name::from_ascii(nameserver).unwrap(),
            ttl: 5,
            negative_ttl: 7,
        };
        Responder::new(registry, zone, Arc::new(Metrics::default()))
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

    fn sorted(records: &[Record]) -> Vec<String> {
        let mut text: Vec<String> = records
            .iter()
            .map(|r| r.to_string().to_lowercase())
            .collect();
        text.sort();
        text
    }

    fn compare(responder: &Responder, packet: &[u8], transport: Transport) -> bool {
        let mut fast_bytes = Vec::new();
        if !respond(responder, packet, transport, &mut fast_bytes) {
            return false;
        }
        let general = responder.respond(packet, transport).unwrap();
        let fast = Message::from_vec(&fast_bytes).expect("the fast answer parses");
        let general = Message::from_vec(&general.bytes).unwrap();
        let context = format!("{:?}", Message::from_vec(packet).unwrap().queries);
        assert_eq!(fast.metadata, general.metadata, "{context}");
        assert_eq!(fast.queries, general.queries, "{context}");
        assert_eq!(sorted(&fast.answers), sorted(&general.answers), "{context}");
        assert_eq!(
            sorted(&fast.authorities),
            sorted(&general.authorities),
            "{context}"
        );
        assert_eq!(
            sorted(&fast.additionals),
            sorted(&general.additionals),
            "{context}"
        );
        assert_eq!(fast.edns.is_some(), general.edns.is_some(), "{context}");
        if let (Some(fast), Some(general)) = (&fast.edns, &general.edns) {
            assert_eq!(fast.max_payload(), general.max_payload());
        }
        assert!(fast_bytes.len() <= general.to_vec().unwrap().len() + 64);
        true
    }

    #[test]
    fn fast_answers_equal_the_general_path() {
        let names = [
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
            "a.b.c.d.e.svc.local.",
            "h.named.svc.local.",
            // Subtypes: a tag some serving instances carry, one only a
            // critical instance carries, one nobody carries, one on a type
            // with no serving instance, and the same as DNS-SD subtypes.
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
            "_api._sub.__._tcp.svc.local.",
        ];
        let qtypes = [
            RecordType::A,
            RecordType::AAAA,
            RecordType::SRV,
            RecordType::TXT,
            RecordType::PTR,
            RecordType::MX,
            RecordType::CNAME,
            RecordType::NS,
        ];
        for nameserver in ["ns.svc.local.", "ns1.example.net."] {
            let responder = responder(nameserver);
            let mut taken = 0;
            for name in names {
                for qtype in qtypes {
                    for edns in [false, true] {
                        for transport in [Transport::Udp, Transport::Tcp] {
                            let packet = query(name, qtype, edns);
                            taken += usize::from(compare(&responder, &packet, transport));
                        }
                    }
                }
            }
            assert_eq!(
                taken,
                names.len() * qtypes.len() * 4,
                "every one is fast-path"
            );
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
            if !respond(&responder, &packet, Transport::Udp, &mut out) {
                continue;
            }
            taken += 1;
            assert!(
                Message::from_vec(&packet).is_ok(),
                "the fast path answered a packet hickory cannot parse: {packet:?}"
            );
            compare(&responder, &packet, Transport::Udp);
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
        assert!(compare(&responder, &cookie, Transport::Udp));
        // Client subnet, well-formed and not: the general path's business.
        let mut out = Vec::new();
        for data in [&[0, 1, 24, 0, 10, 0, 0][..], &[0, 1, 99][..]] {
            let subnet = with_option(plain.clone(), 8, data);
            assert!(!respond(&responder, &subnet, Transport::Udp, &mut out));
            assert!(responder.respond(&subnet, Transport::Udp).is_some());
        }
    }

    #[test]
    fn other_questions_go_the_general_way() {
        let responder = responder("ns.svc.local.");
        let mut out = Vec::new();
        for (name, qtype) in [
            ("svc.local.", RecordType::SOA),
            ("_services._dns-sd._udp.svc.local.", RecordType::PTR),
            ("_sub.web.svc.local.", RecordType::A),
            ("_sub._web._tcp.svc.local.", RecordType::PTR),
            ("_._sub.web.svc.local.", RecordType::A),
            ("a1._web._tcp.svc.local.", RecordType::SRV),
            ("_tcp.svc.local.", RecordType::A),
            ("web.svc.local.", RecordType::ANY),
            ("web.svc.local.", RecordType::AXFR),
            ("web.other.", RecordType::A),
            ("local.", RecordType::A),
        ] {
            let packet = query(name, qtype, true);
            assert!(
                !respond(&responder, &packet, Transport::Udp, &mut out),
                "{name} {qtype}"
            );
        }
        let mut packet = query("web.svc.local.", RecordType::A, false);
        packet.push(0); // trailing garbage
        assert!(!respond(&responder, &packet, Transport::Udp, &mut out));
        let mut packet = query("web.svc.local.", RecordType::A, false);
        packet[2] |= 0x80; // a response
        assert!(!respond(&responder, &packet, Transport::Udp, &mut out));
        for cut in 0..query("web.svc.local.", RecordType::A, true).len() {
            let packet = &query("web.svc.local.", RecordType::A, true)[..cut];
            assert!(!respond(&responder, packet, Transport::Udp, &mut out));
        }
    }

    #[test]
    fn udp_truncation_matches_in_count_and_flag() {
        let responder = responder("ns.svc.local.");
        register_many(&responder, "big", 200);
        for (qtype, edns) in [(RecordType::A, false), (RecordType::SRV, true)] {
            let packet = query("big.svc.local.", qtype, edns);
            let mut out = Vec::new();
            assert!(respond(&responder, &packet, Transport::Udp, &mut out));
            let general = responder.respond(&packet, Transport::Udp).unwrap();
            let fast = Message::from_vec(&out).unwrap();
            let general_message = Message::from_vec(&general.bytes).unwrap();
            assert!(fast.metadata.truncation && general_message.metadata.truncation);
            assert_eq!(fast.answers.len(), general_message.answers.len());
            assert!(out.len() <= if edns { 1232 } else { 512 });
        }
    }

    /// A type under the sampling threshold is answered from all of its
    /// instances, shuffled, also on the general path and when few fit.
    #[test]
    fn small_types_are_answered_from_every_instance() {
        let responder = responder("ns.svc.local.");
        register_many(&responder, "big", 200);
        let packet = query("_t._sub.big.svc.local.", RecordType::A, false);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..150 {
            let udp = responder.respond(&packet, Transport::Udp).unwrap();
            let udp = Message::from_vec(&udp.bytes).unwrap();
            assert!(udp.metadata.truncation);
            seen.extend(udp.answers.iter().map(|r| r.data.to_string()));
        }
        assert_eq!(seen.len(), 200, "every instance gets its turn");
    }

    /// The DNS-SD browse answer over many types: every type over TCP, as
    /// many as fit with TC over UDP.
    #[test]
    fn browsing_many_types_lists_what_fits() {
        let responder = responder("ns.svc.local.");
        for n in 0..300 {
            register_many(&responder, &format!("many{n:03}"), 1);
        }
        let packet = query("_services._dns-sd._udp.svc.local.", RecordType::PTR, true);
        let tcp = responder.respond(&packet, Transport::Tcp).unwrap();
        let tcp = Message::from_vec(&tcp.bytes).unwrap();
        assert!(!tcp.metadata.truncation);
        let listed: std::collections::BTreeSet<String> =
            tcp.answers.iter().map(|r| r.data.to_string()).collect();
        // The fixture's serving types, and the 300.
        assert_eq!(listed.len(), 300 + 3, "{listed:?}");
        assert!(listed.contains("_many299._tcp.svc.local."));
        let udp = responder.respond(&packet, Transport::Udp).unwrap();
        let udp = Message::from_vec(&udp.bytes).unwrap();
        assert!(udp.metadata.truncation && !udp.answers.is_empty());
        assert!(udp.answers.len() < 1232 / 16);
    }

    /// Questions on a huge type that the sampling does not bound (no
    /// record of the type asked for, or no instance of the address family)
    /// answer as the general path does, over UDP and TCP.
    #[test]
    fn nodata_questions_on_large_types_answer_as_the_general_path() {
        let responder = responder("ns.svc.local.");
        register_many(&responder, "huge", 1000);
        for (name, qtype) in [
            ("huge.svc.local.", RecordType::AAAA),
            ("huge.svc.local.", RecordType::TXT),
            ("huge.svc.local.", RecordType::PTR),
            ("_huge._tcp.svc.local.", RecordType::A),
        ] {
            for transport in [Transport::Udp, Transport::Tcp] {
                let packet = query(name, qtype, true);
                assert!(
                    compare(&responder, &packet, transport),
                    "{name} {qtype} {transport:?}"
                );
            }
        }
    }

    #[test]
    fn large_types_are_sampled_fairly_and_completely_over_tcp() {
        let responder = responder("ns.svc.local.");
        register_many(&responder, "huge", 1000);
        let packet = query("huge.svc.local.", RecordType::A, true);
        // Over TCP everything fits: the sample is the whole set.
        assert!(compare(&responder, &packet, Transport::Tcp));
        // Over UDP: as many as fit, TC set, and every instance gets its turn.
        let mut seen = std::collections::BTreeSet::new();
        let mut firsts = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut out = Vec::new();
            assert!(respond(&responder, &packet, Transport::Udp, &mut out));
            let fast = Message::from_vec(&out).unwrap();
            assert!(fast.metadata.truncation);
            assert_eq!(fast.answers.len(), (1232 - 11 - 12 - 20) / 16);
            firsts.insert(fast.answers[0].to_string());
            seen.extend(fast.answers.iter().map(|r| r.to_string()));
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
        // The general path samples the same way: a tag subdomain of the type.
        let tagged = query("_t._sub.huge.svc.local.", RecordType::A, true);
        assert!(compare(&responder, &tagged, Transport::Tcp));
        let tcp = responder.respond(&tagged, Transport::Tcp).unwrap();
        assert_eq!(Message::from_vec(&tcp.bytes).unwrap().answers.len(), 1000);
        let udp = responder.respond(&tagged, Transport::Udp).unwrap();
        let udp = Message::from_vec(&udp.bytes).unwrap();
        assert!(udp.metadata.truncation);
        assert_eq!(udp.answers.len(), (1232 - 11 - 12 - 27) / 16);
    }

    /// One instance unlike the others in a huge type (the only IPv6 one,
    /// the only one with a tag) is found by A/AAAA and tag questions on
    /// both paths, not missed by the sampling, and a health change or a
    /// deregistration shows at once.
    #[test]
    fn the_odd_one_out_of_a_large_type_is_found() {
        let responder = responder("ns.svc.local.");
        register_many(&responder, "huge", 1000);
        let odd = ValidRegistration {
            name: "odd".into(),
            service_type: "huge".into(),
            host: crate::service::validate_host("fd00::99").unwrap(),
            port: 80,
            tags: vec!["rare".into()],
            metadata: BTreeMap::new(),
            ttl: 60,
            priority: 0,
            weight: 1,
            check: None,
        };
        let identity = responder.registry.identity_for(&odd);
        let odd = responder
            .registry
            .register(odd, identity, Health::Passing)
            .instance;
        let ask = |name: &str, qtype: RecordType, transport: Transport| {
            let packet = query(name, qtype, true);
            compare(&responder, &packet, transport);
            let answer = responder.respond(&packet, transport).unwrap();
            let message = Message::from_vec(&answer.bytes).unwrap();
            let answers: Vec<String> = message.answers.iter().map(|r| r.data.to_string()).collect();
            (message.metadata.response_code, answers)
        };
        for transport in [Transport::Udp, Transport::Tcp] {
            let only_odd = (ResponseCode::NoError, vec!["fd00::99".to_string()]);
            assert_eq!(
                ask("huge.svc.local.", RecordType::AAAA, transport),
                only_odd
            );
            assert_eq!(
                ask("_rare._sub.huge.svc.local.", RecordType::AAAA, transport),
                only_odd
            );
            assert_eq!(
                ask("_rare._sub.huge.svc.local.", RecordType::A, transport),
                (ResponseCode::NoError, vec![])
            );
            let (rcode, ptr) = ask(
                "_rare._sub._huge._tcp.svc.local.",
                RecordType::PTR,
                transport,
            );
            assert_eq!((rcode, ptr.len()), (ResponseCode::NoError, 1));
            assert_eq!(
                ask("_absent._sub.huge.svc.local.", RecordType::A, transport).0,
                ResponseCode::NXDomain
            );
        }
        // Critical, then deregistered: the name the tag makes is gone, the
        // type stays (NODATA); passing again in between, it is back.
        let gone = || {
            assert_eq!(
                ask("huge.svc.local.", RecordType::AAAA, Transport::Udp),
                (ResponseCode::NoError, vec![])
            );
            let tagged = ask(
                "_rare._sub.huge.svc.local.",
                RecordType::AAAA,
                Transport::Udp,
            );
            assert_eq!(tagged.0, ResponseCode::NXDomain);
        };
        let beat = |health| responder.registry.heartbeat(odd.id, health, None).unwrap();
        beat(Health::Critical);
        gone();
        beat(Health::Passing);
        let back = ask("huge.svc.local.", RecordType::AAAA, Transport::Udp);
        assert_eq!(back.1.len(), 1);
        responder.registry.deregister(odd.id).unwrap();
        gone();
    }

    fn register_many(responder: &Responder, service_type: &str, count: usize) {
        for i in 0..count {
            let spec = ValidRegistration {
                name: format!("many{i:04}"),
                service_type: service_type.into(),
                host: crate::service::validate_host(&format!("10.1.{}.{}", i / 200, i % 200))
                    .unwrap(),
                port: 80,
                tags: vec!["t".into()],
                metadata: BTreeMap::new(),
                ttl: 60,
                priority: 0,
                weight: 1,
                check: None,
            };
            let identity = responder.registry.identity_for(&spec);
            responder.registry.register(spec, identity, Health::Passing);
        }
    }
}
