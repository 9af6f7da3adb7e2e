//! From request bytes to response bytes: header checks, EDNS, and encoding
//! within the size the transport allows.
//!
//! hickory-proto parses and encodes; this module decides what goes in. UDP
//! answers are cut to a random subset of the (already shuffled) answer
//! records that fits, with TC set; additional records are dropped first and
//! never set TC on their own (RFC 2181 §9).

use std::iter;

use hickory_proto::ProtoError;
use hickory_proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::fast::{self, ZoneWire};
use super::zone::{self, AnswerRecord, ZoneSettings};
use crate::metrics::Metrics;
use crate::registry::{Registry, now_ms};

/// UDP payload limit without EDNS (RFC 1035).
pub const CLASSIC_UDP_LIMIT: usize = 512;
/// Largest UDP payload we send, whatever the client offers (DNS flag day 2020).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Largest DNS message over TCP.
pub const TCP_LIMIT: usize = 65535;
/// Bytes an OPT record without options takes.
const OPT_RECORD_LEN: usize = 11;

/// How the query arrived, which bounds the answer's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Everything needed to answer queries; shared by every socket task.
pub struct Responder {
    pub registry: Registry,
    pub zone: ZoneSettings,
    pub metrics: std::sync::Arc<Metrics>,
    /// The zone's names in wire form, for the fast path.
    pub(super) wire: ZoneWire,
}

/// A response ready to send.
pub struct Response {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

impl Responder {
    pub fn new(registry: Registry, zone: ZoneSettings, metrics: std::sync::Arc<Metrics>) -> Self {
        let wire = ZoneWire::new(&zone);
        Responder {
            registry,
            zone,
            metrics,
            wire,
        }
    }

    /// Answers one request packet into `out` (cleared first): the common
    /// questions by the fast path, the rest by [`Responder::respond`]. False
    /// means drop the packet.
    pub fn respond_into(&self, packet: &[u8], transport: Transport, out: &mut Vec<u8>) -> bool {
        if fast::respond(self, packet, transport, out) {
            return true;
        }
        out.clear();
        match self.respond(packet, transport) {
            Some(response) => {
                out.extend_from_slice(&response.bytes);
                true
            }
            None => false,
        }
    }

    /// Answers one request packet by the general path. `None` means drop it: too short to carry
    /// an id to answer to, or itself a response (never answer those, to
    /// avoid loops).
    pub fn respond(&self, packet: &[u8], transport: Transport) -> Option<Response> {
        if packet.len() < 12 || packet[2] & 0x80 != 0 {
            self.metrics.dns_dropped.inc();
            return None;
        }
        let request = match Message::from_vec(packet) {
            Ok(request) => request,
            Err(_) => return Some(self.form_error(packet)),
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = false;
        metadata.authentic_data = false;
        let response_edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP_PAYLOAD);
            edns
        });
        let limit = match transport {
            Transport::Tcp => TCP_LIMIT,
            Transport::Udp => request.edns.as_ref().map_or(CLASSIC_UDP_LIMIT, |edns| {
                usize::from(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD))
            }),
        };
        let query = request.queries.first();
        let qtype = query.map_or(RecordType::Unknown(0), Query::query_type);
        let refuse = |rcode: ResponseCode, metadata: Metadata| {
            self.finish(
                metadata,
                rcode,
                false,
                query,
                &zone::Answer::default(),
                response_edns.as_ref(),
                limit,
                qtype,
            )
        };

        if request.metadata.op_code != OpCode::Query {
            return Some(refuse(ResponseCode::NotImp, metadata));
        }
        if request.queries.len() != 1 {
            return Some(refuse(ResponseCode::FormErr, metadata));
        }
        if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
            return Some(refuse(ResponseCode::BADVERS, metadata));
        }
        let query = &request.queries[0];
        let qname = query.name();
        if query.query_class() != DNSClass::IN || !self.zone.apex.zone_of(qname) {
            return Some(refuse(ResponseCode::Refused, metadata));
        }
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return Some(refuse(ResponseCode::Refused, metadata));
        }
        // No more candidates than the message could hold: the rest would be
        // built only to be dropped (TC says there were more).
        let most = zone::most_records(limit);
        let answer = zone::answer(&self.registry, &self.zone, qname, qtype, now_ms(), most);
        Some(self.finish(
            metadata,
            answer.rcode,
            answer.authoritative,
            Some(query),
            &answer,
            response_edns.as_ref(),
            limit,
            qtype,
        ))
    }

    /// FORMERR for a packet whose header parsed but whose body did not.
    fn form_error(&self, packet: &[u8]) -> Response {
        let id = u16::from_be_bytes([packet[0], packet[1]]);
        let op_code = OpCode::from_u8((packet[2] >> 3) & 0x0f);
        let mut metadata = Metadata::new(id, MessageType::Response, op_code);
        metadata.recursion_desired = packet[2] & 0x01 != 0;
        self.finish(
            metadata,
            ResponseCode::FormErr,
            false,
            None,
            &zone::Answer::default(),
            None,
            CLASSIC_UDP_LIMIT,
            RecordType::Unknown(0),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        mut metadata: Metadata,
        rcode: ResponseCode,
        authoritative: bool,
        query: Option<&Query>,
        answer: &zone::Answer,
        edns: Option<&Edns>,
        limit: usize,
        qtype: RecordType,
    ) -> Response {
        metadata.response_code = rcode;
        metadata.authoritative = authoritative;
        self.metrics.count_query(qtype, rcode);
        let response = match encode(
            metadata,
            query,
            &answer.answers,
            &answer.authorities,
            edns,
            limit,
        ) {
            Ok(response) => response,
            Err(error) => {
                // Only reachable through a bug: answer SERVFAIL rather than nothing.
                tracing::error!(%error, "cannot encode DNS response");
                let mut failed = metadata;
                failed.response_code = ResponseCode::ServFail;
                encode(failed, query, &[], &[], edns, limit).unwrap_or(Response {
                    bytes: Vec::new(),
                    truncated: false,
                })
            }
        };
        if response.truncated {
            self.metrics.dns_truncated.inc();
        }
        response
    }
}

/// Encodes a response of at most `limit` bytes. Answers are taken in order
/// while they fit (TC set when one does not); the authority section must fit
/// whole or TC is set; the extras of the answers sent fill what room is left.
fn encode(
    metadata: Metadata,
    query: Option<&Query>,
    answers: &[AnswerRecord],
    authorities: &[Record],
    edns: Option<&Edns>,
    limit: usize,
) -> Result<Response, ProtoError> {
    let mut bytes = Vec::with_capacity(limit.min(4096));
    let mut encoder = BinEncoder::new(&mut bytes);
    let opt_len = if edns.is_some() { OPT_RECORD_LEN } else { 0 };
    encoder.set_max_size((limit - opt_len) as u16);
    let place = encoder.place::<Header>()?;
    let mut counts = HeaderCounts::default();
    if let Some(query) = query {
        query.emit(&mut encoder)?;
        counts.queries = 1;
    }
    let mut truncated = false;
    for answer in answers {
        if !emit_one(&mut encoder, &answer.record)? {
            truncated = true;
            break;
        }
        counts.answers += 1;
    }
    if !truncated {
        for record in authorities {
            if !emit_one(&mut encoder, record)? {
                truncated = true;
                break;
            }
            counts.authorities += 1;
        }
    }
    let sent = usize::from(counts.answers);
    for extra in answers[..sent].iter().flat_map(|a| a.extras.records()) {
        if emit_one(&mut encoder, &extra)? {
            counts.additionals += 1;
        }
    }
    let mut metadata = metadata;
    if let Some(edns) = edns {
        encoder.set_max_size(limit as u16);
        let mut edns = edns.clone();
        edns.set_rcode_high(metadata.response_code.high());
        encoder.emit_all(iter::once(&Record::from(&edns)))?;
        counts.additionals += 1;
    }
    metadata.truncation = truncated;
    place.replace(&mut encoder, Header { metadata, counts })?;
    // A record that did not fit is rolled back by moving the encoder's
    // offset, but the bytes it had already written stay in the buffer: cut
    // them off, or they would be sent as garbage after the message.
    let end = encoder.offset();
    bytes.truncate(end);
    Ok(Response { bytes, truncated })
}

/// Emits one record if it fits; false (and nothing written) when it does not.
fn emit_one(encoder: &mut BinEncoder<'_>, record: &Record) -> Result<bool, ProtoError> {
    match encoder.emit_all(iter::once(record)) {
        Ok(_) => Ok(true),
        Err(ProtoError::NotAllRecordsWritten { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}
