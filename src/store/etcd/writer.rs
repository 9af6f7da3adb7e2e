//! Group commit for etcd: every write of the store (a registration, a
//! heartbeat, a removal, a check's verdict, an expiry) is a small
//! conditional write, a few compares and a few operations. The writer
//! task takes whatever is queued and commits it as one transaction, as the
//! SQLite store shares one fsync: a round trip and a raft entry per batch,
//! not per write, so two thousand heartbeats a second are a few dozen
//! transactions. At most [`IN_FLIGHT`] transactions are out at once; what
//! arrives meanwhile waits for the next, and so batches grow with load.
//!
//! A transaction is all or nothing: when one write's compare fails, the
//! transaction's failure branch reads every compared key, the writes whose
//! compares held are committed again without it, and it alone is told
//! that its compare failed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::client::{Client, EtcdError, Retry};
use super::wire::{Compare, CompareResult, KeyValue, RequestOp, Target, TxnRequest, TxnResponse};

/// Transactions out at once.
const IN_FLIGHT: usize = 4;
/// etcd's default `--max-txn-ops`: operations (and compares) per transaction.
const MAX_OPS: usize = 128;
/// Bytes of keys and values per transaction: well within etcd's default
/// request limit of 1.5 MiB.
const MAX_BYTES: usize = 768 << 10;
/// Rounds a batch may be committed again after other writes' compares
/// failed, before the writes left are failed too.
const MAX_ROUNDS: usize = 8;

/// One conditional write: `ops` if every compare holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Write {
    pub compares: Vec<Compare>,
    pub ops: Vec<RequestOp>,
}

/// How a write ended, when etcd answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Committed at this revision.
    Committed(i64),
    /// A compare did not hold; nothing was written.
    Refused,
}

type Reply = oneshot::Sender<Result<Outcome, EtcdError>>;

/// A cheap handle for queueing writes.
#[derive(Clone)]
pub(crate) struct Batcher {
    queue: mpsc::UnboundedSender<(Write, Reply)>,
}

/// The writer task's end of the queue.
pub(crate) struct BatcherInbox(mpsc::UnboundedReceiver<(Write, Reply)>);

impl Batcher {
    pub(crate) fn new() -> (Batcher, BatcherInbox) {
        let (queue, inbox) = mpsc::unbounded_channel();
        (Batcher { queue }, BatcherInbox(inbox))
    }

    /// Queues `write` and waits until it is committed or refused.
    pub(crate) async fn write(&self, write: Write) -> Result<Outcome, EtcdError> {
        let (reply, done) = oneshot::channel();
        self.queue
            .send((write, reply))
            .map_err(|_| EtcdError::Unreachable("the store is closed".into()))?;
        done.await
            .unwrap_or_else(|_| Err(EtcdError::Unreachable("the store is closed".into())))
    }
}

/// The writer task: batches until `shutdown`, then commits what is queued.
pub(crate) async fn run(
    BatcherInbox(mut inbox): BatcherInbox,
    client: Client,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut waiting: VecDeque<(Write, Reply)> = VecDeque::new();
    // Keys the transactions in flight write: a later write of one waits
    // for its transaction to end, as transactions in flight may commit in
    // any order (a health reported twice must end as the second said).
    let busy: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
    let ended = Arc::new(Notify::new());
    loop {
        if waiting.is_empty() {
            tokio::select! {
                item = inbox.recv() => match item {
                    Some(item) => waiting.push_back(item),
                    None => break,
                },
                _ = shutdown.cancelled() => break,
            }
        }
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            _ = shutdown.cancelled() => break,
        };
        while let Ok(item) = inbox.try_recv() {
            waiting.push_back(item);
        }
        let batch = take_batch(
            &mut waiting,
            &busy.lock().unwrap_or_else(|e| e.into_inner()),
        );
        if batch.is_empty() {
            // Every write waiting writes a key in flight: wait for a
            // transaction to end, or for a new write.
            drop(permit);
            tokio::select! {
                _ = ended.notified() => {}
                item = inbox.recv() => match item {
                    Some(item) => waiting.push_back(item),
                    None => break,
                },
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        let keys: Vec<Vec<u8>> = batch
            .iter()
            .flat_map(|(write, _)| write.ops.iter().map(|op| op_key(op).to_vec()))
            .collect();
        busy.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(keys.iter().cloned());
        let (client, busy, ended) = (client.clone(), busy.clone(), ended.clone());
        tokio::spawn(async move {
            commit(&client, batch).await;
            let mut in_flight = busy.lock().unwrap_or_else(|e| e.into_inner());
            for key in &keys {
                in_flight.remove(key);
            }
            drop(in_flight);
            ended.notify_one();
            drop(permit);
        });
    }
    // Refuse what is left: the store is closing.
    inbox.close();
    while let Ok(item) = inbox.try_recv() {
        waiting.push_back(item);
    }
    for (_, reply) in waiting {
        let _ = reply.send(Err(EtcdError::Unreachable("the store is closed".into())));
    }
}

/// As many waiting writes, in order, as fit one transaction; a write that
/// touches a key already in it (etcd refuses a transaction that writes one
/// key twice), or one in `busy` (written by a transaction in flight),
/// waits for a later one.
fn take_batch(
    waiting: &mut VecDeque<(Write, Reply)>,
    busy: &HashSet<Vec<u8>>,
) -> Vec<(Write, Reply)> {
    let mut batch = Vec::new();
    let mut keys: HashSet<Vec<u8>> = HashSet::new();
    let mut compares: HashSet<CompareKey> = HashSet::new();
    let (mut ops, mut bytes) = (0, 0);
    let mut later = VecDeque::new();
    while let Some((write, reply)) = waiting.pop_front() {
        let size: usize = write.ops.iter().map(op_size).sum();
        let new_compares = write
            .compares
            .iter()
            .filter(|c| !compares.contains(&compare_key(c)))
            .count();
        let fits = batch.is_empty()
            || (ops + write.ops.len() <= MAX_OPS
                && compares.len() + new_compares <= MAX_OPS
                && bytes + size <= MAX_BYTES);
        let clash = write
            .ops
            .iter()
            .any(|op| keys.contains(op_key(op)) || busy.contains(op_key(op)));
        if !fits {
            waiting.push_front((write, reply));
            break;
        }
        if clash {
            later.push_back((write, reply));
            continue;
        }
        keys.extend(write.ops.iter().map(|op| op_key(op).to_vec()));
        compares.extend(write.compares.iter().map(compare_key));
        ops += write.ops.len();
        bytes += size;
        batch.push((write, reply));
    }
    while let Some(item) = later.pop_back() {
        waiting.push_front(item);
    }
    batch
}

/// A compare as a set member: writes that compare the same thing once
/// share it in the transaction.
type CompareKey = (Vec<u8>, u8, u8, i64);

fn compare_key(compare: &Compare) -> CompareKey {
    let (target, value) = match compare.target {
        Target::Version => (0, compare.version),
        Target::Create => (1, compare.create_revision),
        Target::Mod => (2, compare.mod_revision),
    };
    (compare.key.0.clone(), target, compare.result as u8, value)
}

fn op_key(op: &RequestOp) -> &[u8] {
    match op {
        RequestOp::RequestPut(put) => put.key.as_slice(),
        RequestOp::RequestDeleteRange(delete) => delete.key.as_slice(),
        RequestOp::RequestRange(range) => range.key.as_slice(),
    }
}

fn op_size(op: &RequestOp) -> usize {
    match op {
        RequestOp::RequestPut(put) => put.key.0.len() + put.value.0.len() + 64,
        _ => op_key(op).len() + 64,
    }
}

/// Commits `batch`, answering each write; a write whose compare failed is
/// answered [`Outcome::Refused`] and the rest are committed again.
async fn commit(client: &Client, mut batch: Vec<(Write, Reply)>) {
    for _ in 0..MAX_ROUNDS {
        let mut compared: Vec<Vec<u8>> = Vec::new();
        let mut request = TxnRequest::default();
        let mut seen = HashSet::new();
        for (write, _) in &batch {
            for compare in &write.compares {
                if seen.insert(compare_key(compare)) {
                    request.compare.push(compare.clone());
                }
                if !compared.contains(&compare.key.0) {
                    compared.push(compare.key.0.clone());
                }
            }
            request.success.extend(write.ops.iter().cloned());
        }
        request.failure = compared
            .iter()
            .map(|key| RequestOp::range(key.clone()))
            .collect();
        let response: TxnResponse = match client.call(&request, Retry::Always).await {
            Ok(response) => response,
            Err(error) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(error.clone()));
                }
                return;
            }
        };
        if response.succeeded {
            for (_, reply) in batch {
                let _ = reply.send(Ok(Outcome::Committed(response.header.revision)));
            }
            return;
        }
        let current: HashMap<&[u8], &KeyValue> = (0..compared.len())
            .filter_map(|n| response.range(n)?.first())
            .map(|kv| (kv.key.as_slice(), kv))
            .collect();
        let (holding, failed): (Vec<_>, Vec<_>) = batch.into_iter().partition(|(write, _)| {
            write
                .compares
                .iter()
                .all(|compare| holds(compare, current.get(compare.key.as_slice()).copied()))
        });
        for (_, reply) in failed {
            let _ = reply.send(Ok(Outcome::Refused));
        }
        if holding.is_empty() {
            return;
        }
        batch = holding;
    }
    for (_, reply) in batch {
        let _ = reply.send(Err(EtcdError::Refused {
            code: 10, // ABORTED
            message: "too many concurrent changes to the same keys".into(),
        }));
    }
}

/// Whether `compare` holds for `kv` (a key that does not exist compares
/// as version and revisions 0).
pub(crate) fn holds(compare: &Compare, kv: Option<&KeyValue>) -> bool {
    let (actual, expected) = match compare.target {
        Target::Version => (kv.map_or(0, |kv| kv.version), compare.version),
        Target::Create => (
            kv.map_or(0, |kv| kv.create_revision),
            compare.create_revision,
        ),
        Target::Mod => (kv.map_or(0, |kv| kv.mod_revision), compare.mod_revision),
    };
    match compare.result {
        CompareResult::Equal => actual == expected,
        CompareResult::NotEqual => actual != expected,
        CompareResult::Greater => actual > expected,
        CompareResult::Less => actual < expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(keys: &[&str]) -> (Write, Reply) {
        let (reply, _) = oneshot::channel();
        let write = Write {
            compares: vec![Compare::new("i", Target::Create, CompareResult::Equal, 5)],
            ops: keys.iter().map(|k| RequestOp::put(*k, "v", 0)).collect(),
        };
        (write, reply)
    }

    #[test]
    fn batches_hold_each_key_once_and_at_most_128_operations() {
        let mut waiting: VecDeque<_> =
            [write(&["a"]), write(&["b"]), write(&["a"]), write(&["c"])].into();
        let batch = take_batch(&mut waiting, &HashSet::new());
        let keys: Vec<_> = batch
            .iter()
            .map(|(w, _)| op_key(&w.ops[0]).to_vec())
            .collect();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(waiting.len(), 1, "the second write of a waits");
        let mut waiting: VecDeque<_> = (0..300).map(|n| write(&[&format!("k{n}")])).collect();
        assert_eq!(take_batch(&mut waiting, &HashSet::new()).len(), MAX_OPS);
        assert_eq!(waiting.len(), 300 - MAX_OPS);
        // A key a transaction in flight writes waits, and so does every
        // later write of it.
        let mut waiting: VecDeque<_> = [
            write(&["a"]),
            write(&["b"]),
            write(&["a", "c"]),
            write(&["d"]),
        ]
        .into();
        let busy: HashSet<Vec<u8>> = [b"a".to_vec()].into();
        let batch = take_batch(&mut waiting, &busy);
        let keys: Vec<_> = batch
            .iter()
            .map(|(w, _)| op_key(&w.ops[0]).to_vec())
            .collect();
        assert_eq!(keys, [b"b".to_vec(), b"d".to_vec()]);
        assert_eq!(waiting.len(), 2);
        assert!(take_batch(&mut waiting, &busy).is_empty());
        let batch = take_batch(&mut waiting, &HashSet::new());
        assert_eq!(
            batch.len(),
            1,
            "the first write of a, alone: the second clashes"
        );
    }

    #[test]
    fn compares_are_judged_as_etcd_does() {
        let kv = KeyValue {
            version: 2,
            create_revision: 5,
            mod_revision: 9,
            ..KeyValue::default()
        };
        let compare = |target, result, value| Compare::new("k", target, result, value);
        use CompareResult::*;
        assert!(holds(&compare(Target::Create, Equal, 5), Some(&kv)));
        assert!(!holds(&compare(Target::Create, Equal, 5), None));
        assert!(holds(&compare(Target::Version, Equal, 0), None));
        assert!(holds(&compare(Target::Mod, Less, 10), Some(&kv)));
        assert!(!holds(&compare(Target::Mod, Less, 9), Some(&kv)));
        assert!(holds(&compare(Target::Mod, Less, 1), None));
        assert!(holds(&compare(Target::Version, Greater, 1), Some(&kv)));
        assert!(holds(&compare(Target::Mod, NotEqual, 8), Some(&kv)));
    }
}
