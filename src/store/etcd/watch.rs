//! The watch stream: `POST /v3/watch` with one create request, answered
//! by a response that never ends, one JSON object per line, each
//! `{"result": WatchResponse}` (or `{"error": ...}` when the stream
//! fails). The lines arrive in whatever chunks the connection delivers;
//! [`Lines`] cuts them back into messages.

use http_body_util::BodyExt;

use super::client::{Client, EtcdError, Stream};
use super::wire::{
    Bytes, StreamMessage, WatchCreateRequest, WatchRequest, WatchResponse, prefix_end,
};

/// Longest line accepted: etcd sends a revision's events in one message,
/// and a transaction holds at most 128 writes of at most 1.5 MiB in all.
const MAX_LINE: usize = 64 << 20;

/// Cuts a byte stream into lines.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    buffer: Vec<u8>,
    /// Where the next line starts in `buffer`.
    start: usize,
}

impl Lines {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 && self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete line (without its `\n`), skipping empty ones.
    pub(crate) fn next_line(&mut self) -> Option<&[u8]> {
        loop {
            let rest = &self.buffer[self.start..];
            let end = rest.iter().position(|&b| b == b'\n')?;
            let line_start = self.start;
            self.start += end + 1;
            let line = &self.buffer[line_start..line_start + end];
            let trimmed = line.trim_ascii();
            if !trimmed.is_empty() {
                let offset = line_start + (trimmed.as_ptr() as usize - line.as_ptr() as usize);
                return Some(&self.buffer[offset..offset + trimmed.len()]);
            }
        }
    }

    /// Drops what was already read, so the buffer holds only a partial
    /// line; true when that partial line is longer than any valid one.
    fn compact(&mut self) -> bool {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.len() > MAX_LINE
    }
}

/// One message of the stream: a response, or the error the stream ended
/// with.
pub(crate) fn parse(line: &[u8]) -> Result<WatchResponse, EtcdError> {
    let message: StreamMessage<WatchResponse> =
        serde_json::from_slice(line).map_err(|e| EtcdError::BadResponse(format!("watch: {e}")))?;
    match (message.result, message.error) {
        (Some(result), _) => Ok(result),
        (None, Some(error)) => Err(EtcdError::Refused {
            code: error.grpc_code,
            message: error.message.trim_start_matches("etcdserver: ").to_string(),
        }),
        (None, None) => Err(EtcdError::BadResponse(
            "watch: a message with neither result nor error".into(),
        )),
    }
}

/// An open watch of every key under a prefix.
pub(crate) struct Watch {
    stream: Stream,
    lines: Lines,
    /// Responses parsed from a chunk and not handed out yet.
    ready: std::collections::VecDeque<WatchResponse>,
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
        let stream = client.stream("/v3/watch", &request).await?;
        let mut watch = Watch {
            stream,
            lines: Lines::default(),
            ready: Default::default(),
        };
        let first = tokio::time::timeout(client.request_timeout(), watch.next())
            .await
            .map_err(|_| EtcdError::Timeout(client.request_timeout()))??;
        if !first.created {
            // A watch whose start was compacted answers "canceled" at once.
            watch.ready.push_front(first);
        }
        Ok(watch)
    }

    /// The endpoint this watch is connected to.
    pub(crate) fn endpoint(&self) -> String {
        self.stream.endpoint.to_string()
    }

    /// The next response; an error when the stream ended or failed.
    pub(crate) async fn next(&mut self) -> Result<WatchResponse, EtcdError> {
        loop {
            if let Some(response) = self.ready.pop_front() {
                return Ok(response);
            }
            while let Some(line) = self.lines.next_line() {
                let parsed = parse(line)?;
                self.ready.push_back(parsed);
            }
            if !self.ready.is_empty() {
                continue;
            }
            if self.lines.compact() {
                return Err(EtcdError::BadResponse("watch: a line too long".into()));
            }
            match self.stream.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.lines.push(data);
                    }
                }
                Some(Err(error)) => {
                    return Err(EtcdError::Unreachable(format!(
                        "{}: the watch broke: {error}",
                        self.stream.endpoint
                    )));
                }
                None => {
                    return Err(EtcdError::Unreachable(format!(
                        "{}: the watch ended",
                        self.stream.endpoint
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three messages as etcd 3.4.23 sent them, fed in every split.
    #[test]
    fn lines_are_cut_back_whatever_the_chunks() {
        let stream = concat!(
            r#"{"result":{"header":{"revision":"2"},"created":true}}"#,
            "\n",
            r#"{"result":{"header":{"revision":"3"},"events":[{"kv":{"key":"Zm9v","create_revision":"3","mod_revision":"3","version":"1","value":"eA=="}}]}}"#,
            "\n\n",
            r#"{"result":{"header":{"revision":"4"},"events":[{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"4"}}]}}"#,
            "\n",
        )
        .as_bytes();
        for size in [1, 2, 3, 7, 50, 64, 1000] {
            let mut lines = Lines::default();
            let mut seen = Vec::new();
            for chunk in stream.chunks(size) {
                lines.push(chunk);
                while let Some(line) = lines.next_line() {
                    seen.push(parse(line).unwrap());
                }
                assert!(!lines.compact());
            }
            assert_eq!(seen.len(), 3, "chunks of {size}");
            assert!(seen[0].created);
            assert_eq!(seen[1].events[0].kv.value.as_slice(), b"x");
            assert_eq!(seen[2].header.revision, 4);
            assert_eq!(
                seen[2].events[0].kind,
                super::super::wire::EventType::Delete
            );
        }
    }

    #[test]
    fn a_partial_line_waits_and_errors_end_the_stream() {
        let mut lines = Lines::default();
        lines.push(br#"{"result":{"#);
        assert!(lines.next_line().is_none());
        lines.push(b"}}\r\n");
        assert!(parse(lines.next_line().unwrap()).is_ok());
        let error = parse(
            br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            error,
            EtcdError::Refused {
                code: 14,
                message: "no leader".into()
            }
        );
        assert!(parse(b"not json").is_err());
    }
}
