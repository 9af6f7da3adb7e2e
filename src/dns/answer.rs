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

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};

use super::node::{Label, Node};
use crate::metrics::Metrics;
use crate::registry::{Registry, TypeSet};
use crate::select::{self, Ask, Order, Steering};
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
    /// The nameserver's addresses, answered for its name when it is in the
    /// zone.
    pub nameserver_addresses: Vec<IpAddr>,
    /// Upper bound of record TTLs.
    pub ttl: u32,
    /// TTL of negative answers and SOA minimum.
    pub negative_ttl: u32,
    /// Failover, weights, locality and panic mode.
    pub steering: Steering,
}

/// The zone being answered for: its settings, the registry its names come
/// from, and the metrics every answer is counted in. Both paths answer from
/// it.
pub(crate) struct Zone {
    pub settings: ZoneSettings,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
}

impl Zone {
    /// Counts an answered question in the metrics.
    pub(crate) fn count(&self, qtype: RecordType, answer: &Answer<'_>, truncated: bool) {
        self.metrics.count_query(qtype, answer.rcode);
        if truncated {
            self.metrics.dns_truncated.inc();
        }
        if answer.panic {
            self.metrics.dns_panic_answers.inc();
        }
    }
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
    /// Answered from a type in panic mode (critical instances included).
    pub panic: bool,
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
    /// A reverse name's PTRs: to each member's `<name>.<type>.<zone>`.
    Reverse { ttl: u32, members: Vec<Member<'a>> },
    /// The nameserver's own addresses (A or AAAA, as asked), when its name
    /// is in the zone.
    Addresses { ttl: u32, addresses: Vec<IpAddr> },
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

    /// What answers `qtype` about this subject at `now_ms`, for a client
    /// in `locality` (when known), collecting no more than `most` records
    /// (see [`most_records`]).
    pub(crate) fn answer(
        &self,
        registry: &Registry,
        zone: &ZoneSettings,
        qtype: RecordType,
        locality: Option<&str>,
        now_ms: u64,
        most: usize,
    ) -> Answer<'_> {
        let negative = |rcode| Answer {
            rcode,
            records: Records::None,
            panic: false,
        };
        // A name nothing is registered under may be the nameserver's own.
        let nxdomain = || {
            self.nameserver(zone, qtype)
                .unwrap_or_else(|| negative(ResponseCode::NXDomain))
        };
        let steering = &zone.steering;
        let exists = match (&self.node, &self.set) {
            (Node::Missing, _) => false,
            (Node::Apex | Node::EmptyNonTerminal | Node::Browse, _) => true,
            (Node::SubtypesOf { .. }, set) => set
                .as_ref()
                .is_some_and(|set| select::exists(set, None, steering, now_ms)),
            (_, None) => false,
            (Node::Type { tag, .. }, Some(set)) => {
                let kind = Kind::Type { locality };
                match of_type(set, kind, tag.as_ref(), qtype, zone, now_ms, most) {
                    Ok(answer) => return answer,
                    Err(exists) => exists,
                }
            }
            (Node::Service { tag, .. }, Some(set)) => {
                match of_type(set, Kind::Service, tag.as_ref(), qtype, zone, now_ms, most) {
                    Ok(answer) => return answer,
                    Err(exists) => exists,
                }
            }
            (Node::Instance { name, .. }, Some(set)) => {
                let Some(instance) = set.find(name.as_str()) else {
                    return nxdomain();
                };
                if !instance.is_serving(now_ms) {
                    return nxdomain();
                }
                let has = match qtype {
                    RecordType::A | RecordType::AAAA => {
                        family_asked(qtype) == instance.spec.host.family()
                    }
                    RecordType::SRV | RecordType::TXT => true,
                    _ => false,
                };
                if has {
                    let member = Member {
                        instance,
                        ttl: instance_ttl(instance, zone, now_ms),
                    };
                    return Answer::of_members(qtype, vec![member], false);
                }
                true
            }
        };
        if !exists {
            return nxdomain();
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
                    return negative(ResponseCode::NoError);
                }
                fastrand::shuffle(&mut types);
                Records::Browse(types)
            }
            _ => return negative(ResponseCode::NoError),
        };
        Answer {
            rcode: ResponseCode::NoError,
            records,
            panic: false,
        }
    }
}

/// What a name about a type's instances is.
#[derive(Clone, Copy)]
enum Kind<'a> {
    /// `<type>` or a subtype: addresses and SRV, steered (for a client in
    /// `locality`, when known).
    Type { locality: Option<&'a str> },
    /// A DNS-SD service or subtype: PTR to every instance, and SRV; no
    /// failover, no locality.
    Service,
}

/// The instances that serve at the address a reverse name (`…in-addr.arpa`,
/// `…ip6.arpa`) spells out, held while their answer is written.
pub(crate) struct ReverseSubject {
    instances: Vec<Arc<Instance>>,
}

impl ReverseSubject {
    /// The instances at the address `qname` names, if it is a reverse name
    /// of one whole address; `None` otherwise.
    pub(crate) fn find(registry: &Registry, qname: &Name) -> Option<ReverseSubject> {
        let network = qname.parse_arpa_name().ok()?;
        if network.prefix_len() != network.max_prefix_len() {
            return None; // a network, not an address
        }
        let instances = registry.with_ip(network.addr());
        Some(ReverseSubject { instances })
    }

    /// PTRs to the instances serving at the address at `now_ms`: one each,
    /// shuffled; `None` when none serves there. signpost answers reverse
    /// names only for what it knows: any other is not its to deny.
    pub(crate) fn answer(&self, zone: &ZoneSettings, now_ms: u64) -> Option<Answer<'_>> {
        let mut members: Vec<Member<'_>> = self
            .instances
            .iter()
            .filter(|instance| instance.is_serving(now_ms))
            .map(|instance| Member {
                instance,
                ttl: instance_ttl(instance, zone, now_ms),
            })
            .collect();
        let ttl = members.iter().map(|m| m.ttl).min()?;
        fastrand::shuffle(&mut members);
        Some(Answer {
            rcode: ResponseCode::NoError,
            records: Records::Reverse { ttl, members },
            panic: false,
        })
    }
}

/// The answer of `qtype` about the instances of `set` with `tag`; or,
/// when `qtype` is not a record such a name has, whether the name exists.
fn of_type<'s>(
    set: &'s TypeSet,
    kind: Kind<'_>,
    tag: Option<&Label>,
    qtype: RecordType,
    zone: &ZoneSettings,
    now_ms: u64,
    most: usize,
) -> Result<Answer<'s>, bool> {
    let tag = tag.map(Label::as_str);
    let (order, locality) = match (kind, qtype) {
        (Kind::Type { locality }, RecordType::A | RecordType::AAAA) => (Order::Failover, locality),
        (Kind::Type { locality }, RecordType::SRV) => (Order::Priorities, locality),
        (Kind::Service, RecordType::SRV) => (Order::Priorities, None),
        (Kind::Service, RecordType::PTR) => (Order::Shuffled, None),
        _ => return Err(select::exists(set, tag, &zone.steering, now_ms)),
    };
    let family = match kind {
        Kind::Type { .. } => family_asked(qtype),
        Kind::Service => None,
    };
    let ask = Ask {
        tag,
        family,
        order,
        locality,
    };
    let selection = select::select(set, &ask, &zone.steering, now_ms, most);
    if !selection.exists {
        return Ok(Answer {
            rcode: ResponseCode::NXDomain,
            records: Records::None,
            panic: selection.panic,
        });
    }
    let members = selection
        .instances
        .into_iter()
        .map(|instance| Member {
            instance,
            ttl: instance_ttl(instance, zone, now_ms),
        })
        .collect();
    Ok(Answer::of_members(qtype, members, selection.panic))
}

impl Subject {
    /// The answer about the nameserver's own name (`ns.<zone>` by default),
    /// when `node` is it: its addresses for A and AAAA, NODATA for the
    /// rest. `None` for any other name. Asked only when nothing is
    /// registered under the name: a type or instance that would take it
    /// over cannot be registered.
    fn nameserver(&self, zone: &ZoneSettings, qtype: RecordType) -> Option<Answer<'static>> {
        let nameserver = &zone.nameserver;
        if !zone.apex.zone_of(nameserver) {
            return None;
        }
        let below = nameserver.iter().count() - zone.apex.iter().count();
        let mut labels = nameserver.iter();
        let is = |label: Option<&[u8]>, text: &str| label == Some(text.as_bytes());
        let named = match (&self.node, below) {
            (
                Node::Type {
                    service_type,
                    tag: None,
                },
                1,
            ) => is(labels.next(), service_type.as_str()),
            (Node::Instance { service_type, name }, 2) => {
                is(labels.next(), name.as_str()) && is(labels.next(), service_type.as_str())
            }
            _ => false,
        };
        if !named {
            return None;
        }
        let records = match qtype {
            RecordType::ANY => Records::Hinfo,
            RecordType::A | RecordType::AAAA => {
                let family = family_asked(qtype);
                let addresses: Vec<IpAddr> = zone
                    .nameserver_addresses
                    .iter()
                    .filter(|ip| crate::validate::Host::Ip(**ip).family() == family)
                    .copied()
                    .collect();
                if addresses.is_empty() {
                    Records::None
                } else {
                    Records::Addresses {
                        ttl: zone.ttl,
                        addresses,
                    }
                }
            }
            _ => Records::None,
        };
        Some(Answer {
            rcode: ResponseCode::NoError,
            records,
            panic: false,
        })
    }
}

impl<'a> Answer<'a> {
    /// The RRset of `members`, in their order (NODATA when there are none).
    fn of_members(rrtype: RecordType, members: Vec<Member<'a>>, panic: bool) -> Answer<'a> {
        let records = match members.iter().map(|m| m.ttl).min() {
            None => Records::None,
            Some(ttl) => Records::Instances {
                rrtype,
                ttl,
                members,
            },
        };
        Answer {
            rcode: ResponseCode::NoError,
            records,
            panic,
        }
    }
}

/// The address family an A or AAAA question asks for.
pub(crate) fn family_asked(rrtype: RecordType) -> Option<Family> {
    match rrtype {
        RecordType::A => Some(Family::V4),
        RecordType::AAAA => Some(Family::V6),
        _ => None,
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
