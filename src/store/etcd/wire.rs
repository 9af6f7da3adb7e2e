//! etcd's v3 messages as the store builds and reads them: plain types,
//! the fields signpost uses. [`super::grpc`] turns them into etcd's
//! protobuf messages and back.

use std::fmt;

/// A `bytes` field.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Bytes(pub Vec<u8>);

impl Bytes {
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Bytes {
    fn from(text: &str) -> Bytes {
        Bytes(text.as_bytes().to_vec())
    }
}

impl From<String> for Bytes {
    fn from(text: String) -> Bytes {
        Bytes(text.into_bytes())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Bytes {
        Bytes(bytes)
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// What every response carries.
#[derive(Debug, Clone, Default)]
pub(crate) struct Header {
    /// The store's revision when the request was served.
    pub revision: i64,
    pub member_id: i64,
}

/// One key and its value, with its history.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyValue {
    pub key: Bytes,
    /// The revision of the put that created the key (0 when absent).
    pub create_revision: i64,
    /// The revision of its last change.
    pub mod_revision: i64,
    pub version: i64,
    pub value: Bytes,
    pub lease: i64,
}

/// `KV.Range`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RangeRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    pub limit: i64,
    /// Read as of this revision (0: the latest).
    pub revision: i64,
    pub count_only: bool,
    /// Read from the member asked, without asking the raft leader: faster,
    /// possibly stale.
    pub serializable: bool,
}

impl RangeRequest {
    /// Every key starting with `prefix`.
    pub(crate) fn prefix(prefix: &[u8]) -> RangeRequest {
        RangeRequest {
            key: Bytes(prefix.to_vec()),
            range_end: Bytes(prefix_end(prefix)),
            ..RangeRequest::default()
        }
    }

    /// One key.
    pub(crate) fn key(key: impl Into<Bytes>) -> RangeRequest {
        RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        }
    }
}

/// The end of the range of keys that start with `prefix`: the prefix with
/// its last byte that is not 0xff incremented, and what follows it cut.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

#[derive(Debug, Clone, Default)]
pub(crate) struct RangeResponse {
    pub header: Header,
    pub kvs: Vec<KeyValue>,
    /// More keys match than `limit` let through.
    pub more: bool,
    pub count: i64,
}

/// A put in a transaction.
#[derive(Debug, Clone, Default)]
pub(crate) struct PutRequest {
    pub key: Bytes,
    pub value: Bytes,
    pub lease: i64,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PutResponse {
    pub header: Header,
}

/// A delete in a transaction.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteRangeRequest {
    pub key: Bytes,
    pub range_end: Bytes,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteRangeResponse {
    pub header: Header,
    pub deleted: i64,
}

/// What a [`Compare`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Version,
    Create,
    Mod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// One condition of a transaction. A key that does not exist compares as
/// version, create and mod revision 0.
#[derive(Debug, Clone)]
pub(crate) struct Compare {
    pub key: Bytes,
    pub target: Target,
    pub result: CompareResult,
    pub version: i64,
    pub create_revision: i64,
    pub mod_revision: i64,
}

impl Compare {
    /// `target` of `key` `result` `value`.
    pub(crate) fn new(
        key: impl Into<Bytes>,
        target: Target,
        result: CompareResult,
        value: i64,
    ) -> Compare {
        let mut compare = Compare {
            key: key.into(),
            target,
            result,
            version: 0,
            create_revision: 0,
            mod_revision: 0,
        };
        match target {
            Target::Version => compare.version = value,
            Target::Create => compare.create_revision = value,
            Target::Mod => compare.mod_revision = value,
        }
        compare
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone)]
#[allow(clippy::enum_variant_names)] // etcd's names
pub(crate) enum RequestOp {
    RequestRange(RangeRequest),
    RequestPut(PutRequest),
    RequestDeleteRange(DeleteRangeRequest),
}

impl RequestOp {
    pub(crate) fn put(key: impl Into<Bytes>, value: impl Into<Bytes>, lease: i64) -> RequestOp {
        RequestOp::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
        })
    }

    pub(crate) fn delete(key: impl Into<Bytes>) -> RequestOp {
        RequestOp::RequestDeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: Bytes::default(),
        })
    }

    pub(crate) fn range(key: impl Into<Bytes>) -> RequestOp {
        RequestOp::RequestRange(RangeRequest::key(key))
    }
}

/// `KV.Txn`: if every compare holds, `success`, else `failure`; all
/// at one new revision (when anything is written).
#[derive(Debug, Clone, Default)]
pub(crate) struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

/// The result of one operation of a transaction.
#[derive(Debug, Clone)]
#[allow(clippy::enum_variant_names)] // etcd's names
pub(crate) enum ResponseOp {
    ResponseRange(RangeResponse),
    ResponsePut(PutResponse),
    ResponseDeleteRange(DeleteRangeResponse),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct TxnResponse {
    pub header: Header,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

impl TxnResponse {
    /// The key-values read by the `n`th operation, when it was a range.
    pub(crate) fn range(&self, n: usize) -> Option<&[KeyValue]> {
        match self.responses.get(n)? {
            ResponseOp::ResponseRange(range) => Some(&range.kvs),
            _ => None,
        }
    }
}

/// `Lease.LeaseGrant`.
#[derive(Debug, Clone)]
pub(crate) struct LeaseGrantRequest {
    pub ttl: i64,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct LeaseGrantResponse {
    pub header: Header,
    pub id: i64,
    /// Seconds granted: at least etcd's floor (2 s), whatever was asked.
    pub ttl: i64,
    pub error: String,
}

/// `Lease.LeaseKeepAlive`'s answer: a TTL of 0 means
/// the lease is gone (expired or revoked).
#[derive(Debug, Clone, Default)]
pub(crate) struct LeaseKeepAliveResponse {
    pub header: Header,
    pub id: i64,
    pub ttl: i64,
}

/// `Auth.Authenticate`.
#[derive(Debug, Clone)]
pub(crate) struct AuthenticateRequest {
    pub name: String,
    pub password: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct AuthenticateResponse {
    pub token: String,
}

/// `KV.Compact`.
#[derive(Debug, Clone)]
pub(crate) struct CompactionRequest {
    pub revision: i64,
}

/// `Watch.Watch`: the one request that opens the stream.
#[derive(Debug, Clone)]
pub(crate) struct WatchRequest {
    pub create_request: WatchCreateRequest,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct WatchCreateRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    /// The first revision to send events of (0: from now on).
    pub start_revision: i64,
    /// Ask for empty responses now and then when nothing changes (every 10
    /// minutes by default in etcd), which carry the current revision.
    pub progress_notify: bool,
}

/// A put, or a delete (the key then carries only its name and the
/// revision of the delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum EventType {
    #[default]
    Put,
    Delete,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Event {
    pub kind: EventType,
    pub kv: KeyValue,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct WatchResponse {
    pub header: Header,
    pub created: bool,
    pub canceled: bool,
    /// Set when the watch was canceled because its start revision was
    /// compacted away: the oldest revision still kept.
    pub compact_revision: i64,
    pub cancel_reason: String,
    pub events: Vec<Event>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/p/"), b"/p0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), [0]);
    }
}
