//! The general path: any packet, parsed and answered through hickory's
//! message types.
//!
//! It takes what the fast path ([`super::fast`]) leaves: it drops runts and
//! responses, answers FORMERR to what does not parse, NOTIMP to other
//! opcodes, FORMERR to anything but one question, BADVERS to EDNS versions
//! above 0, REFUSED outside the zone, for other classes and for zone
//! transfers; when forwarding is on, it says to forward a question of
//! class IN outside the zone instead of refusing it. A question in the zone is answered by the rule book
//! ([`super::answer`]), as on the fast path; this module builds hickory
//! records from it and lets hickory write them, which makes it the
//! reference the fast path is tested against.

use std::iter;
use std::net::IpAddr;

use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Header, HeaderCounts, Message, Metadata, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, HINFO, NS, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

use super::answer::{
    Answer, CLASSIC_UDP_LIMIT, MAX_UDP_PAYLOAD, OPT_RECORD_LEN, RFC8482_CPU, Records,
    ReverseSubject, SOA_EXPIRE, SOA_REFRESH, SOA_RETRY, Subject, Transport, Zone, ZoneSettings,
    most_records, response_flags, response_limit,
};
use super::node::Node;
use crate::select::Steering;
use crate::service::{Host, Instance};

/// Answers one packet from `client` as of `now_ms`, as if forwarding were
/// off; `None` means drop it (see [`respond_or_forward`]).
pub(crate) fn respond(
    zone: &Zone,
    packet: &[u8],
    transport: Transport,
    client: IpAddr,
    now_ms: u64,
) -> Option<Vec<u8>> {
    match respond_or_forward(zone, packet, transport, client, now_ms, false) {
        Outcome::Answer(response) => Some(response),
        Outcome::Drop | Outcome::Forward => None,
    }
}

/// What the general path made of a packet.
pub(crate) enum Outcome {
    /// Send this.
    Answer(Vec<u8>),
    /// Send nothing.
    Drop,
    /// A question of class IN that is not the zone's (outside it, or a
    /// reverse name of no serving instance), and `forward` was asked for:
    /// the forwarder answers it. Zone transfers are never forwarded.
    Forward,
}

/// Answers one packet from `client` as of `now_ms`: `Drop` when it is too
/// short to carry an id to answer to, or itself a response (never answer
/// those, to avoid loops). A query with an EDNS client subnet (RFC 7871),
/// which forwarders send, is answered for that subnet. With `forward`,
/// what is refused as not the zone's is forwarded instead.
pub(crate) fn respond_or_forward(
    zone: &Zone,
    packet: &[u8],
    transport: Transport,
    client: IpAddr,
    now_ms: u64,
    forward: bool,
) -> Outcome {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        zone.metrics.dns_dropped.inc();
        return Outcome::Drop;
    }
    let request_flags = [packet[2], packet[3]];
    let mut decoder = BinDecoder::new(packet);
    let read = Message::read(&mut decoder);
    let trailing = !decoder.is_empty();
    let Ok(request) = read else {
        // The header parsed, the rest did not: FORMERR, without the
        // question or EDNS we could not read.
        let reply = Reply {
            request_flags,
            limit: CLASSIC_UDP_LIMIT,
            edns: None,
        };
        let metadata = Metadata::response_from_request(&Metadata::new(
            u16::from_be_bytes([packet[0], packet[1]]),
            hickory_proto::op::MessageType::Query,
            hickory_proto::op::OpCode::from_u8((packet[2] >> 3) & 0x0f),
        ));
        return Outcome::Answer(reply.refuse(zone, metadata, None, ResponseCode::FormErr));
    };
    let metadata = Metadata::response_from_request(&request.metadata);
    let subnet = request.edns.as_ref().and_then(client_subnet);
    let steering = &zone.settings.steering;
    let reply = Reply {
        request_flags,
        limit: response_limit(transport, request.edns.as_ref().map(Edns::max_payload)),
        edns: request
            .edns
            .as_ref()
            .map(|edns| response_edns(edns, subnet.as_ref(), steering)),
    };
    let query = request.queries.first();
    let refusal = if request.metadata.op_code != hickory_proto::op::OpCode::Query {
        Some(ResponseCode::NotImp)
    } else if request.queries.len() != 1 || trailing {
        // Bytes after the last record are no part of a query.
        Some(ResponseCode::FormErr)
    } else if request
        .queries
        .first()
        .is_some_and(|q| is_meta_type(q.query_type()))
    {
        // OPT, TKEY and TSIG are records about the message, never asked for.
        Some(ResponseCode::FormErr)
    } else if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
        Some(ResponseCode::BADVERS)
    } else {
        None
    };
    if let Some(rcode) = refusal {
        return Outcome::Answer(reply.refuse(zone, metadata, query, rcode));
    }
    let query = &request.queries[0];
    let qname = query.name();
    let in_zone = zone.settings.apex.zone_of(qname);
    if query.query_class() == DNSClass::IN
        && !in_zone
        && query.query_type() == RecordType::PTR
        && let Some(reverse) = ReverseSubject::find(&zone.registry, qname)
        && let Some(answer) = reverse.answer(&zone.settings, now_ms)
    {
        let names = Names::of(qname, &zone.settings, &Node::Missing);
        let records = records(&answer, &names, &zone.settings, 0);
        let response = reply.send(metadata, Some(query), answer.rcode, true, &records);
        zone.count(query.query_type(), &answer, response.1);
        return Outcome::Answer(response.0);
    }
    let transfer = matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR);
    if forward && query.query_class() == DNSClass::IN && !in_zone && !transfer {
        return Outcome::Forward;
    }
    if query.query_class() != DNSClass::IN || !in_zone || transfer {
        return Outcome::Answer(reply.refuse(zone, metadata, Some(query), ResponseCode::Refused));
    }
    let qtype = query.query_type();
    let subject = subject(zone, qname);
    let client = subnet.as_ref().map_or(client, ClientSubnet::addr);
    let locality = steering.locality_of(client);
    let limit = reply.limit;
    let (answer, records) = answer(zone, &subject, qname, qtype, locality, now_ms, limit);
    let response = reply.send(metadata, Some(query), answer.rcode, true, &records);
    zone.count(qtype, &answer, response.1);
    Outcome::Answer(response.0)
}

/// Whether `qtype` is a meta-type (RFC 6895 §3.1), which a question cannot
/// ask for: OPT, TKEY, TSIG.
pub(crate) fn is_meta_type(qtype: RecordType) -> bool {
    matches!(u16::from(qtype), 41 | 249 | 250)
}

/// The client subnet option of a query, if it has one.
fn client_subnet(edns: &Edns) -> Option<ClientSubnet> {
    match edns.options().get(EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(subnet)) => Some(*subnet),
        _ => None,
    }
}

/// Every record the answer to `request` holds before any size limit, as
/// the general path builds them: the answers with the extras of each, and
/// the authority section. For checking what either path sent.
#[cfg(any(test, feature = "fuzzing"))]
pub(super) fn unlimited(
    zone: &Zone,
    request: &Message,
    limit: usize,
    now_ms: u64,
) -> (Vec<(Record, Vec<Record>)>, Vec<Record>) {
    let query = &request.queries[0];
    let subject = subject(zone, query.name());
    let (_, sections) = answer(
        zone,
        &subject,
        query.name(),
        query.query_type(),
        None,
        now_ms,
        limit,
    );
    let answers = sections
        .answers
        .iter()
        .map(|a| (a.record.clone(), a.extras.records()))
        .collect();
    (answers, sections.authorities)
}

/// What `qname` (in the zone) refers to.
fn subject(zone: &Zone, qname: &Name) -> Subject {
    // Count labels ourselves: `Name::num_labels` leaves out a leading `*`.
    let depth = qname.iter().count() - zone.settings.apex.iter().count();
    Subject::find(&zone.registry, Node::parse(depth, qname.iter()))
}

/// The rule book's answer to `qname`/`qtype` about `subject`, in a
/// response of at most `limit` bytes, as hickory records.
fn answer<'s>(
    zone: &Zone,
    subject: &'s Subject,
    qname: &Name,
    qtype: RecordType,
    locality: Option<&str>,
    now_ms: u64,
    limit: usize,
) -> (Answer<'s>, Sections<'s>) {
    let (registry, settings) = (&zone.registry, &zone.settings);
    let most = most_records(limit);
    let answer = subject.answer(registry, settings, qtype, locality, now_ms, most);
    let names = Names::of(qname, settings, subject.node());
    let sections = records(&answer, &names, settings, registry.version() as u32);
    (answer, sections)
}

/// The response OPT record for a request's: our payload size, version 0,
/// the DO bit copied (RFC 3225 §3), and the client subnet echoed (RFC 7871
/// §7.2.1) with the scope the answer holds for: the whole subnet when
/// localities steer answers, every client (0) when they do not.
fn response_edns(request: &Edns, subnet: Option<&ClientSubnet>, steering: &Steering) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(MAX_UDP_PAYLOAD);
    edns.set_dnssec_ok(request.flags().dnssec_ok);
    if let Some(subnet) = subnet {
        let source = subnet.source_prefix();
        let scope = if steering.localities.is_empty() {
            0
        } else {
            source
        };
        let echo = ClientSubnet::new(subnet.addr(), source, scope);
        edns.options_mut().insert(EdnsOption::Subnet(echo));
    }
    edns
}

/// Bytes `edns` takes as a record: the fixed part and each option.
fn opt_len(edns: &Edns) -> usize {
    let options: usize = edns
        .options()
        .options
        .iter()
        .map(|(_, option)| 4 + usize::from(option.len()))
        .sum();
    OPT_RECORD_LEN + options
}

/// How a response is sent: the rules it follows from its request.
struct Reply {
    request_flags: [u8; 2],
    limit: usize,
    edns: Option<Edns>,
}

impl Reply {
    /// A response with no records and `rcode`, not authoritative.
    fn refuse(
        &self,
        zone: &Zone,
        metadata: Metadata,
        query: Option<&Query>,
        rcode: ResponseCode,
    ) -> Vec<u8> {
        let qtype = query.map_or(RecordType::Unknown(0), Query::query_type);
        zone.metrics.count_query(qtype, rcode);
        let (bytes, truncated) = self.send(metadata, query, rcode, false, &Sections::default());
        if truncated {
            zone.metrics.dns_truncated.inc();
        }
        bytes
    }

    /// The response with `sections`, and whether it was truncated.
    fn send(
        &self,
        mut metadata: Metadata,
        query: Option<&Query>,
        rcode: ResponseCode,
        authoritative: bool,
        sections: &Sections<'_>,
    ) -> (Vec<u8>, bool) {
        metadata.response_code = rcode;
        let encoded =
            encode(metadata, query, sections, self.edns.as_ref(), self.limit).or_else(|error| {
                // Only reachable through a bug: answer SERVFAIL rather than nothing.
                tracing::error!(%error, "cannot encode DNS response");
                metadata.response_code = ResponseCode::ServFail;
                encode(
                    metadata,
                    query,
                    &Sections::default(),
                    self.edns.as_ref(),
                    self.limit,
                )
            });
        let Ok((mut bytes, truncated)) = encoded else {
            return (Vec::new(), false);
        };
        let rcode = metadata.response_code;
        let flags = response_flags(self.request_flags, authoritative, truncated, rcode);
        bytes[2..4].copy_from_slice(&flags);
        (bytes, truncated)
    }
}

/// The names an answer uses besides its instances', spelled as the question
/// spelled them: every name in the zone is written relative to the apex as
/// asked, as compression against the question would write it.
struct Names {
    qname: Name,
    /// The apex, as the question spelled it.
    apex: Name,
    /// `_<type>._tcp.<zone>` for a DNS-SD question (the question name, or
    /// its part from `_<type>` for a subtype).
    service: Name,
}

impl Names {
    fn of(qname: &Name, zone: &ZoneSettings, node: &Node) -> Names {
        let apex_labels = zone.apex.iter().count();
        let service = match node {
            Node::Service { tag: Some(_), .. } => qname.trim_to(apex_labels + 2),
            _ => qname.clone(),
        };
        Names {
            qname: qname.clone(),
            apex: qname.trim_to(apex_labels),
            service,
        }
    }

    /// The nameserver: its labels on the apex as asked when it is in the
    /// zone, else the whole name.
    fn nameserver(&self, zone: &ZoneSettings) -> Name {
        let nameserver = zone.nameserver.to_lowercase();
        let below = nameserver.iter().count() - zone.apex.iter().count();
        if zone.apex.zone_of(&nameserver) {
            let labels = nameserver.iter().take(below).chain(self.apex.iter());
            Name::from_labels(labels).unwrap_or(nameserver)
        } else {
            nameserver
        }
    }

    /// `<name>._<type>._tcp.<zone>`
    fn dnssd_instance(&self, instance: &Instance) -> Name {
        self.service
            .prepend_label(instance.spec.name.as_bytes())
            .expect("validated labels form a valid name")
    }
}

/// The sections of a response, before encoding.
#[derive(Default)]
struct Sections<'a> {
    answers: Vec<AnswerRecord<'a>>,
    authorities: Vec<Record>,
}

/// One answer record and the extras that go with it, built only if the
/// answer is sent: a full TCP answer of DNS-SD PTRs holds a few thousand
/// answers and none of their extras, and building them all cost most of
/// the answer's time.
struct AnswerRecord<'a> {
    record: Record,
    extras: Extras<'a>,
}

enum Extras<'a> {
    None,
    /// The SRV target's addresses, with this TTL.
    Glue(&'a Instance, u32),
    /// RFC 6763 §12.1: the DNS-SD instance's SRV and TXT (owner `name`) and
    /// its addresses, with this TTL.
    DnsSd(Name, &'a Instance, u32),
}

impl Extras<'_> {
    fn records(&self) -> Vec<Record> {
        let mut records = Vec::new();
        match self {
            Extras::None => {}
            Extras::Glue(instance, ttl) => glue(instance, *ttl, &mut records),
            Extras::DnsSd(name, instance, ttl) => {
                records.push(srv_record(name, instance, *ttl));
                records.push(Record::from_rdata(
                    name.clone(),
                    *ttl,
                    RData::TXT(instance.txt()),
                ));
                glue(instance, *ttl, &mut records);
            }
        }
        records
    }
}

/// hickory records for what the rule book decided.
fn records<'a>(
    answer: &Answer<'a>,
    names: &Names,
    zone: &ZoneSettings,
    serial: u32,
) -> Sections<'a> {
    let mut sections = Sections::default();
    let qname = &names.qname;
    let plain = |rdata: RData| AnswerRecord {
        record: Record::from_rdata(qname.clone(), zone.ttl, rdata),
        extras: Extras::None,
    };
    match &answer.records {
        Records::None => {
            let soa = soa_record(names, zone, zone.negative_ttl, serial);
            sections.authorities.push(soa);
        }
        Records::Soa => sections.answers.push(AnswerRecord {
            record: soa_record(names, zone, zone.ttl, serial),
            extras: Extras::None,
        }),
        Records::Ns => sections
            .answers
            .push(plain(RData::NS(NS(names.nameserver(zone))))),
        Records::Hinfo => sections.answers.push(plain(RData::HINFO(HINFO::new(
            RFC8482_CPU.to_string(),
            String::new(),
        )))),
        Records::Browse(types) => {
            for service_type in types {
                let target = names
                    .apex
                    .prepend_label("_tcp")
                    .and_then(|n| n.prepend_label(format!("_{service_type}").as_bytes()))
                    .expect("validated labels form a valid name");
                sections.answers.push(plain(RData::PTR(PTR(target))));
            }
        }
        Records::Addresses { ttl, addresses } => {
            for ip in addresses {
                let rdata = match ip {
                    IpAddr::V4(ip) => RData::A(A(*ip)),
                    IpAddr::V6(ip) => RData::AAAA(AAAA(*ip)),
                };
                let record = Record::from_rdata(qname.clone(), *ttl, rdata);
                sections.answers.push(AnswerRecord {
                    record,
                    extras: Extras::None,
                });
            }
        }
        Records::Reverse { ttl, members } => {
            for member in members {
                let target = RData::PTR(PTR(member.instance.srv_target()));
                let record = Record::from_rdata(qname.clone(), *ttl, target);
                sections.answers.push(AnswerRecord {
                    record,
                    extras: Extras::None,
                });
            }
        }
        Records::Instances {
            rrtype,
            ttl,
            members,
        } => {
            for member in members {
                let instance = member.instance;
                let (rdata, extras) = match rrtype {
                    RecordType::A | RecordType::AAAA => {
                        (address_rdata(instance).expect("filtered"), Extras::None)
                    }
                    RecordType::SRV => (srv_rdata(instance), Extras::Glue(instance, member.ttl)),
                    RecordType::TXT => (RData::TXT(instance.txt()), Extras::None),
                    _ => {
                        let name = names.dnssd_instance(instance);
                        let extras = Extras::DnsSd(name.clone(), instance, member.ttl);
                        (RData::PTR(PTR(name)), extras)
                    }
                };
                let record = Record::from_rdata(qname.clone(), *ttl, rdata);
                sections.answers.push(AnswerRecord { record, extras });
            }
        }
    }
    sections
}

fn address_rdata(instance: &Instance) -> Option<RData> {
    match &instance.spec.host {
        Host::Ip(std::net::IpAddr::V4(ip)) => Some(RData::A(A(*ip))),
        Host::Ip(std::net::IpAddr::V6(ip)) => Some(RData::AAAA(AAAA(*ip))),
        Host::Name(_) => None,
    }
}

fn srv_rdata(instance: &Instance) -> RData {
    let spec = &instance.spec;
    RData::SRV(SRV::new(
        spec.priority,
        spec.weight,
        spec.port,
        instance.srv_target(),
    ))
}

fn srv_record(owner: &Name, instance: &Instance, ttl: u32) -> Record {
    Record::from_rdata(owner.clone(), ttl, srv_rdata(instance))
}

/// The instance's address under its SRV target, when it has one.
fn glue(instance: &Instance, ttl: u32, out: &mut Vec<Record>) {
    if let Some(rdata) = address_rdata(instance) {
        out.push(Record::from_rdata(instance.srv_target(), ttl, rdata));
    }
}

/// The zone's SOA, owned by the apex as asked, with `ttl` as its record
/// TTL. The serial is the registry version, so it changes whenever the
/// data does.
fn soa_record(names: &Names, zone: &ZoneSettings, ttl: u32, serial: u32) -> Record {
    let hostmaster = names
        .apex
        .prepend_label("hostmaster")
        .unwrap_or_else(|_| names.apex.clone());
    let soa = SOA::new(
        names.nameserver(zone),
        hostmaster,
        serial,
        SOA_REFRESH as i32,
        SOA_RETRY as i32,
        SOA_EXPIRE as i32,
        zone.negative_ttl,
    );
    Record::from_rdata(names.apex.clone(), ttl, RData::SOA(soa))
}

/// Encodes a response of at most `limit` bytes, by the rule book's
/// truncation rule: answers in order while they fit (TC when one does
/// not), the authority section whole or TC, then the extras of the answers
/// sent, each only if it fits. Returns the bytes and whether TC is due.
fn encode(
    metadata: Metadata,
    query: Option<&Query>,
    sections: &Sections<'_>,
    edns: Option<&Edns>,
    limit: usize,
) -> Result<(Vec<u8>, bool), ProtoError> {
    let mut bytes = Vec::with_capacity(limit.min(4096));
    let mut encoder = BinEncoder::new(&mut bytes);
    let opt_len = edns.map_or(0, opt_len);
    encoder.set_max_size((limit - opt_len) as u16);
    let place = encoder.place::<Header>()?;
    let mut counts = HeaderCounts::default();
    if let Some(query) = query {
        query.emit(&mut encoder)?;
        counts.queries = 1;
    }
    let mut truncated = false;
    for answer in &sections.answers {
        if !emit_one(&mut encoder, &answer.record)? {
            truncated = true;
            break;
        }
        counts.answers += 1;
    }
    if !truncated {
        for record in &sections.authorities {
            if !emit_one(&mut encoder, record)? {
                truncated = true;
                break;
            }
            counts.authorities += 1;
        }
    }
    let sent = usize::from(counts.answers);
    for extra in sections.answers[..sent]
        .iter()
        .flat_map(|a| a.extras.records())
    {
        if emit_one(&mut encoder, &extra)? {
            counts.additionals += 1;
        }
    }
    if let Some(edns) = edns {
        encoder.set_max_size(limit as u16);
        let mut edns = edns.clone();
        edns.set_rcode_high(metadata.response_code.high());
        encoder.emit_all(iter::once(&Record::from(&edns)))?;
        counts.additionals += 1;
    }
    place.replace(&mut encoder, Header { metadata, counts })?;
    // A record that did not fit is rolled back by moving the encoder's
    // offset, but the bytes it had already written stay in the buffer: cut
    // them off, or they would be sent as garbage after the message.
    let end = encoder.offset();
    bytes.truncate(end);
    Ok((bytes, truncated))
}

/// Emits one record if it fits; false (and nothing written) when it does not.
fn emit_one(encoder: &mut BinEncoder<'_>, record: &Record) -> Result<bool, ProtoError> {
    match encoder.emit_all(iter::once(record)) {
        Ok(_) => Ok(true),
        Err(ProtoError::NotAllRecordsWritten { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}
