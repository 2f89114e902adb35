//! The producer's network side: one ProduceMany request per broker, carrying the batches of
//! every partition it leads that had one ready; per-partition answers; and retries, alone, of
//! the partitions that failed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use strata_proto::{PartitionBatches, ProduceManyRequest};
use strata_record::Offset;
use tokio::sync::mpsc;
use tonic::{Code, Status};

use crate::producer::{Acks, ProducerConfig, Waiter};
use crate::record::Delivered;
use crate::{Client, ClientError, Result};

pub(crate) type PartitionKey = (String, u32);

/// A built batch on its way, numbered in its partition's queue.
pub(crate) struct Outgoing {
    pub(crate) key: PartitionKey,
    pub(crate) number: u64,
    pub(crate) bytes: Bytes,
    pub(crate) waiters: Vec<Waiter>,
    /// Its partition's answers, which it joins in number order.
    pub(crate) answers: Answers,
}

/// One partition's batch answers, shared by the requests that carry its batches.
pub(crate) type Answers = Arc<Mutex<InOrder>>;

/// Answers a partition's batches in the order they were sent, whatever order their requests
/// come back in (pipelined batches travel in different requests, answered on different
/// tasks): so a partition's futures resolve, and its callbacks run, in offset order, as
/// Kafka's do. A batch answered early is held until the ones before it are answered; the
/// leader writes them in order anyway, so it is rarely held for long.
#[derive(Default)]
pub(crate) struct InOrder {
    /// The number of the next batch to answer.
    next: u64,
    held: BTreeMap<u64, (Vec<Waiter>, u32, Result<Offset>)>,
}

impl InOrder {
    /// Batch `number` of `partition` was answered with `outcome`: its waiters, and those of
    /// the held batches right after it, are answered now (under the partition's lock, so
    /// that two tasks never answer one partition's batches at once), or it is held.
    fn settle(
        &mut self,
        number: u64,
        waiters: Vec<Waiter>,
        partition: u32,
        outcome: Result<Offset>,
    ) {
        if number != self.next {
            self.held.insert(number, (waiters, partition, outcome));
            return;
        }
        resolve(waiters, partition, outcome);
        self.next += 1;
        while let Some((waiters, partition, outcome)) = self.held.remove(&self.next) {
            resolve(waiters, partition, outcome);
            self.next += 1;
        }
    }
}

fn settle_in_order(
    answers: &Answers,
    number: u64,
    waiters: Vec<Waiter>,
    partition: u32,
    outcome: Result<Offset>,
) {
    let mut answers = answers.lock().unwrap_or_else(|e| e.into_inner());
    answers.settle(number, waiters, partition, outcome);
}

/// What request tasks tell the accumulator.
pub(crate) enum Done {
    /// A request was answered (or failed): its slot is free. Its batches report separately.
    RequestFinished,
    /// Batch `number` of partition `key` was answered, finally: delivered, or `failed` for
    /// good.
    Answered { key: PartitionKey, number: u64, failed: bool },
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
        self.bytes += outgoing.bytes.len();
        self.partitions.insert(outgoing.key.clone());
        self.batches.push(outgoing);
    }

    /// Whether a batch of `key` may join: the request holds none of its partition yet and
    /// is below `max_bytes`.
    pub(crate) fn takes(&self, key: &PartitionKey, max_bytes: usize) -> bool {
        self.bytes < max_bytes && !self.partitions.contains(key)
    }
}

/// Sends `staged` to the broker at `address` and reports to `done`. Partitions that failed
/// retriably are retried together, to their leaders as last known, with backoff; the request
/// keeps its slot until every batch is answered for good, so retries stay within
/// `max_requests_in_flight`.
pub(crate) fn spawn_request(
    client: &Client,
    config: &ProducerConfig,
    address: String,
    staged: Staged,
    done: &mpsc::UnboundedSender<Done>,
) {
    let (client, config, done) = (client.clone(), config.clone(), done.clone());
    tokio::spawn(async move {
        let mut batches = staged.batches;
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
                retry.extend(send_once(&client, &config, &address, batches, attempt, &done).await);
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
        let _ = done.send(Done::RequestFinished);
    });
}

/// Sends one request of `batches` (one per partition) to `address` and settles each batch
/// that is answered for good; returns those to retry.
async fn send_once(
    client: &Client,
    config: &ProducerConfig,
    address: &str,
    batches: Vec<Outgoing>,
    attempt: u32,
    done: &mpsc::UnboundedSender<Done>,
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
        client.broker_at(address).produce_many(request),
    )
    .await
    .unwrap_or_else(|_| Err(Status::unavailable("produce request timed out")));
    let response = match sent {
        Ok(response) => response.into_inner(),
        Err(status) => {
            // The whole request failed: each topic's leaders are looked up once.
            let mut learnt = HashSet::new();
            let mut retry = Vec::new();
            for batch in batches {
                if learnt.insert(batch.key.0.clone()) {
                    client.partition_failed(&batch.key.0, batch.key.1, &status).await;
                }
                retry.extend(failed(config, batch, status.clone(), attempt, done));
            }
            return retry;
        }
    };
    let mut answers = response.partitions.into_iter();
    let mut retry = Vec::new();
    for batch in batches {
        let status = match answers.next() {
            Some(answer) if answer.code == Code::Ok as i32 => {
                let base = answer.batches.first().map(|b| Offset(b.base_offset));
                let outcome = base.ok_or_else(|| {
                    ClientError::InvalidArgument("produce answer without offsets".into())
                });
                settle(batch, outcome, done);
                continue;
            }
            Some(answer) => Status::new(Code::from(answer.code), answer.message),
            None => Status::internal("the produce answer lacks this partition"),
        };
        client.partition_failed(&batch.key.0, batch.key.1, &status).await;
        retry.extend(failed(config, batch, status, attempt, done));
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
    done: &mpsc::UnboundedSender<Done>,
) -> Option<Outgoing> {
    let err = ClientError::from(status);
    if config.acks == Acks::None {
        tracing::warn!(topic = %batch.key.0, partition = batch.key.1, error = %err, "acks=none batch was refused");
        // Its records were answered when it was sent; later batches must not wait for it.
        settle_in_order(&batch.answers, batch.number, Vec::new(), batch.key.1, Err(err));
        let _ = done.send(Done::Answered { key: batch.key, number: batch.number, failed: false });
        return None;
    }
    if err.is_retriable() && attempt < config.retries {
        tracing::debug!(topic = %batch.key.0, partition = batch.key.1, attempt, error = %err, "retrying produce");
        return Some(batch);
    }
    settle(batch, Err(err), done);
    None
}

/// Answers a batch's records (in their partition's order) and tells the accumulator.
fn settle(batch: Outgoing, outcome: Result<Offset>, done: &mpsc::UnboundedSender<Done>) {
    let failed = outcome.is_err();
    settle_in_order(&batch.answers, batch.number, batch.waiters, batch.key.1, outcome);
    let _ = done.send(Done::Answered { key: batch.key, number: batch.number, failed });
}

/// Answers each record's future or callback: record `i` of a batch stored at `base` got offset
/// `base + i`.
fn resolve(waiters: Vec<Waiter>, partition: u32, outcome: Result<Offset>) {
    for (i, waiter) in waiters.into_iter().enumerate() {
        let delivered =
            outcome.clone().map(|base| Delivered { partition, offset: Some(base.plus(i as u64)) });
        waiter.answer(delivered);
    }
}

/// Wait before retry number `attempt` (0: the first): doubles each time, up to a quarter
/// second (a failover is noticed within that of the new leader's election).
fn backoff(config: &ProducerConfig, attempt: u32) -> Duration {
    (config.retry_backoff * 2u32.saturating_pow(attempt)).min(Duration::from_millis(250))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_answered_early_waits_for_the_ones_before_it() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let waiter = |tag: &'static str| {
            let order = order.clone();
            Waiter::callback(move |outcome| {
                order.lock().unwrap().push((tag, outcome.ok().and_then(|d| d.offset)))
            })
        };
        let mut answers = InOrder::default();
        answers.settle(2, vec![waiter("third")], 0, Ok(Offset(20)));
        answers.settle(1, vec![waiter("second"), waiter("second+1")], 0, Ok(Offset(10)));
        assert!(order.lock().unwrap().is_empty(), "held until batch 0 is answered");
        answers.settle(0, vec![waiter("first")], 0, Err(ClientError::Closed));
        let seen = order.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                ("first", None),
                ("second", Some(Offset(10))),
                ("second+1", Some(Offset(11))),
                ("third", Some(Offset(20)))
            ]
        );
        answers.settle(3, vec![waiter("fourth")], 0, Ok(Offset(21)));
        assert_eq!(order.lock().unwrap().len(), 5, "in turn: answered at once");
    }
}
