//! etcd's gRPC API, for reads only: the same `Range` call as the JSON
//! gateway's `/v3/kv/range`, as protobuf over HTTP/2.
//!
//! Why a second way in: the gateway turns every answer into JSON inside
//! etcd, and for a whole registry that is most of the time a node takes to
//! start: 100 000 registrations took 4.6 s through the gateway and take
//! 0.85 s as protobuf (`bench/cluster.sh`; docs/BENCHMARKS.md). Writes, leases and the watch stay on the gateway:
//! their messages are small, and one transport for them keeps the rest of
//! the store simple.
//!
//! The messages are written out by hand with `prost`'s derive (field
//! numbers from etcd's `rpc.proto` and `kv.proto`), so no protoc is needed
//! to build. A unary gRPC call is a POST of one length-prefixed message;
//! the answer is one length-prefixed message and a `grpc-status` trailer
//! ([`frame`], [`message`], [`status`]).

use bytes::{BufMut, Bytes, BytesMut};
use hyper::HeaderMap;

use super::wire;

/// The path of `KV.Range`.
pub(crate) const RANGE: &str = "/etcdserverpb.KV/Range";

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
    use prost::Message;

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
