//! The producer's network side: one ProduceMany request per broker, carrying the batches of
//! every partition it leads that had one ready; per-partition answers; and retries, alone, of
//! the partitions that failed.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use strata_proto::{PartitionBatches, PartitionProduced, ProduceManyRequest, ProduceRequest};
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
#[derive(Default)]
pub(crate) struct Staged {
    pub(crate) bytes: usize,
    batches: Vec<Outgoing>,
}

impl Staged {
    pub(crate) fn push(&mut self, outgoing: Outgoing) {
        self.bytes += outgoing.bytes.len();
        self.batches.push(outgoing);
    }

    /// The batches by partition, partitions in the order they were staged and each one's
    /// batches in order: the request names a partition once.
    fn by_partition(self) -> Vec<(PartitionKey, Vec<Outgoing>)> {
        let mut entries: Vec<(PartitionKey, Vec<Outgoing>)> = Vec::new();
        let mut index: HashMap<PartitionKey, usize> = HashMap::new();
        for outgoing in self.batches {
            match index.get(&outgoing.key) {
                Some(&i) => entries[i].1.push(outgoing),
                None => {
                    index.insert(outgoing.key.clone(), entries.len());
                    entries.push((outgoing.key.clone(), vec![outgoing]));
                }
            }
        }
        entries
    }
}

/// Sends `staged` to the broker at `address` and reports to `done`.
pub(crate) fn spawn_request(
    client: Client,
    config: ProducerConfig,
    address: String,
    staged: Staged,
    done: mpsc::UnboundedSender<Done>,
) {
    tokio::spawn(async move {
        let entries = staged.by_partition();
        let request = ProduceManyRequest {
            acks: config.acks.to_proto() as i32,
            partitions: entries
                .iter()
                .map(|((topic, partition), batches)| PartitionBatches {
                    topic: topic.clone(),
                    partition: *partition,
                    batches: batches.iter().map(|b| b.bytes.clone()).collect(),
                })
                .collect(),
        };
        let mut entries = entries;
        if config.acks == Acks::None {
            // Fire and forget for the caller, but the request still completes before the
            // partitions' next ones start (order) and before flush returns (no loss).
            for (key, batches) in &mut entries {
                for batch in batches.iter_mut() {
                    for waiter in batch.waiters.drain(..) {
                        let _ = waiter.send(Ok(Delivered { partition: key.1, offset: None }));
                    }
                }
            }
        }
        let sent = tokio::time::timeout(
            config.request_timeout,
            client.broker_at(&address).produce_many(request),
        )
        .await
        .unwrap_or_else(|_| Err(Status::unavailable("produce request timed out")));
        let _ = done.send(Done::RequestFinished);
        let answers: Vec<Option<PartitionProduced>> = match sent {
            Ok(response) => {
                let mut answers = response.into_inner().partitions.into_iter();
                entries.iter().map(|_| answers.next()).collect()
            }
            Err(status) => {
                // The whole request failed: each topic's leaders are looked up once.
                let mut refreshed = HashSet::new();
                for ((topic, partition), _) in &entries {
                    if refreshed.insert(topic.clone()) {
                        client.partition_failed(topic, *partition, &status).await;
                    }
                }
                let failures = entries.iter().map(|_| Some(failed_answer(&status))).collect();
                return settle(&client, &config, entries, failures, &done, false).await;
            }
        };
        settle(&client, &config, entries, answers, &done, true).await;
    });
}

/// A partition's answer standing for a failure of the whole request.
fn failed_answer(status: &Status) -> PartitionProduced {
    PartitionProduced {
        code: status.code() as i32,
        message: status.message().to_owned(),
        ..PartitionProduced::default()
    }
}

/// Resolves each partition's waiters from its answer; partitions that failed retriably are
/// retried alone. `learn` says whether failures still have to be reported to the client's
/// leader cache (they were, for a failure of the whole request).
async fn settle(
    client: &Client,
    config: &ProducerConfig,
    entries: Vec<(PartitionKey, Vec<Outgoing>)>,
    answers: Vec<Option<PartitionProduced>>,
    done: &mpsc::UnboundedSender<Done>,
    learn: bool,
) {
    for ((key, batches), answer) in entries.into_iter().zip(answers) {
        let answer = answer.unwrap_or_else(|| PartitionProduced {
            code: Code::Internal as i32,
            message: "the produce answer has no result for this partition".into(),
            ..PartitionProduced::default()
        });
        if answer.code == Code::Ok as i32 {
            for (i, batch) in batches.into_iter().enumerate() {
                let base = answer.batches.get(i).map(|b| Offset(b.base_offset));
                let outcome = base.ok_or_else(|| {
                    ClientError::InvalidArgument("produce answer without offsets".into())
                });
                let failed = outcome.is_err();
                resolve(batch.waiters, key.1, outcome);
                let _ =
                    done.send(Done::Answered { key: key.clone(), number: batch.number, failed });
            }
            continue;
        }
        let status = Status::new(Code::from(answer.code), answer.message);
        if learn {
            client.partition_failed(&key.0, key.1, &status).await;
        }
        let err = ClientError::from(status);
        for batch in batches {
            if config.acks == Acks::None {
                tracing::warn!(topic = %key.0, partition = key.1, error = %err, "acks=none batch was refused");
                let _ = done.send(Done::Answered {
                    key: key.clone(),
                    number: batch.number,
                    failed: false,
                });
            } else if err.is_retriable() && config.retries > 0 {
                let (client, config, done, key) =
                    (client.clone(), config.clone(), done.clone(), key.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(backoff(&config, 0)).await;
                    let outcome =
                        produce_with_retries(&client, &config, &key.0, key.1, batch.bytes, 1).await;
                    let failed = outcome.is_err();
                    resolve(batch.waiters, key.1, outcome);
                    let _ = done.send(Done::Answered { key, number: batch.number, failed });
                });
            } else {
                resolve(batch.waiters, key.1, Err(err.clone()));
                let _ = done.send(Done::Answered {
                    key: key.clone(),
                    number: batch.number,
                    failed: true,
                });
            }
        }
    }
}

/// Answers each record's future: record `i` of a batch stored at `base` got offset `base + i`.
fn resolve(waiters: Vec<Waiter>, partition: u32, outcome: Result<Offset>) {
    for (i, waiter) in waiters.into_iter().enumerate() {
        let delivered =
            outcome.clone().map(|base| Delivered { partition, offset: Some(base.plus(i as u64)) });
        let _ = waiter.send(delivered);
    }
}

/// Wait before retry number `attempt` (0: the first): doubles each time, up to a quarter
/// second (a failover is noticed within that of the new leader's election).
fn backoff(config: &ProducerConfig, attempt: u32) -> Duration {
    (config.retry_backoff * 2u32.saturating_pow(attempt)).min(Duration::from_millis(250))
}

/// Sends one partition's batch alone, retrying retriable failures, from attempt `attempt`
/// (0: the first send).
async fn produce_with_retries(
    client: &Client,
    config: &ProducerConfig,
    topic: &str,
    partition: u32,
    batch: Bytes,
    mut attempt: u32,
) -> Result<Offset> {
    loop {
        let request = ProduceRequest {
            topic: topic.to_owned(),
            partition,
            acks: config.acks.to_proto() as i32,
            batches: vec![batch.clone()],
        };
        let sent = tokio::time::timeout(
            config.request_timeout,
            client.broker_for(topic, partition).produce(request),
        )
        .await
        .unwrap_or_else(|_| Err(Status::unavailable("produce request timed out")));
        match sent {
            Ok(response) => {
                let response = response.into_inner();
                return response.batches.first().map(|b| Offset(b.base_offset)).ok_or_else(|| {
                    ClientError::InvalidArgument("produce answer without offsets".into())
                });
            }
            Err(status) => {
                client.partition_failed(topic, partition, &status).await;
                let err = ClientError::from(status);
                if !err.is_retriable() || attempt >= config.retries {
                    return Err(err);
                }
                tracing::debug!(topic, partition, attempt, error = %err, "retrying produce");
                tokio::time::sleep(backoff(config, attempt)).await;
                attempt += 1;
            }
        }
    }
}
