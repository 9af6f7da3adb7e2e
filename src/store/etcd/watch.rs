//! The watch stream: `Watch.Watch` with one create request, answered by a
//! stream of `WatchResponse` messages that lasts as long as the
//! connection, and ends with a `grpc-status` when etcd ends it. The
//! messages arrive in whatever chunks the connection delivers;
//! [`Frames`] cuts them back.

use http_body_util::BodyExt;

use super::client::{Client, EtcdError, Stream};
use super::grpc::{self, Frames};
use super::wire::{Bytes, WatchCreateRequest, WatchRequest, WatchResponse, prefix_end};

/// Longest message accepted: etcd sends a revision's events in one
/// message (a transaction's writes, or every key of a lease that ran
/// out), far less than this.
const MAX_MESSAGE: usize = 64 << 20;

/// An open watch of every key under a prefix.
pub(crate) struct Watch {
    stream: Stream,
    frames: Frames,
    /// A response that arrived before it was asked for (a watch whose
    /// start was compacted answers "canceled" at once).
    ready: Option<WatchResponse>,
}

impl Watch {
    /// Watches every key under `prefix` from revision `start` on. Returns
    /// once etcd accepted the watch (its `created` response is consumed).
    pub(crate) async fn open(
        client: &Client,
        prefix: &[u8],
        start: i64,
    ) -> Result<Watch, EtcdError> {
        let request = WatchRequest {
            create_request: WatchCreateRequest {
                key: Bytes(prefix.to_vec()),
                range_end: Bytes(prefix_end(prefix)),
                start_revision: start,
                progress_notify: true,
            },
        };
        let stream = client
            .stream(grpc::WATCH, grpc::watch_body(&request))
            .await?;
        let mut watch = Watch {
            stream,
            frames: Frames::default(),
            ready: None,
        };
        let first = tokio::time::timeout(client.request_timeout(), watch.next())
            .await
            .map_err(|_| EtcdError::Timeout(client.request_timeout()));
        let first = match first {
            Ok(Ok(first)) => first,
            Ok(Err(error)) | Err(error) => {
                // Over TLS etcd says why only after the head: the member
                // is passed over next time, as a call's failover would.
                client.avoid_endpoint(&watch.stream.endpoint);
                return Err(error);
            }
        };
        if first.canceled && first.compact_revision == 0 {
            // Refused at once, created or not: etcd keeps such a stream
            // open and silent. A refused token is dropped, so the next try
            // logs in again.
            client.forget_token();
            return Err(EtcdError::Refused {
                code: 7,
                message: format!(
                    "the watch was refused: {}",
                    first.cancel_reason.trim_start_matches("etcdserver: ")
                ),
            });
        }
        if !first.created {
            // Its start revision was compacted away: canceled at once.
            watch.ready = Some(first);
        }
        Ok(watch)
    }

    /// The endpoint this watch is connected to.
    pub(crate) fn endpoint(&self) -> String {
        self.stream.endpoint.to_string()
    }

    /// The next response; an error when the stream ended or failed.
    pub(crate) async fn next(&mut self) -> Result<WatchResponse, EtcdError> {
        if let Some(response) = self.ready.take() {
            return Ok(response);
        }
        loop {
            let message = self
                .frames
                .next_message(MAX_MESSAGE)
                .map_err(|e| EtcdError::BadResponse(format!("watch: {e}")))?;
            if let Some(message) = message {
                return grpc::watch_response(message)
                    .map_err(|e| EtcdError::BadResponse(format!("watch: {e}")));
            }
            let endpoint = &self.stream.endpoint;
            let frame = match self.stream.body.frame().await {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    return Err(EtcdError::Unreachable(format!(
                        "{endpoint}: the watch broke: {error}"
                    )));
                }
                None => {
                    return Err(EtcdError::Unreachable(format!(
                        "{endpoint}: the watch ended"
                    )));
                }
            };
            if let Some(data) = frame.data_ref() {
                self.frames.push(data);
            } else if let Some(trailers) = frame.trailers_ref() {
                // etcd ended the watch, and says why.
                return Err(match grpc::status(trailers) {
                    Some((code, message)) if code != 0 => EtcdError::Refused {
                        code,
                        message: message.trim_start_matches("etcdserver: ").to_string(),
                    },
                    _ => EtcdError::Unreachable(format!("{endpoint}: the watch ended")),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::grpc::{Frames, watch_response};
    use super::super::wire::EventType;

    /// Three messages as etcd encodes them (created; a put of foo=x at
    /// revision 3; its delete at 4), fed in every split.
    #[test]
    fn messages_are_cut_back_whatever_the_chunks() {
        let messages: [&[u8]; 3] = [
            &[0x0a, 0x02, 0x18, 0x02, 0x18, 0x01],
            &[
                0x0a, 0x02, 0x18, 0x03, 0x5a, 0x10, 0x12, 0x0e, 0x0a, 0x03, b'f', b'o', b'o', 0x10,
                0x03, 0x18, 0x03, 0x20, 0x01, 0x2a, 0x01, b'x',
            ],
            &[
                0x0a, 0x02, 0x18, 0x04, 0x5a, 0x0b, 0x08, 0x01, 0x12, 0x07, 0x0a, 0x03, b'f', b'o',
                b'o', 0x18, 0x04,
            ],
        ];
        let mut stream = Vec::new();
        for message in messages {
            stream.push(0);
            stream.extend_from_slice(&(message.len() as u32).to_be_bytes());
            stream.extend_from_slice(message);
        }
        for size in [1, 2, 3, 7, 50, 1000] {
            let mut frames = Frames::default();
            let mut seen = Vec::new();
            for chunk in stream.chunks(size) {
                frames.push(chunk);
                while let Some(message) = frames.next_message(1 << 20).unwrap() {
                    seen.push(watch_response(message).unwrap());
                }
            }
            assert_eq!(seen.len(), 3, "chunks of {size}");
            assert!(seen[0].created);
            assert_eq!(seen[1].events[0].kv.value.as_slice(), b"x");
            assert_eq!(seen[1].events[0].kv.key.as_slice(), b"foo");
            assert_eq!(seen[2].header.revision, 4);
            assert_eq!(seen[2].events[0].kind, EventType::Delete);
        }
    }

    #[test]
    fn oversized_and_compressed_messages_are_refused() {
        let mut frames = Frames::default();
        frames.push(&[0, 0, 0x10, 0, 0]);
        assert!(frames.next_message(1024).is_err());
        let mut frames = Frames::default();
        frames.push(&[1, 0, 0, 0, 0]);
        assert!(frames.next_message(1024).is_err());
        let mut frames = Frames::default();
        frames.push(&[0, 0, 0, 0, 3, 1]);
        assert_eq!(
            frames.next_message(1024).unwrap(),
            None,
            "a partial message waits"
        );
    }
}
