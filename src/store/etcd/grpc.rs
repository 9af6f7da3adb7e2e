//! etcd's gRPC API: the calls the store makes ([`Rpc`]), as protobuf over
//! HTTP/2, the API every etcd client speaks.
//!
//! Not its JSON gateway (`/v3/...`), which signpost spoke at first: the
//! gateway encodes every answer as JSON inside etcd, which was most of a
//! node's start (100 000 registrations: 4.3 s through the gateway, 0.9 s
//! as protobuf; docs/BENCHMARKS.md), and it refuses every request over TLS
//! whose client certificate has a CommonName, as most do.
//!
//! The messages are written out by hand with `prost`'s derive (field
//! numbers from etcd's `rpc.proto` and `kv.proto`; a `oneof` as the
//! optional fields it is on the wire), so no protoc is needed to build.
//! A call is a POST of one length-prefixed message; the answer is one
//! message (or, for the watch, a stream of them) and a `grpc-status`
//! trailer ([`frame`], [`message`], [`Frames`], [`status`]). etcd's two
//! streaming calls used here, `LeaseKeepAlive` and `Watch`, take one
//! request each: etcd keeps answering after the request side ends.

use bytes::{BufMut, Bytes, BytesMut};
use hyper::HeaderMap;
use prost::Message as _;

use super::wire;

/// `etcdserverpb.RangeRequest` (the fields signpost sets).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub limit: i64,
    #[prost(int64, tag = "4")]
    pub revision: i64,
    #[prost(bool, tag = "7")]
    pub serializable: bool,
    #[prost(bool, tag = "9")]
    pub count_only: bool,
}

/// `etcdserverpb.ResponseHeader`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResponseHeader {
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
}

/// `mvccpb.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    pub more: bool,
    #[prost(int64, tag = "4")]
    pub count: i64,
}

impl From<&wire::RangeRequest> for RangeRequest {
    fn from(request: &wire::RangeRequest) -> RangeRequest {
        RangeRequest {
            key: request.key.0.clone(),
            range_end: request.range_end.0.clone(),
            limit: request.limit,
            revision: request.revision,
            serializable: request.serializable,
            count_only: request.count_only,
        }
    }
}

impl From<RangeResponse> for wire::RangeResponse {
    fn from(response: RangeResponse) -> wire::RangeResponse {
        let header = response.header.unwrap_or_default();
        wire::RangeResponse {
            header: wire::Header {
                revision: header.revision,
                member_id: header.member_id as i64,
            },
            kvs: response
                .kvs
                .into_iter()
                .map(|kv| wire::KeyValue {
                    key: wire::Bytes(kv.key),
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                    version: kv.version,
                    value: wire::Bytes(kv.value),
                    lease: kv.lease,
                })
                .collect(),
            more: response.more,
            count: response.count,
        }
    }
}

// ------------------------------------------------------------------ the rest of the API

/// `etcdserverpb.Compare`: the `target_union` oneof is written as the
/// optional fields it is on the wire (only the one `target` names is set).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Compare {
    #[prost(int32, tag = "1")]
    pub result: i32,
    #[prost(int32, tag = "2")]
    pub target: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    #[prost(int64, optional, tag = "4")]
    pub version: Option<i64>,
    #[prost(int64, optional, tag = "5")]
    pub create_revision: Option<i64>,
    #[prost(int64, optional, tag = "6")]
    pub mod_revision: Option<i64>,
}

/// `etcdserverpb.PutRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub lease: i64,
}

/// `etcdserverpb.DeleteRangeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DeleteRangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
}

/// `etcdserverpb.RequestOp`: the `request` oneof as optional fields.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RequestOp {
    #[prost(message, optional, tag = "1")]
    pub request_range: Option<RangeRequest>,
    #[prost(message, optional, tag = "2")]
    pub request_put: Option<PutRequest>,
    #[prost(message, optional, tag = "3")]
    pub request_delete_range: Option<DeleteRangeRequest>,
}

/// `etcdserverpb.TxnRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TxnRequest {
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
    #[prost(message, repeated, tag = "3")]
    pub failure: Vec<RequestOp>,
}

/// `etcdserverpb.PutResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// `etcdserverpb.DeleteRangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DeleteRangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub deleted: i64,
}

/// `etcdserverpb.ResponseOp`: the `response` oneof as optional fields.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResponseOp {
    #[prost(message, optional, tag = "1")]
    pub response_range: Option<RangeResponse>,
    #[prost(message, optional, tag = "2")]
    pub response_put: Option<PutResponse>,
    #[prost(message, optional, tag = "3")]
    pub response_delete_range: Option<DeleteRangeResponse>,
}

/// `etcdserverpb.TxnResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TxnResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
    #[prost(message, repeated, tag = "3")]
    pub responses: Vec<ResponseOp>,
}

/// `etcdserverpb.LeaseGrantRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LeaseGrantRequest {
    #[prost(int64, tag = "1")]
    pub ttl: i64,
    #[prost(int64, tag = "2")]
    pub id: i64,
}

/// `etcdserverpb.LeaseGrantResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LeaseGrantResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub id: i64,
    #[prost(int64, tag = "3")]
    pub ttl: i64,
    #[prost(string, tag = "4")]
    pub error: String,
}

/// `etcdserverpb.LeaseRevokeRequest` and `LeaseKeepAliveRequest` (the
/// same one field).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LeaseId {
    #[prost(int64, tag = "1")]
    pub id: i64,
}

/// `etcdserverpb.LeaseKeepAliveResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LeaseKeepAliveResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub id: i64,
    #[prost(int64, tag = "3")]
    pub ttl: i64,
}

/// `etcdserverpb.CompactionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CompactionRequest {
    #[prost(int64, tag = "1")]
    pub revision: i64,
    #[prost(bool, tag = "2")]
    pub physical: bool,
}

/// `etcdserverpb.AuthenticateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AuthenticateRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub password: String,
}

/// `etcdserverpb.AuthenticateResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AuthenticateResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub token: String,
}

/// A response that signpost reads nothing of but its header.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HeaderOnly {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// `etcdserverpb.WatchRequest`: the `request_union` oneof, of which
/// signpost sends only `create_request`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WatchRequest {
    #[prost(message, optional, tag = "1")]
    pub create_request: Option<WatchCreateRequest>,
}

/// `etcdserverpb.WatchCreateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WatchCreateRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub start_revision: i64,
    #[prost(bool, tag = "4")]
    pub progress_notify: bool,
}

/// `mvccpb.Event`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Event {
    /// 0 put, 1 delete.
    #[prost(int32, tag = "1")]
    pub kind: i32,
    #[prost(message, optional, tag = "2")]
    pub kv: Option<KeyValue>,
}

/// `etcdserverpb.WatchResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WatchResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub watch_id: i64,
    #[prost(bool, tag = "3")]
    pub created: bool,
    #[prost(bool, tag = "4")]
    pub canceled: bool,
    #[prost(int64, tag = "5")]
    pub compact_revision: i64,
    #[prost(string, tag = "6")]
    pub cancel_reason: String,
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
}

// ------------------------------------------------------------------ calls

/// A call of etcd's gRPC API, made with the store's own request types
/// ([`wire`]): its path, its request as a gRPC body, and its answer read
/// back into the store's types.
pub(crate) trait Rpc {
    const PATH: &'static str;
    type Answer;
    fn body(&self) -> Bytes;
    fn answer(message: Bytes) -> Result<Self::Answer, prost::DecodeError>;
}

/// `LeaseKeepAlive` for one lease: a stream in etcd's API, used here as
/// one request and its one answer (etcd ends the call when the request
/// side ends).
pub(crate) struct KeepAlive(pub i64);

/// `LeaseRevoke`.
pub(crate) struct Revoke(pub i64);

fn header(header: Option<ResponseHeader>) -> wire::Header {
    let header = header.unwrap_or_default();
    wire::Header {
        revision: header.revision,
        member_id: header.member_id as i64,
    }
}

fn key_value(kv: KeyValue) -> wire::KeyValue {
    wire::KeyValue {
        key: wire::Bytes(kv.key),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: wire::Bytes(kv.value),
        lease: kv.lease,
    }
}

fn compare(compare: &wire::Compare) -> Compare {
    let mut out = Compare {
        result: match compare.result {
            wire::CompareResult::Equal => 0,
            wire::CompareResult::Greater => 1,
            wire::CompareResult::Less => 2,
            wire::CompareResult::NotEqual => 3,
        },
        key: compare.key.0.clone(),
        ..Compare::default()
    };
    match compare.target {
        wire::Target::Version => {
            out.target = 0;
            out.version = Some(compare.version);
        }
        wire::Target::Create => {
            out.target = 1;
            out.create_revision = Some(compare.create_revision);
        }
        wire::Target::Mod => {
            out.target = 2;
            out.mod_revision = Some(compare.mod_revision);
        }
    }
    out
}

fn request_op(op: &wire::RequestOp) -> RequestOp {
    match op {
        wire::RequestOp::RequestRange(range) => RequestOp {
            request_range: Some(range.into()),
            ..RequestOp::default()
        },
        wire::RequestOp::RequestPut(put) => RequestOp {
            request_put: Some(PutRequest {
                key: put.key.0.clone(),
                value: put.value.0.clone(),
                lease: put.lease,
            }),
            ..RequestOp::default()
        },
        wire::RequestOp::RequestDeleteRange(delete) => RequestOp {
            request_delete_range: Some(DeleteRangeRequest {
                key: delete.key.0.clone(),
                range_end: delete.range_end.0.clone(),
            }),
            ..RequestOp::default()
        },
    }
}

fn response_op(op: ResponseOp) -> wire::ResponseOp {
    if let Some(range) = op.response_range {
        wire::ResponseOp::ResponseRange(range.into())
    } else if let Some(delete) = op.response_delete_range {
        wire::ResponseOp::ResponseDeleteRange(wire::DeleteRangeResponse {
            header: header(delete.header),
            deleted: delete.deleted,
        })
    } else {
        let put = op.response_put.unwrap_or_default();
        wire::ResponseOp::ResponsePut(wire::PutResponse {
            header: header(put.header),
        })
    }
}

impl Rpc for wire::RangeRequest {
    const PATH: &'static str = "/etcdserverpb.KV/Range";
    type Answer = wire::RangeResponse;
    fn body(&self) -> Bytes {
        frame(&RangeRequest::from(self))
    }
    fn answer(message: Bytes) -> Result<wire::RangeResponse, prost::DecodeError> {
        RangeResponse::decode(message).map(Into::into)
    }
}

impl Rpc for wire::TxnRequest {
    const PATH: &'static str = "/etcdserverpb.KV/Txn";
    type Answer = wire::TxnResponse;
    fn body(&self) -> Bytes {
        frame(&TxnRequest {
            compare: self.compare.iter().map(compare).collect(),
            success: self.success.iter().map(request_op).collect(),
            failure: self.failure.iter().map(request_op).collect(),
        })
    }
    fn answer(message: Bytes) -> Result<wire::TxnResponse, prost::DecodeError> {
        let response = TxnResponse::decode(message)?;
        Ok(wire::TxnResponse {
            header: header(response.header),
            succeeded: response.succeeded,
            responses: response.responses.into_iter().map(response_op).collect(),
        })
    }
}

impl Rpc for wire::LeaseGrantRequest {
    const PATH: &'static str = "/etcdserverpb.Lease/LeaseGrant";
    type Answer = wire::LeaseGrantResponse;
    fn body(&self) -> Bytes {
        frame(&LeaseGrantRequest {
            ttl: self.ttl,
            id: 0,
        })
    }
    fn answer(message: Bytes) -> Result<wire::LeaseGrantResponse, prost::DecodeError> {
        let response = LeaseGrantResponse::decode(message)?;
        Ok(wire::LeaseGrantResponse {
            header: header(response.header),
            id: response.id,
            ttl: response.ttl,
            error: response.error,
        })
    }
}

impl Rpc for KeepAlive {
    const PATH: &'static str = "/etcdserverpb.Lease/LeaseKeepAlive";
    type Answer = wire::LeaseKeepAliveResponse;
    fn body(&self) -> Bytes {
        frame(&LeaseId { id: self.0 })
    }
    fn answer(message: Bytes) -> Result<wire::LeaseKeepAliveResponse, prost::DecodeError> {
        let response = LeaseKeepAliveResponse::decode(message)?;
        Ok(wire::LeaseKeepAliveResponse {
            header: header(response.header),
            id: response.id,
            ttl: response.ttl,
        })
    }
}

impl Rpc for Revoke {
    const PATH: &'static str = "/etcdserverpb.Lease/LeaseRevoke";
    type Answer = ();
    fn body(&self) -> Bytes {
        frame(&LeaseId { id: self.0 })
    }
    fn answer(message: Bytes) -> Result<(), prost::DecodeError> {
        HeaderOnly::decode(message).map(|_| ())
    }
}

impl Rpc for wire::CompactionRequest {
    const PATH: &'static str = "/etcdserverpb.KV/Compact";
    type Answer = ();
    fn body(&self) -> Bytes {
        frame(&CompactionRequest {
            revision: self.revision,
            physical: false,
        })
    }
    fn answer(message: Bytes) -> Result<(), prost::DecodeError> {
        HeaderOnly::decode(message).map(|_| ())
    }
}

impl Rpc for wire::AuthenticateRequest {
    const PATH: &'static str = "/etcdserverpb.Auth/Authenticate";
    type Answer = wire::AuthenticateResponse;
    fn body(&self) -> Bytes {
        frame(&AuthenticateRequest {
            name: self.name.clone(),
            password: self.password.clone(),
        })
    }
    fn answer(message: Bytes) -> Result<wire::AuthenticateResponse, prost::DecodeError> {
        let response = AuthenticateResponse::decode(message)?;
        Ok(wire::AuthenticateResponse {
            token: response.token,
        })
    }
}

/// The path of `Watch.Watch`: a stream both ways in etcd's API, used here
/// as one create request, then the responses for as long as it lasts.
pub(crate) const WATCH: &str = "/etcdserverpb.Watch/Watch";

/// `request` as a gRPC body.
pub(crate) fn watch_body(request: &wire::WatchRequest) -> Bytes {
    let create = &request.create_request;
    frame(&WatchRequest {
        create_request: Some(WatchCreateRequest {
            key: create.key.0.clone(),
            range_end: create.range_end.0.clone(),
            start_revision: create.start_revision,
            progress_notify: create.progress_notify,
        }),
    })
}

/// One message of the watch's answer.
pub(crate) fn watch_response(message: Bytes) -> Result<wire::WatchResponse, prost::DecodeError> {
    let response = WatchResponse::decode(message)?;
    Ok(wire::WatchResponse {
        header: header(response.header),
        created: response.created,
        canceled: response.canceled,
        compact_revision: response.compact_revision,
        cancel_reason: response.cancel_reason,
        events: response
            .events
            .into_iter()
            .map(|event| wire::Event {
                kind: if event.kind == 1 {
                    wire::EventType::Delete
                } else {
                    wire::EventType::Put
                },
                kv: event.kv.map(key_value).unwrap_or_default(),
            })
            .collect(),
    })
}

/// Cuts a stream's bytes into its messages (each length-prefixed).
#[derive(Debug, Default)]
pub(crate) struct Frames {
    buffer: BytesMut,
}

impl Frames {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole message; `Err` for a compressed one, or one longer
    /// than `limit`.
    pub(crate) fn next_message(&mut self, limit: usize) -> Result<Option<Bytes>, String> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        if self.buffer[0] != 0 {
            return Err("a compressed gRPC message (none was asked for)".into());
        }
        let length = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if length > limit {
            return Err(format!("a gRPC message of {length} bytes"));
        }
        if self.buffer.len() < 5 + length {
            return Ok(None);
        }
        let mut message = self.buffer.split_to(5 + length);
        Ok(Some(message.split_off(5).freeze()))
    }
}

/// `message` as a gRPC request body: uncompressed, length-prefixed.
pub(crate) fn frame(message: &impl prost::Message) -> Bytes {
    let length = message.encoded_len();
    let mut body = BytesMut::with_capacity(5 + length);
    body.put_u8(0);
    body.put_u32(length as u32);
    message
        .encode(&mut body)
        .expect("the buffer has room for the message");
    body.freeze()
}

/// The one message of a unary answer's body.
pub(crate) fn message(body: &Bytes) -> Result<Bytes, String> {
    if body.len() < 5 {
        return Err(format!(
            "a gRPC answer of {} bytes has no message",
            body.len()
        ));
    }
    if body[0] != 0 {
        return Err("a compressed gRPC answer (none was asked for)".into());
    }
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != 5 + length {
        return Err(format!(
            "a gRPC message of {length} bytes in a body of {}",
            body.len()
        ));
    }
    Ok(body.slice(5..))
}

/// `grpc-status` and `grpc-message` of an answer's trailers (or of its
/// headers, when the answer is trailers only); `None` when there are none.
pub(crate) fn status(fields: &HeaderMap) -> Option<(i32, String)> {
    let code = fields.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = fields
        .get("grpc-message")
        .map(|m| percent_decode(m.as_bytes()))
        .unwrap_or_default();
    Some((code, message))
}

/// gRPC percent-encodes `grpc-message` (bytes outside printable ASCII,
/// and `%`).
fn percent_decode(text: &[u8]) -> String {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (text[i], text.get(i + 1), text.get(i + 2)) {
            (b'%', Some(&high), Some(&low)) if hex(high).is_some() && hex(low).is_some() => {
                out.push((hex(high).unwrap_or(0) * 16 + hex(low).unwrap_or(0)) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_framed_and_an_answer_unframed() {
        let request = RangeRequest {
            key: b"/p/i/".to_vec(),
            range_end: b"/p/i0".to_vec(),
            limit: 2_000,
            ..RangeRequest::default()
        };
        let body = frame(&request);
        assert_eq!(body[0], 0);
        assert_eq!(
            u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize,
            body.len() - 5
        );
        let inner = message(&body).unwrap();
        assert_eq!(RangeRequest::decode(inner).unwrap(), request);
        assert!(message(&Bytes::from_static(&[0, 0, 0])).is_err());
        assert!(message(&Bytes::from_static(&[0, 0, 0, 0, 9, 1])).is_err());
        assert!(message(&Bytes::from_static(&[1, 0, 0, 0, 0])).is_err());
    }

    #[test]
    fn field_numbers_match_etcds() {
        // A RangeResponse as etcd 3.4 encodes it: header {member_id: 7,
        // revision: 42}, one kv {key "k", create 5, mod 6, version 2,
        // value "v", lease 0}, more: true, count: 3.
        let encoded = [
            0x0a, 0x04, 0x10, 0x07, 0x18, 0x2a, // header
            0x12, 0x0c, 0x0a, 0x01, b'k', 0x10, 0x05, 0x18, 0x06, 0x20, 0x02, 0x2a, 0x01,
            b'v', // kv
            0x18, 0x01, // more
            0x20, 0x03, // count
        ];
        let response: wire::RangeResponse = RangeResponse::decode(&encoded[..]).unwrap().into();
        assert_eq!(response.header.revision, 42);
        assert_eq!(response.header.member_id, 7);
        assert!(response.more);
        assert_eq!(response.count, 3);
        let kv = &response.kvs[0];
        assert_eq!(
            (kv.key.as_slice(), kv.value.as_slice()),
            (&b"k"[..], &b"v"[..])
        );
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 6, 2));
    }

    #[test]
    fn transactions_are_written_and_read_as_etcd_does() {
        let txn = wire::TxnRequest {
            compare: vec![
                wire::Compare::new("a", wire::Target::Version, wire::CompareResult::Equal, 0),
                wire::Compare::new("b", wire::Target::Mod, wire::CompareResult::Less, 8),
            ],
            success: vec![
                wire::RequestOp::put("a", "x", 7),
                wire::RequestOp::delete("c"),
            ],
            failure: vec![wire::RequestOp::range("b")],
        };
        let sent = TxnRequest::decode(message(&txn.body()).unwrap()).unwrap();
        let version = &sent.compare[0];
        assert_eq!((version.result, version.target), (0, 0));
        // A compare with 0 is sent with the value present, as etcd's
        // oneof is.
        assert_eq!(version.version, Some(0));
        assert_eq!(sent.compare[1].mod_revision, Some(8));
        assert_eq!((sent.compare[1].result, sent.compare[1].target), (2, 2));
        let put = sent.success[0].request_put.as_ref().unwrap();
        assert_eq!(
            (put.key.as_slice(), put.value.as_slice(), put.lease),
            (&b"a"[..], &b"x"[..], 7)
        );
        assert_eq!(
            sent.success[1].request_delete_range.as_ref().unwrap().key,
            b"c"
        );
        assert_eq!(sent.failure[0].request_range.as_ref().unwrap().key, b"b");

        let answer = TxnResponse {
            header: Some(ResponseHeader {
                member_id: 1,
                revision: 9,
            }),
            succeeded: false,
            responses: vec![ResponseOp {
                response_range: Some(RangeResponse {
                    header: None,
                    kvs: vec![KeyValue {
                        key: b"b".to_vec(),
                        mod_revision: 9,
                        ..KeyValue::default()
                    }],
                    more: false,
                    count: 1,
                }),
                ..ResponseOp::default()
            }],
        };
        let read = wire::TxnRequest::answer(answer.encode_to_vec().into()).unwrap();
        assert!(!read.succeeded);
        assert_eq!(read.header.revision, 9);
        assert_eq!(read.range(0).unwrap()[0].mod_revision, 9);
    }

    #[test]
    fn grpc_messages_are_percent_decoded() {
        let mut fields = HeaderMap::new();
        fields.insert("grpc-status", "11".parse().unwrap());
        fields.insert(
            "grpc-message",
            "etcdserver: mvcc: required revision has been compacted %25 %E2%9C%93"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            status(&fields),
            Some((
                11,
                "etcdserver: mvcc: required revision has been compacted % ✓".into()
            ))
        );
        assert_eq!(status(&HeaderMap::new()), None);
    }
}
