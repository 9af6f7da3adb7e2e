//! What a name in the zone means, and which records answer it.
//!
//! The zone is synthesised from the registry at answer time; nothing here is
//! cached, so a registration, expiry or health change shows in the very next
//! answer. The name space (labels left of the zone, lowercase):
//!
//! | labels                          | node                                   |
//! |---------------------------------|----------------------------------------|
//! | (none)                          | apex: SOA, NS                          |
//! | `type`                          | the type: A, AAAA, SRV                 |
//! | `_tag _sub type`                | the type filtered by tag               |
//! | `name type`                     | one instance: A, AAAA, SRV, TXT        |
//! | `_type _tcp`                    | DNS-SD service: PTR, SRV               |
//! | `_tag _sub _type _tcp`          | DNS-SD subtype: PTR, SRV               |
//! | `name _type _tcp`               | DNS-SD instance: SRV, TXT, A, AAAA     |
//! | `_services _dns-sd _udp`        | DNS-SD browse: PTR to each service     |
//! | `_tcp`, `_udp`, `_dns-sd _udp`, `_sub type` | empty non-terminals (NODATA) |
//!
//! Types, names and tags are DNS labels without `_`, so the underscore forms
//! can never collide with them.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, HINFO, NS, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::registry::{Members, Registry, TypeSet};
use crate::service::{Family, Host, Instance};

/// Fixed settings of the served zone.
#[derive(Debug, Clone)]
pub struct ZoneSettings {
    /// The zone apex, lowercase, fully qualified.
    pub apex: Name,
    /// Target of the apex NS record and SOA MNAME.
    pub nameserver: Name,
    /// Upper bound of record TTLs.
    pub ttl: u32,
    /// TTL of negative answers and SOA minimum.
    pub negative_ttl: u32,
}

/// The sections of an answer, before encoding.
#[derive(Debug, Default)]
pub struct Answer {
    pub rcode: ResponseCode,
    /// False outside the zone (REFUSED): the AA bit.
    pub authoritative: bool,
    /// The answer RRset, freshly shuffled, each record with its extras.
    pub answers: Vec<AnswerRecord>,
    /// The zone SOA for negative answers.
    pub authorities: Vec<Record>,
}

/// One answer record and the additional records that go with it (SRV glue,
/// DNS-SD extras). Extras are sent only for answers that fit, and are the
/// first thing dropped when space runs out.
#[derive(Debug)]
pub struct AnswerRecord {
    pub record: Record,
    pub extras: Extras,
}

impl From<Record> for AnswerRecord {
    fn from(record: Record) -> AnswerRecord {
        AnswerRecord {
            record,
            extras: Extras::None,
        }
    }
}

/// The additional records an answer record brings, built only for the
/// answers that fit: a full TCP answer of DNS-SD PTRs holds a few thousand
/// answers and none of their extras, and building them all cost most of
/// the answer's time.
#[derive(Debug)]
pub enum Extras {
    None,
    /// The SRV target's addresses, with this TTL.
    Glue(Arc<Instance>, u32),
    /// RFC 6763 §12.1: the DNS-SD instance's SRV and TXT (owner `name`) and
    /// its addresses, with this TTL, to save lookups.
    DnsSd(Name, Arc<Instance>, u32),
}

impl Extras {
    pub fn records(&self) -> Vec<Record> {
        let mut records = Vec::new();
        match self {
            Extras::None => {}
            Extras::Glue(instance, ttl) => glue(instance, *ttl, &mut records),
            Extras::DnsSd(name, instance, ttl) => {
                records.push(srv_record(name, instance, *ttl));
                records.push(txt_record(name, instance, *ttl));
                glue(instance, *ttl, &mut records);
            }
        }
        records
    }
}

/// What a query name refers to.
enum Node {
    Apex,
    /// `<type>` or `_<tag>._sub.<type>`: the serving instances, filtered.
    Type(Vec<Arc<Instance>>),
    /// `_<type>._tcp` or `_<tag>._sub._<type>._tcp`.
    Service(Vec<Arc<Instance>>),
    /// `<name>.<type>` or `<name>._<type>._tcp`.
    Instance(Arc<Instance>),
    /// `_services._dns-sd._udp`: the types that have a serving instance.
    Browse(Vec<String>),
    /// Exists only because names exist below it.
    EmptyNonTerminal,
    Missing,
}

/// A label copied to lowercase on the stack, so lookups need no allocation.
pub(super) struct Label {
    bytes: [u8; 63],
    len: usize,
}

impl Label {
    pub(super) fn new(raw: &[u8]) -> Label {
        let mut bytes = [0u8; 63];
        let len = raw.len().min(63);
        for (out, b) in bytes.iter_mut().zip(raw) {
            *out = b.to_ascii_lowercase();
        }
        Label { bytes, len }
    }

    /// The label as text; invalid UTF-8 can match nothing, so it is "\0"
    /// (which no type, name or tag can be).
    pub(super) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("\u{0}")
    }

    /// The part after a leading `_`, if any.
    pub(super) fn underscored(&self) -> Option<&str> {
        self.as_str().strip_prefix('_')
    }
}

/// Answers one question about a name inside the zone. `qname` is echoed as
/// the owner of answer records, in the case it was asked. `most` is more
/// records than the response can hold ([`most_records`]): larger sets are
/// answered from a sample of that many.
pub fn answer(
    registry: &Registry,
    zone: &ZoneSettings,
    qname: &Name,
    qtype: RecordType,
    now_ms: u64,
    most: usize,
) -> Answer {
    let mut answer = Answer {
        authoritative: true,
        ..Answer::default()
    };
    let node = resolve(registry, zone, qname, qtype, now_ms, most);
    if matches!(node, Node::Missing) {
        answer.rcode = ResponseCode::NXDomain;
        answer
            .authorities
            .push(soa_record(registry, zone, zone.negative_ttl));
        return answer;
    }
    if qtype == RecordType::ANY {
        // RFC 8482: one small synthesised record instead of everything.
        let hinfo = HINFO::new("RFC8482".to_string(), String::new());
        let record = Record::from_rdata(qname.clone(), zone.ttl, RData::HINFO(hinfo));
        answer.answers.push(record.into());
        return answer;
    }
    match (node, qtype) {
        (Node::Apex, RecordType::SOA) => {
            answer
                .answers
                .push(soa_record(registry, zone, zone.ttl).into());
        }
        (Node::Apex, RecordType::NS) => {
            let ns = RData::NS(NS(zone.nameserver.clone()));
            let record = Record::from_rdata(qname.clone(), zone.ttl, ns);
            answer.answers.push(record.into());
        }
        (Node::Type(instances), RecordType::A | RecordType::AAAA) => {
            address_records(qname, &instances, qtype, zone, now_ms, &mut answer.answers);
        }
        (Node::Type(instances) | Node::Service(instances), RecordType::SRV) => {
            srv_answer(qname, &instances, zone, now_ms, &mut answer);
        }
        (Node::Service(instances), RecordType::PTR) => {
            let ttl = rrset_ttl(&instances, zone, now_ms);
            for instance in instances {
                let name = dnssd_instance_name(&instance, zone);
                let own_ttl = instance_ttl(&instance, zone, now_ms);
                let record = Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(name.clone())));
                let extras = Extras::DnsSd(name, instance, own_ttl);
                answer.answers.push(AnswerRecord { record, extras });
            }
        }
        (Node::Instance(instance), RecordType::A | RecordType::AAAA) => {
            address_records(
                qname,
                std::slice::from_ref(&instance),
                qtype,
                zone,
                now_ms,
                &mut answer.answers,
            );
        }
        (Node::Instance(instance), RecordType::SRV) => {
            srv_answer(
                qname,
                std::slice::from_ref(&instance),
                zone,
                now_ms,
                &mut answer,
            );
        }
        (Node::Instance(instance), RecordType::TXT) => {
            let ttl = instance_ttl(&instance, zone, now_ms);
            answer
                .answers
                .push(txt_record(qname, &instance, ttl).into());
        }
        (Node::Browse(types), RecordType::PTR) => {
            for service_type in types {
                if let Ok(name) = service_name(&service_type, zone) {
                    let record = Record::from_rdata(qname.clone(), zone.ttl, RData::PTR(PTR(name)));
                    answer.answers.push(record.into());
                }
            }
        }
        _ => {}
    }
    if answer.answers.is_empty() {
        // NODATA: the name exists, the type does not (RFC 2308).
        answer
            .authorities
            .push(soa_record(registry, zone, zone.negative_ttl));
    } else {
        fastrand::shuffle(&mut answer.answers);
    }
    answer
}

/// Works out which node `qname` (inside the zone) refers to.
fn resolve(
    registry: &Registry,
    zone: &ZoneSettings,
    qname: &Name,
    qtype: RecordType,
    now_ms: u64,
    most: usize,
) -> Node {
    // Count labels ourselves: `Name::num_labels` leaves out a leading `*`,
    // which would make `*.<zone>` look like the apex.
    let depth = qname.iter().count() - zone.apex.iter().count();
    if depth > 4 {
        return Node::Missing;
    }
    let labels: Vec<Label> = qname.iter().take(depth).map(Label::new).collect();
    // A and AAAA questions about a type need only the instances of that
    // address family.
    let family = family_asked(u16::from(qtype));
    let serving_of = |service_type: &str, tag: Option<&str>, family: Option<Family>| {
        registry
            .type_set(service_type)
            .and_then(|set| serving(&set, tag, family, now_ms, most))
    };
    let exists = |service_type: &str| {
        registry
            .type_set(service_type)
            .is_some_and(|set| set.any_serving(now_ms))
    };
    let instance_node = |service_type: &str, name: &str| -> Node {
        registry
            .type_set(service_type)
            .and_then(|set| set.find(name).cloned())
            .filter(|instance| instance.is_serving(now_ms))
            .map_or(Node::Missing, Node::Instance)
    };
    let strs: Vec<&str> = labels.iter().map(Label::as_str).collect();
    match strs.as_slice() {
        [] => Node::Apex,
        ["_tcp"] | ["_udp"] | ["_dns-sd", "_udp"] => Node::EmptyNonTerminal,
        ["_services", "_dns-sd", "_udp"] => Node::Browse(registry.serving_types(now_ms, most)),
        [service_type] if !service_type.starts_with('_') => {
            serving_of(service_type, None, family).map_or(Node::Missing, Node::Type)
        }
        ["_sub", service_type] if !service_type.starts_with('_') => {
            if exists(service_type) {
                Node::EmptyNonTerminal
            } else {
                Node::Missing
            }
        }
        [name, service_type] if !name.starts_with('_') && !service_type.starts_with('_') => {
            instance_node(service_type, name)
        }
        [_, "_tcp"] => match labels[0].underscored() {
            Some(service_type) => {
                serving_of(service_type, None, None).map_or(Node::Missing, Node::Service)
            }
            None => Node::Missing,
        },
        [_, "_sub", service_type] if !service_type.starts_with('_') => {
            match labels[0].underscored() {
                Some(tag) => {
                    serving_of(service_type, Some(tag), family).map_or(Node::Missing, Node::Type)
                }
                None => Node::Missing,
            }
        }
        ["_sub", _, "_tcp"] => match labels[1].underscored() {
            Some(service_type) if exists(service_type) => Node::EmptyNonTerminal,
            _ => Node::Missing,
        },
        [name, _, "_tcp"] if !name.starts_with('_') => match labels[1].underscored() {
            Some(service_type) => instance_node(service_type, name),
            None => Node::Missing,
        },
        [_, "_sub", _, "_tcp"] => match (labels[0].underscored(), labels[2].underscored()) {
            (Some(tag), Some(service_type)) => {
                serving_of(service_type, Some(tag), None).map_or(Node::Missing, Node::Service)
            }
            _ => Node::Missing,
        },
        _ => Node::Missing,
    }
}

/// A type with more instances than this is answered from a sample: a run
/// from a random instance, as many as a message could hold, instead of
/// every instance per query (the answer is truncated with TC either way).
pub(super) const LARGE_SET: usize = 256;
/// More records than a message of `limit` bytes holds: 16 bytes is the size
/// of the smallest answer record (an A record with a compressed owner).
pub fn most_records(limit: usize) -> usize {
    limit / 16 + 1
}

/// The address family an A or AAAA question asks for.
pub(super) fn family_asked(rrtype: u16) -> Option<Family> {
    match RecordType::from(rrtype) {
        RecordType::A => Some(Family::V4),
        RecordType::AAAA => Some(Family::V6),
        _ => None,
    }
}

/// Where both answer paths look for the answers to a question about a type:
/// the instances carrying `tag` (when asked) with an address of `family`
/// (A, AAAA), read from the smallest index that holds them all (not
/// critical, the tag's, the family's), the other tests made per instance.
pub(super) struct Candidates<'a> {
    /// The index read.
    read: &'a Members,
    /// Where the name's existence is decided: the tag's index, or the
    /// instances not critical.
    scope: &'a Members,
    /// The tag, when `read` is not its own index and must be tested.
    tag: Option<&'a str>,
    /// The tag, when `scope` is not its own index.
    scope_tag: Option<&'a str>,
    family: Option<Family>,
}

impl<'a> Candidates<'a> {
    /// `None` when no instance carries `tag`: the name does not exist.
    pub(super) fn of(
        set: &'a TypeSet,
        tag: Option<&'a str>,
        family: Option<Family>,
    ) -> Option<Self> {
        let tagged = match tag {
            Some(tag) => Some(set.tagged(tag)?),
            None => None,
        };
        let smallest = |other: Option<&'a Members>| {
            other
                .filter(|other| other.len() < set.healthy().len())
                .unwrap_or(set.healthy())
        };
        let by_family = family.map(|family| set.with_address(family));
        let scope = smallest(tagged);
        let read = match by_family {
            Some(by_family) if by_family.len() < scope.len() => by_family,
            _ => scope,
        };
        // Reading the tag's own index, every instance has the tag.
        let untested = |members: &Members| tagged.is_some_and(|t| std::ptr::eq(t, members));
        Some(Candidates {
            read,
            scope,
            tag: tag.filter(|_| !untested(read)),
            scope_tag: tag.filter(|_| !untested(scope)),
            family,
        })
    }

    /// How many answers a response needs at most, when it can hold fewer
    /// than `most` records: every one of a small set (the answer is
    /// shuffled), or `most` from a large one ([`Candidates::run`] starts it
    /// at random, so every instance gets its turn).
    pub(super) fn wanted(&self, most: usize) -> usize {
        if self.read.len() > LARGE_SET {
            most
        } else {
            self.read.len()
        }
    }

    /// The candidates with the tag and of the family, serving or not, each
    /// once: in name order for a small set, from a random start (wrapping)
    /// for one of more than [`LARGE_SET`].
    pub(super) fn run(&self) -> impl Iterator<Item = &'a Arc<Instance>> + use<'a> {
        let start = if self.read.len() > LARGE_SET {
            fastrand::usize(..self.read.len())
        } else {
            0
        };
        let (tag, family) = (self.tag, self.family);
        self.read.iter_from(start).filter(move |i| {
            tag.is_none_or(|t| i.has_tag(t))
                && family.is_none_or(|f| i.spec.host.family() == Some(f))
        })
    }

    /// Whether the name exists when no candidate serves: with a family
    /// asked, an instance of the other one may serve (NODATA, not
    /// NXDOMAIN). Without, the run already read them all.
    pub(super) fn exist_beyond_run(&self, now_ms: u64) -> bool {
        let tag = self.scope_tag;
        self.family.is_some()
            && self
                .scope
                .iter()
                .any(|i| i.is_serving(now_ms) && tag.is_none_or(|t| i.has_tag(t)))
    }
}

/// The serving instances of a type that carry `tag` and have an address of
/// `family` (each only when given): `None` when the name does not exist
/// (no instance with `tag` serves), else the instances, possibly none; at
/// most `most` of a large set.
fn serving(
    set: &TypeSet,
    tag: Option<&str>,
    family: Option<Family>,
    now_ms: u64,
    most: usize,
) -> Option<Vec<Arc<Instance>>> {
    let candidates = Candidates::of(set, tag, family)?;
    let found: Vec<_> = candidates
        .run()
        .filter(|i| i.is_serving(now_ms))
        .take(candidates.wanted(most))
        .cloned()
        .collect();
    (!found.is_empty() || candidates.exist_beyond_run(now_ms)).then_some(found)
}

/// An instance's record TTL: the zone TTL, capped by its remaining lifetime.
fn instance_ttl(instance: &Instance, zone: &ZoneSettings, now_ms: u64) -> u32 {
    instance.remaining_secs(now_ms).min(zone.ttl)
}

/// One TTL for a whole RRset (RFC 2181 §5.2): the smallest of its members'.
fn rrset_ttl(instances: &[Arc<Instance>], zone: &ZoneSettings, now_ms: u64) -> u32 {
    instances
        .iter()
        .map(|i| instance_ttl(i, zone, now_ms))
        .min()
        .unwrap_or(zone.ttl)
}

fn address_rdata(instance: &Instance, qtype: RecordType) -> Option<RData> {
    match (&instance.spec.host, qtype) {
        (Host::Ip(IpAddr::V4(ip)), RecordType::A) => Some(RData::A(A(*ip))),
        (Host::Ip(IpAddr::V6(ip)), RecordType::AAAA) => Some(RData::AAAA(AAAA(*ip))),
        _ => None,
    }
}

fn address_records(
    owner: &Name,
    instances: &[Arc<Instance>],
    qtype: RecordType,
    zone: &ZoneSettings,
    now_ms: u64,
    out: &mut Vec<AnswerRecord>,
) {
    let with_address: Vec<&Arc<Instance>> = instances
        .iter()
        .filter(|i| address_rdata(i, qtype).is_some())
        .collect();
    let ttl = with_address
        .iter()
        .map(|i| instance_ttl(i, zone, now_ms))
        .min()
        .unwrap_or(zone.ttl);
    for instance in with_address {
        if let Some(rdata) = address_rdata(instance, qtype) {
            out.push(Record::from_rdata(owner.clone(), ttl, rdata).into());
        }
    }
}

fn srv_record(owner: &Name, instance: &Instance, ttl: u32) -> Record {
    let spec = &instance.spec;
    let srv = SRV::new(spec.priority, spec.weight, spec.port, instance.srv_target());
    Record::from_rdata(owner.clone(), ttl, RData::SRV(srv))
}

fn txt_record(owner: &Name, instance: &Instance, ttl: u32) -> Record {
    Record::from_rdata(owner.clone(), ttl, RData::TXT(instance.txt()))
}

/// The instance's address under its SRV target, when it has one.
fn glue(instance: &Instance, ttl: u32, out: &mut Vec<Record>) {
    for qtype in [RecordType::A, RecordType::AAAA] {
        if let Some(rdata) = address_rdata(instance, qtype) {
            out.push(Record::from_rdata(instance.srv_target(), ttl, rdata));
        }
    }
}

/// SRV records for `instances`, with their addresses as additional glue.
fn srv_answer(
    owner: &Name,
    instances: &[Arc<Instance>],
    zone: &ZoneSettings,
    now_ms: u64,
    answer: &mut Answer,
) {
    let ttl = rrset_ttl(instances, zone, now_ms);
    for instance in instances {
        let extras = Extras::Glue(instance.clone(), instance_ttl(instance, zone, now_ms));
        let record = srv_record(owner, instance, ttl);
        answer.answers.push(AnswerRecord { record, extras });
    }
}

/// `_<type>._tcp.<zone>`
fn service_name(
    service_type: &str,
    zone: &ZoneSettings,
) -> Result<Name, hickory_proto::ProtoError> {
    Name::from_labels([format!("_{service_type}").as_bytes(), b"_tcp"])?.append_domain(&zone.apex)
}

/// `<name>._<type>._tcp.<zone>`
fn dnssd_instance_name(instance: &Instance, zone: &ZoneSettings) -> Name {
    service_name(&instance.spec.service_type, zone)
        .and_then(|service| service.prepend_label(instance.spec.name.as_bytes()))
        .expect("validated labels form a valid name")
}

/// The zone's SOA, with `ttl` as its record TTL. The serial is the registry
/// version, so it changes whenever the data does.
pub fn soa_record(registry: &Registry, zone: &ZoneSettings, ttl: u32) -> Record {
    let hostmaster = zone
        .apex
        .prepend_label("hostmaster")
        .unwrap_or_else(|_| zone.apex.clone());
    let soa = SOA::new(
        zone.nameserver.clone(),
        hostmaster,
        registry.version() as u32,
        3600,
        600,
        86400,
        zone.negative_ttl,
    );
    Record::from_rdata(zone.apex.clone(), ttl, RData::SOA(soa))
}
