//! The producer's network side: one ProduceMany request per broker, carrying the batches of
//! every partition it leads that had one ready; per-partition answers; and retries, alone, of
//! the partitions that failed.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use strata_proto::{PartitionBatches, ProduceManyRequest};
use strata_record::{BatchBuilder, Compression, Offset};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tonic::{Code, Status};

use crate::answers::Answers;
use crate::client::MAX_RESPONSE_BYTES;
use crate::producer::{Acks, ProducerConfig, Waiter};
use crate::record::Delivered;
use crate::unary_frames;
use crate::{Client, ClientError, Result};

pub(crate) type PartitionKey = (String, u32);

/// A batch on its way, numbered in its partition's queue.
pub(crate) struct Outgoing {
    pub(crate) key: PartitionKey,
    pub(crate) number: u64,
    /// The batch's records, numbered (producer id and sequence) but not yet built: its request
    /// task builds it, so that a CRC or a compression is not computed under the producer's
    /// lock.
    builder: Option<BatchBuilder>,
    /// The built batch, sent and resent as it is.
    bytes: Bytes,
    pub(crate) waiters: Vec<Waiter>,
    /// Its records' bytes in the producer's buffer, given back when it is answered.
    buffered: usize,
    /// Its partition's answers, which it joins in number order.
    pub(crate) answers: Answers,
    pub(crate) done: mpsc::UnboundedSender<Done>,
    /// Whether it was answered for good (delivered, failed, or `acks=none` and sent).
    settled: bool,
}

impl Outgoing {
    pub(crate) fn new(
        key: PartitionKey,
        number: u64,
        builder: BatchBuilder,
        waiters: Vec<Waiter>,
        buffered: usize,
        answers: Answers,
        done: mpsc::UnboundedSender<Done>,
    ) -> Outgoing {
        let (builder, bytes) = (Some(builder), Bytes::new());
        Outgoing { key, number, builder, bytes, waiters, buffered, answers, done, settled: false }
    }

    /// Builds the batch, compressed with `codec`. Its records are numbered already, so if the
    /// codec fails the batch goes uncompressed, with a warning, rather than leave a gap in
    /// its partition's sequence.
    fn build(&mut self, codec: Compression) {
        let Some(builder) = self.builder.take() else { return };
        let (bytes, failed) = builder.build_compressed_or_plain(Offset(0), codec);
        if let Some(err) = failed {
            tracing::warn!(topic = %self.key.0, partition = self.key.1, error = %err, "compression failed: batch sent uncompressed");
        }
        self.bytes = bytes;
    }

    /// Bytes the batch takes in a request (before compression, while not built).
    fn len(&self) -> usize {
        self.builder.as_ref().map_or(self.bytes.len(), BatchBuilder::size)
    }

    /// Answers the batch's records in their partition's turn, and tells the accumulator.
    fn settle(mut self, outcome: Result<Offset>, failed: bool) {
        self.answer(outcome, failed);
    }

    fn answer(&mut self, outcome: Result<Offset>, failed: bool) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let waiters = std::mem::take(&mut self.waiters);
        self.answers.settle(self.number, waiters, self.key.1, outcome);
        let key = std::mem::take(&mut self.key);
        let (number, buffered) = (self.number, self.buffered);
        let _ = self.done.send(Done::Answered { key, number, failed, buffered });
    }
}

impl Drop for Outgoing {
    /// A batch whose request task ended without answering it (a panic, a runtime shutting
    /// down) is answered `Closed`, so that its partition's later batches are not held behind
    /// it and the accumulator does not wait for it.
    fn drop(&mut self) {
        self.answer(Err(ClientError::Closed), true);
    }
}

/// What request tasks tell the accumulator.
pub(crate) enum Done {
    /// A request was answered (or failed): its slot is free. Its batches report separately.
    RequestFinished,
    /// Batch `number` of partition `key` was answered, finally: delivered, or `failed` for
    /// good; its `buffered` bytes are free.
    Answered { key: PartitionKey, number: u64, failed: bool, buffered: usize },
}

/// Batches for one broker gathered during one pass of the accumulator; sent as one request.
/// It holds at most one batch per partition, as in Kafka: the leader answers a partition's
/// entry as a whole, so a second batch behind a refused one would be reported failed
/// although it may be stored, and its fsync would wait for the first one's.
#[derive(Default)]
pub(crate) struct Staged {
    pub(crate) bytes: usize,
    batches: Vec<Outgoing>,
    partitions: HashSet<PartitionKey>,
}

impl Staged {
    pub(crate) fn push(&mut self, outgoing: Outgoing) {
        self.bytes += outgoing.len();
        self.partitions.insert(outgoing.key.clone());
        self.batches.push(outgoing);
    }

    /// Whether a batch of `key` may join: the request holds none of its partition yet and
    /// is below `max_bytes`.
    pub(crate) fn takes(&self, key: &PartitionKey, max_bytes: usize) -> bool {
        self.bytes < max_bytes && !self.partitions.contains(key)
    }
}

/// What starts produce requests, kept outside the producer's lock: a request is spawned after
/// the turn that staged it released the lock, so that nothing it drops (a runtime shutting down
/// drops the task at once, answering its batches `Closed`) runs a callback under the lock.
pub(crate) struct Requests {
    /// The runtime the producer was made in, whatever executor runs `send`.
    pub(crate) runtime: Handle,
    pub(crate) client: Client,
    pub(crate) config: ProducerConfig,
    pub(crate) done: mpsc::UnboundedSender<Done>,
}

/// Tells the accumulator a request is finished when dropped: at its end, and also if its task
/// panics or is dropped unpolled, or its slot would never free and flush would wait forever.
struct Finished(mpsc::UnboundedSender<Done>);

impl Drop for Finished {
    fn drop(&mut self) {
        let _ = self.0.send(Done::RequestFinished);
    }
}

impl Requests {
    /// Sends `staged` to the broker at `address` and reports to `done`. Partitions that failed
    /// retriably are retried together, to their leaders as last known, with backoff; the
    /// request keeps its slot until every batch is answered for good, so retries stay within
    /// `max_requests_in_flight`.
    pub(crate) fn spawn(&self, address: String, staged: Staged) {
        let (client, config) = (self.client.clone(), self.config.clone());
        let finished = Finished(self.done.clone());
        self.runtime.spawn(async move {
            let _finished = finished;
            let mut batches = staged.batches;
            for batch in &mut batches {
                batch.build(config.compression);
            }
            if config.acks == Acks::None {
                // Fire and forget for the caller, but the request still completes before the
                // partitions' next ones start (order) and before flush returns (no loss).
                for batch in &mut batches {
                    for waiter in batch.waiters.drain(..) {
                        waiter.answer(Ok(Delivered { partition: batch.key.1, offset: None }));
                    }
                }
            }
            let mut targets = vec![(address, batches)];
            let mut attempt = 0;
            loop {
                let mut retry = Vec::new();
                for (address, batches) in targets {
                    retry.extend(send_once(&client, &config, &address, batches, attempt).await);
                }
                if retry.is_empty() {
                    break;
                }
                tokio::time::sleep(backoff(&config, attempt)).await;
                attempt += 1;
                let mut by_leader: HashMap<String, Vec<Outgoing>> = HashMap::new();
                for batch in retry {
                    let leader = client.leader_address(&batch.key.0, batch.key.1);
                    by_leader.entry(leader).or_default().push(batch);
                }
                targets = by_leader.into_iter().collect();
            }
        });
    }
}

/// Sends one request of `batches` (one per partition) to `address` and settles each batch
/// that is answered for good; returns those to retry.
async fn send_once(
    client: &Client,
    config: &ProducerConfig,
    address: &str,
    batches: Vec<Outgoing>,
    attempt: u32,
) -> Vec<Outgoing> {
    let request = ProduceManyRequest {
        acks: config.acks.to_proto() as i32,
        partitions: batches
            .iter()
            .map(|b| PartitionBatches {
                topic: b.key.0.clone(),
                partition: b.key.1,
                batches: vec![b.bytes.clone()],
            })
            .collect(),
    };
    let sent = tokio::time::timeout(
        config.request_timeout,
        unary_frames::produce_many(client.channel_at(address), &request, MAX_RESPONSE_BYTES),
    )
    .await
    .unwrap_or_else(|_| Err(Status::unavailable("produce request timed out")));
    let response = match sent {
        Ok(response) => response,
        Err(status) => {
            // The whole request failed: each topic's leaders are looked up once.
            let mut learnt = HashSet::new();
            let mut retry = Vec::new();
            for batch in batches {
                if learnt.insert(batch.key.0.clone()) {
                    client.partition_failed(&batch.key.0, batch.key.1, &status).await;
                }
                retry.extend(failed(config, batch, status.clone(), attempt));
            }
            return retry;
        }
    };
    let mut replies = response.partitions.into_iter();
    let mut retry = Vec::new();
    for batch in batches {
        let status = match replies.next() {
            Some(answer) if answer.code == Code::Ok as i32 => {
                let base = answer.batches.first().map(|b| Offset(b.base_offset));
                let outcome = base.ok_or_else(|| {
                    ClientError::InvalidArgument("produce answer without offsets".into())
                });
                let failed = outcome.is_err();
                batch.settle(outcome, failed);
                continue;
            }
            Some(answer) => Status::new(Code::from(answer.code), answer.message),
            None => Status::internal("the produce answer lacks this partition"),
        };
        client.partition_failed(&batch.key.0, batch.key.1, &status).await;
        retry.extend(failed(config, batch, status, attempt));
    }
    retry
}

/// A batch refused with `status` on attempt `attempt`: returned to be retried, or settled as
/// failed (an `acks=none` batch is only logged: its records were answered when sent).
fn failed(
    config: &ProducerConfig,
    batch: Outgoing,
    status: Status,
    attempt: u32,
) -> Option<Outgoing> {
    let err = ClientError::from(status);
    if config.acks == Acks::None {
        tracing::warn!(topic = %batch.key.0, partition = batch.key.1, error = %err, "acks=none batch was refused");
        // Its records were answered when it was sent; later batches must not wait for it.
        batch.settle(Err(err), false);
        return None;
    }
    if err.is_retriable() && attempt < config.retries {
        tracing::debug!(topic = %batch.key.0, partition = batch.key.1, attempt, error = %err, "retrying produce");
        return Some(batch);
    }
    batch.settle(Err(err), true);
    None
}

/// Wait before retry number `attempt` (0: the first): doubles each time, up to a quarter
/// second (a failover is noticed within that of the new leader's election).
fn backoff(config: &ProducerConfig, attempt: u32) -> Duration {
    (config.retry_backoff * 2u32.saturating_pow(attempt)).min(Duration::from_millis(250))
}
