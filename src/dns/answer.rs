//! The rule book: which records answer a question, decided once for both
//! answer paths.
//!
//! A question's name is read by [`Node::parse`]; [`Subject::find`] takes what
//! it refers to from the registry (a type's snapshot, nothing more), and
//! [`Subject::answer`] decides everything an answer holds: the rcode, the
//! records and their order (sampled and shuffled here, so both encoders
//! write the same answer), their TTLs and which extras go with them. The
//! encoders ([`super::fast`] straight to wire, [`super::message`] through
//! hickory) only write what it decided, within the size this module sets
//! ([`response_limit`]), by the same truncation rule: answers in order while
//! they fit (TC when one does not), the SOA of a negative answer whole or
//! TC, then the extras of the answers sent, each only if it fits, never TC.
//!
//! Nothing is cached between questions: serving is decided against `now` at
//! answer time, so a registration, expiry or health change shows in the very
//! next answer.

use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};

use super::node::Node;
use crate::metrics::Metrics;
use crate::registry::{Members, Registry, TypeSet};
use crate::service::{Family, Instance};

/// UDP payload limit without EDNS (RFC 1035).
pub(crate) const CLASSIC_UDP_LIMIT: usize = 512;
/// Largest UDP payload we send, whatever the client offers (DNS flag day
/// 2020); also the payload size our OPT record offers.
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;
/// Largest DNS message over TCP.
pub(crate) const TCP_LIMIT: usize = 65535;
/// Bytes an OPT record without options takes; reserved in every EDNS answer.
pub(crate) const OPT_RECORD_LEN: usize = 11;
/// The SOA timers (RFC 1912 §2.2 values; nobody transfers this zone).
pub(crate) const SOA_REFRESH: u32 = 3600;
pub(crate) const SOA_RETRY: u32 = 600;
pub(crate) const SOA_EXPIRE: u32 = 86400;
/// The text of the RFC 8482 answer to ANY: HINFO "RFC8482" "".
pub(crate) const RFC8482_CPU: &str = "RFC8482";

/// A set with more candidates than this is answered from a sample: a run
/// from a random candidate, as many as a message could hold, instead of
/// every candidate per query (the answer is truncated with TC either way).
pub(crate) const LARGE_SET: usize = 256;

/// How the query arrived, which bounds the answer's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

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

/// The zone being answered for: its settings, the registry its names come
/// from, and the metrics every answer is counted in. Both paths answer from
/// it.
pub(crate) struct Zone {
    pub settings: ZoneSettings,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
}

/// The largest response for a query that came over `transport` with an
/// OPT record offering `edns_payload` (none: no EDNS): 512 without EDNS,
/// the offer clamped to 512..=1232 with it, 64 KiB over TCP.
pub(crate) fn response_limit(transport: Transport, edns_payload: Option<u16>) -> usize {
    match (transport, edns_payload) {
        (Transport::Tcp, _) => TCP_LIMIT,
        (Transport::Udp, None) => CLASSIC_UDP_LIMIT,
        (Transport::Udp, Some(payload)) => usize::from(payload.clamp(512, MAX_UDP_PAYLOAD)),
    }
}

/// More records than a message of `limit` bytes holds: 16 bytes is the size
/// of the smallest answer record (an A record with a compressed owner). No
/// question collects more candidates than this.
pub(crate) fn most_records(limit: usize) -> usize {
    limit / 16 + 1
}

/// The response header's flags (bytes 2 and 3) for a request whose flags
/// were `request`: QR set, the opcode and RD as asked, AA when
/// `authoritative`, TC when `truncated`, RA, Z and AD clear, CD as asked,
/// and the low bits of `rcode`.
pub(crate) fn response_flags(
    request: [u8; 2],
    authoritative: bool,
    truncated: bool,
    rcode: ResponseCode,
) -> [u8; 2] {
    let opcode_and_rd = request[0] & 0x79;
    let aa = if authoritative { 0x04 } else { 0 };
    let tc = if truncated { 0x02 } else { 0 };
    [
        0x80 | opcode_and_rd | aa | tc,
        (request[1] & 0x10) | rcode.low(),
    ]
}

/// An instance's record TTL: the zone TTL, capped by its remaining lifetime.
pub(crate) fn instance_ttl(instance: &Instance, zone: &ZoneSettings, now_ms: u64) -> u32 {
    instance.remaining_secs(now_ms).min(zone.ttl)
}

/// What a question's name refers to, taken from the registry: held while
/// the answer is written, so the answer can borrow its instances.
pub(crate) struct Subject {
    node: Node,
    /// The snapshot of the type the node names, if it exists.
    set: Option<Arc<TypeSet>>,
}

/// The answer to one question, before encoding.
pub(crate) struct Answer<'a> {
    /// `NoError` or `NXDomain`.
    pub rcode: ResponseCode,
    pub records: Records<'a>,
}

/// The answer section. Anything but [`Records::None`] holds at least one
/// record; with `None` the zone's SOA goes in the authority section.
pub(crate) enum Records<'a> {
    /// NODATA or NXDOMAIN (see [`Answer::rcode`]).
    None,
    /// The apex SOA.
    Soa,
    /// The apex NS.
    Ns,
    /// RFC 8482: one HINFO instead of every record, for ANY.
    Hinfo,
    /// DNS-SD browse: a PTR to `_<type>._tcp.<zone>` for each type.
    Browse(Vec<String>),
    /// One RRset of `rrtype` (A, AAAA, SRV, TXT or PTR), one record per
    /// member, in the order sent. SRV members bring their addresses as
    /// extras, PTR members their SRV, TXT and addresses (RFC 6763 §12.1).
    Instances {
        rrtype: RecordType,
        /// One TTL for the RRset (RFC 2181 §5.2): the smallest member's.
        ttl: u32,
        members: Vec<Member<'a>>,
    },
}

/// One instance in an answer, with its own TTL (for its extras).
pub(crate) struct Member<'a> {
    pub instance: &'a Instance,
    pub ttl: u32,
}

impl Subject {
    /// Looks up what `node` refers to.
    pub(crate) fn find(registry: &Registry, node: Node) -> Subject {
        let set = match &node {
            Node::Type { service_type, .. }
            | Node::Service { service_type, .. }
            | Node::Instance { service_type, .. }
            | Node::SubtypesOf { service_type } => registry.type_set(service_type.as_str()),
            _ => None,
        };
        Subject { node, set }
    }

    /// The node it was found for.
    pub(crate) fn node(&self) -> &Node {
        &self.node
    }

    /// What answers `qtype` about this subject at `now_ms`, collecting no
    /// more than `most` records (see [`most_records`]).
    pub(crate) fn answer(
        &self,
        registry: &Registry,
        zone: &ZoneSettings,
        qtype: RecordType,
        now_ms: u64,
        most: usize,
    ) -> Answer<'_> {
        let nodata = Answer {
            rcode: ResponseCode::NoError,
            records: Records::None,
        };
        let nxdomain = Answer {
            rcode: ResponseCode::NXDomain,
            records: Records::None,
        };
        let exists = match (&self.node, &self.set) {
            (Node::Missing, _) => false,
            (Node::Apex | Node::EmptyNonTerminal | Node::Browse, _) => true,
            (Node::SubtypesOf { .. }, set) => set.as_ref().is_some_and(|s| s.any_serving(now_ms)),
            (_, None) => false,
            (Node::Type { tag, .. } | Node::Service { tag, .. }, Some(set)) => {
                let tag = tag.as_ref().map(|t| t.as_str());
                // The records asked for, if the node has them.
                let rrtype = match self.node {
                    Node::Type { .. } => {
                        matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::SRV)
                    }
                    _ => matches!(qtype, RecordType::PTR | RecordType::SRV),
                }
                .then_some(qtype);
                // A DNS-SD service has no addresses: its candidates are
                // every instance, whatever the question.
                let family = match self.node {
                    Node::Type { .. } => family_asked(qtype),
                    _ => None,
                };
                let Some(candidates) = Candidates::of(set, tag, family) else {
                    return nxdomain; // no instance carries the tag
                };
                let wanted = candidates.wanted(most);
                let (members, found) = serving(candidates.run(), wanted, rrtype, zone, now_ms);
                if !found && !candidates.exist_beyond_run(now_ms) {
                    return nxdomain;
                }
                if let Some(rrtype) = rrtype {
                    return Answer::of_members(rrtype, members);
                }
                true
            }
            (Node::Instance { name, .. }, Some(set)) => {
                let Some(instance) = set.find(name.as_str()) else {
                    return nxdomain;
                };
                let rrtype = matches!(
                    qtype,
                    RecordType::A | RecordType::AAAA | RecordType::SRV | RecordType::TXT
                )
                .then_some(qtype);
                let (members, found) = serving(std::iter::once(instance), 1, rrtype, zone, now_ms);
                if !found {
                    return nxdomain;
                }
                if let Some(rrtype) = rrtype {
                    return Answer::of_members(rrtype, members);
                }
                true
            }
        };
        if !exists {
            return nxdomain;
        }
        let records = match (&self.node, qtype) {
            (_, RecordType::ANY) => Records::Hinfo,
            (Node::Apex, RecordType::SOA) => Records::Soa,
            (Node::Apex, RecordType::NS) => Records::Ns,
            (Node::Browse, RecordType::PTR) => {
                // A 63-byte type has no DNS-SD name: `_<type>` is too long
                // for a label.
                let mut types = registry.serving_types(now_ms, most);
                types.retain(|service_type| service_type.len() < 63);
                if types.is_empty() {
                    return nodata;
                }
                fastrand::shuffle(&mut types);
                Records::Browse(types)
            }
            _ => return nodata,
        };
        Answer {
            rcode: ResponseCode::NoError,
            records,
        }
    }
}

impl<'a> Answer<'a> {
    /// The RRset of `members` (NODATA when there are none), shuffled.
    fn of_members(rrtype: RecordType, mut members: Vec<Member<'a>>) -> Answer<'a> {
        let records = match members.iter().map(|m| m.ttl).min() {
            None => Records::None,
            Some(ttl) => {
                fastrand::shuffle(&mut members);
                Records::Instances {
                    rrtype,
                    ttl,
                    members,
                }
            }
        };
        Answer {
            rcode: ResponseCode::NoError,
            records,
        }
    }
}

/// The serving instances among `candidates` that have a record of `rrtype`
/// (none when it is `None`; at most `capacity`), and whether any instance
/// serves at all (the name exists as long as one does).
fn serving<'a>(
    candidates: impl Iterator<Item = &'a Arc<Instance>>,
    capacity: usize,
    rrtype: Option<RecordType>,
    zone: &ZoneSettings,
    now_ms: u64,
) -> (Vec<Member<'a>>, bool) {
    let mut members = Vec::with_capacity(capacity.min(LARGE_SET));
    let mut found = false;
    for instance in candidates {
        if members.len() == capacity {
            break;
        }
        if !instance.is_serving(now_ms) {
            continue;
        }
        found = true;
        // With no record type to collect, one serving instance settles it:
        // a NODATA question on a huge type must not visit every instance.
        let Some(rrtype) = rrtype else { break };
        let has_record = match family_asked(rrtype) {
            Some(family) => instance.spec.host.family() == Some(family),
            None => true,
        };
        if has_record {
            members.push(Member {
                instance,
                ttl: instance_ttl(instance, zone, now_ms),
            });
        }
    }
    (members, found)
}

/// The address family an A or AAAA question asks for.
pub(crate) fn family_asked(rrtype: RecordType) -> Option<Family> {
    match rrtype {
        RecordType::A => Some(Family::V4),
        RecordType::AAAA => Some(Family::V6),
        _ => None,
    }
}

/// Where the answers to a question about a type are looked for: the
/// instances carrying `tag` (when asked) with an address of `family` (A,
/// AAAA), read from the smallest index that holds them all (not critical,
/// the tag's, the family's), the other tests made per instance.
struct Candidates<'a> {
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
    fn of(set: &'a TypeSet, tag: Option<&'a str>, family: Option<Family>) -> Option<Self> {
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
    fn wanted(&self, most: usize) -> usize {
        if self.read.len() > LARGE_SET {
            most
        } else {
            self.read.len()
        }
    }

    /// The candidates with the tag and of the family, serving or not, each
    /// once: in name order for a small set, from a random start (wrapping)
    /// for one of more than [`LARGE_SET`].
    fn run(&self) -> impl Iterator<Item = &'a Arc<Instance>> + use<'a> {
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
    fn exist_beyond_run(&self, now_ms: u64) -> bool {
        let tag = self.scope_tag;
        self.family.is_some()
            && self
                .scope
                .iter()
                .any(|i| i.is_serving(now_ms) && tag.is_none_or(|t| i.has_tag(t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_limits() {
        use Transport::{Tcp, Udp};
        assert_eq!(response_limit(Udp, None), 512);
        assert_eq!(response_limit(Udp, Some(0)), 512);
        assert_eq!(response_limit(Udp, Some(1000)), 1000);
        assert_eq!(response_limit(Udp, Some(4096)), 1232);
        assert_eq!(response_limit(Tcp, None), 65535);
        assert_eq!(response_limit(Tcp, Some(512)), 65535);
    }

    #[test]
    fn response_flags_copy_what_the_rfcs_say() {
        // Request: opcode QUERY, RD, AD, CD, and a stray Z bit.
        let request = [0x01, 0x70];
        assert_eq!(
            response_flags(request, true, false, ResponseCode::NXDomain),
            [0x85, 0x13]
        );
        assert_eq!(
            response_flags([0x00, 0x00], false, true, ResponseCode::Refused),
            [0x82, 0x05]
        );
    }
}
