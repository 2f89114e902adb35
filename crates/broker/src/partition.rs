//! One partition of a topic: its log, its high watermark, and the wake-ups long-polling
//! fetches wait on.
//!
//! This is the seam replication plugs into: services call `append`, `fetch`, `list_offset`
//! and never touch the log, so a Raft-replicated log can take the local one's place here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_raft::{PartitionReplica, ReplicaError, SequenceCheck};
use strata_record::{BatchHeader, Offset, RecordBatch, Timestamp, TopicName};
use strata_storage::{AppendInfo, Durability, Log, LogConfig};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{BrokerError, Result};

/// What a fetch found.
#[derive(Debug)]
pub struct Fetched {
    pub batches: Vec<Bytes>,
    pub high_watermark: Offset,
    pub log_start: Offset,
}

/// What validating a produce request led to.
enum Validated {
    /// Unreplicated: the batches are in the log.
    Appended(Vec<AppendInfo>),
    /// Replicated: the checked batches' headers, for the leader to sequence and propose.
    Headers(Vec<BatchHeader>),
}

#[derive(Debug)]
pub struct Partition {
    topic: TopicName,
    id: u32,
    log: Arc<Log>,
    /// Last published high watermark; fetches waiting for data watch it. On a replicated
    /// partition its state machine publishes here as entries commit.
    high_watermark: Arc<watch::Sender<u64>>,
    /// The partition's Raft group, in a cluster; `None` on a single node, where the log is
    /// written directly.
    replica: Option<PartitionReplica>,
    /// Held while a replicated batch is checked against producer state and committed.
    sequencing: tokio::sync::Mutex<()>,
    /// Whether every append is fsynced (the broker-wide setting; topic changes keep it), read
    /// once here rather than from the log's config on every fetch.
    fsync_every_append: bool,
}

impl Partition {
    /// Opens (creating if needed) the partition's log in `dir`.
    pub fn open(topic: TopicName, id: u32, dir: &Path, config: LogConfig) -> Result<Partition> {
        let fsync_every_append = config.durability == Durability::EveryAppend;
        let log = Arc::new(Log::open(dir, config)?);
        let (high_watermark, _) = watch::channel(0);
        let partition = Partition {
            topic,
            id,
            log,
            high_watermark: Arc::new(high_watermark),
            replica: None,
            sequencing: Default::default(),
            fsync_every_append,
        };
        partition.publish_high_watermark();
        Ok(partition)
    }

    /// Opens one replica of a replicated partition: its log in `dir`, its Raft files in
    /// `raft_dir`, its group started on `node`.
    pub async fn open_replicated(
        topic: TopicName,
        id: u32,
        dir: &Path,
        raft_dir: &Path,
        config: LogConfig,
        node: &strata_raft::RaftNode,
        assignment: &strata_raft::PartitionAssignment,
    ) -> Result<Partition> {
        let log = Arc::new(Log::open(dir, strata_raft::replicated_log_config(config))?);
        let (high_watermark, _) = watch::channel(0);
        let high_watermark = Arc::new(high_watermark);
        let replica = node
            .open_partition(
                assignment.group_id,
                log.clone(),
                raft_dir,
                assignment,
                high_watermark.clone(),
            )
            .await
            .map_err(|e| BrokerError::Replication(e.to_string()))?;
        Ok(Partition {
            topic,
            id,
            log,
            high_watermark,
            replica: Some(replica),
            sequencing: Default::default(),
            fsync_every_append: true,
        })
    }

    /// The partition's Raft group, in a cluster.
    pub fn replica(&self) -> Option<&PartitionReplica> {
        self.replica.as_ref()
    }

    /// Node id of the partition's leader: this node on a single node; in a cluster, the leader
    /// this replica knows of (0: none known).
    pub fn leader(&self, local: u64) -> u64 {
        match &self.replica {
            Some(replica) => replica.leader().unwrap_or(0),
            None => local,
        }
    }

    /// Retention of a replicated partition: the segments retention would delete go through
    /// the Raft group's snapshot and purge (see `PartitionReplica::apply_retention`). Nothing
    /// on a single node, where the maintenance pass deletes segments directly.
    pub async fn apply_replicated_retention(&self, now: Timestamp) -> Result<()> {
        let Some(replica) = &self.replica else { return Ok(()) };
        let Some(point) = self.log.retention_point(now, self.high_watermark()) else {
            return Ok(());
        };
        if replica.apply_retention(point.0).await.map_err(|e| self.not_leader(e))? {
            tracing::info!(
                topic = %self.topic, partition = self.id, log_start = self.log.start_offset().0,
                "retention purged the replicated log"
            );
        }
        Ok(())
    }

    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Offset after the last record consumers may see: on one node, the last durable one (or
    /// the last appended one when the log is not fsynced on every append).
    pub fn high_watermark(&self) -> Offset {
        if let Some(replica) = &self.replica {
            return Offset(replica.high_watermark());
        }
        if self.fsync_every_append { self.log.durable_end_offset() } else { self.log.end_offset() }
    }

    pub fn log_start(&self) -> Offset {
        self.log.start_offset()
    }

    fn publish_high_watermark(&self) {
        let hw = self.high_watermark().0;
        self.high_watermark.send_if_modified(|current| {
            let moved = hw != *current;
            *current = hw;
            moved
        });
    }

    /// Validates every batch (size, CRC, record framing) before any is appended, then appends
    /// them in order. Returns where each landed.
    pub async fn append(self: &Arc<Self>, batches: Vec<Bytes>) -> Result<Vec<AppendInfo>> {
        if let Some(replica) = &self.replica
            && !replica.is_leader()
        {
            return Err(self.not_leader(ReplicaError::NotLeader { leader: None }));
        }
        let limit = self.log.config().max_batch_bytes;
        if let Some(batch) = batches.iter().find(|b| b.len() > limit) {
            return Err(BrokerError::TooLarge(format!(
                "batch of {} bytes exceeds max.message.bytes {limit} of topic {}",
                batch.len(),
                self.topic
            )));
        }
        // Validation (CRC, framing, bounded decompression) is CPU work: it runs with the
        // append off the async runtime, and the validated batches go to the log as they are,
        // so their CRC is computed once.
        let partition = self.clone();
        // Bytes clones are reference counts: the replicated path proposes the same buffers.
        let batches_copy = batches.clone();
        let validated = tokio::task::spawn_blocking(move || {
            let mut checked = Vec::with_capacity(batches.len());
            for (index, batch) in batches.iter().enumerate() {
                let valid = RecordBatch::new(batch).and_then(|b| b.validate_records().map(|()| b));
                checked.push(valid.map_err(|err| {
                    BrokerError::InvalidArgument(format!(
                        "batch #{index} of the request is invalid: {err}"
                    ))
                })?);
            }
            if partition.replica.is_some() {
                // Replicated: the headers (checked above) are all the leader needs to decide.
                return Ok(Validated::Headers(checked.iter().map(|b| *b.header()).collect()));
            }
            let mut infos = Vec::with_capacity(checked.len());
            for batch in &checked {
                infos.push(partition.log.append_checked(batch)?);
            }
            Ok::<_, BrokerError>(Validated::Appended(infos))
        })
        .await
        .map_err(|_| BrokerError::ShuttingDown)?;
        match (validated?, &self.replica) {
            (Validated::Appended(infos), _) => {
                self.publish_high_watermark();
                Ok(infos)
            }
            (Validated::Headers(headers), Some(replica)) => {
                self.append_replicated(replica, batches_copy, headers).await
            }
            (Validated::Headers(_), None) => {
                unreachable!("unreplicated partitions append in place")
            }
        }
    }

    /// Replicates each batch through the partition's Raft group, in order, answering once each
    /// is committed on a majority.
    async fn append_replicated(
        &self,
        replica: &PartitionReplica,
        batches: Vec<Bytes>,
        headers: Vec<BatchHeader>,
    ) -> Result<Vec<AppendInfo>> {
        // Idempotent batches are checked and proposed one at a time per partition, so a
        // retry waits for its original and then finds it applied.
        let idempotent = headers.iter().any(|h| h.producer_id >= 0);
        let _sequenced = if idempotent { Some(self.sequencing.lock().await) } else { None };
        if !replica.is_ready_leader() {
            return Err(if replica.is_leader() {
                BrokerError::Replication(format!(
                    "{}/{}: the new leader is still applying earlier entries; retry",
                    self.topic, self.id
                ))
            } else {
                self.not_leader(ReplicaError::NotLeader { leader: None })
            });
        }
        let mut infos = Vec::with_capacity(batches.len());
        for (batch, header) in batches.into_iter().zip(headers) {
            let max_timestamp = header.max_timestamp();
            if header.producer_id >= 0 {
                match replica.check_sequence(header.producer_id, header.base_sequence) {
                    SequenceCheck::New => {}
                    SequenceCheck::Duplicate(appended) => {
                        tracing::debug!(topic = %self.topic, partition = self.id, producer = header.producer_id, sequence = header.base_sequence, "duplicate batch answered from producer state");
                        infos.push(AppendInfo {
                            base_offset: Offset(appended.base_offset),
                            last_offset: Offset(appended.last_offset),
                            max_timestamp,
                        });
                        continue;
                    }
                    SequenceCheck::OutOfOrder { expected } => {
                        return Err(BrokerError::InvalidArgument(format!(
                            "producer {} sent sequence {} to {}/{}; expected {expected}",
                            header.producer_id, header.base_sequence, self.topic, self.id
                        )));
                    }
                }
            }
            let appended = replica.propose(batch).await.map_err(|e| self.not_leader(e))?;
            infos.push(AppendInfo {
                base_offset: Offset(appended.base_offset),
                last_offset: Offset(appended.last_offset),
                max_timestamp,
            });
        }
        Ok(infos)
    }

    fn not_leader(&self, err: ReplicaError) -> BrokerError {
        match err {
            ReplicaError::NotLeader { leader } => {
                let leader = leader.or_else(|| {
                    let replica = self.replica.as_ref()?;
                    let metrics = replica.metrics();
                    let id = metrics.current_leader?;
                    let addr =
                        metrics.membership_config.nodes().find(|(n, _)| **n == id)?.1.addr.clone();
                    Some((id, addr))
                });
                BrokerError::NotLeader { topic: self.topic.to_string(), partition: self.id, leader }
            }
            other => BrokerError::Replication(other.to_string()),
        }
    }

    fn check_offset(&self, offset: Offset, high_watermark: Offset) -> Result<()> {
        let start = self.log_start();
        // A replica's high watermark can trail what consumers already saw (a new leader
        // learns the commit point from its first entry): offsets up to its log end are
        // waited for, not refused.
        let end = match self.replica {
            Some(_) => high_watermark.max(self.log.end_offset()),
            None => high_watermark,
        };
        if offset < start || offset > end {
            return Err(BrokerError::OffsetOutOfRange {
                topic: self.topic.to_string(),
                partition: self.id,
                offset: offset.0,
                start: start.0,
                end: end.0,
            });
        }
        Ok(())
    }

    /// Long-polling read: returns once at least `min_bytes` of committed batches from `offset`
    /// are available, or when `max_wait` has passed with whatever there is.
    pub async fn fetch(
        &self,
        offset: Offset,
        max_bytes: usize,
        min_bytes: usize,
        max_wait: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Fetched> {
        let deadline = Instant::now() + max_wait;
        let mut changes = self.high_watermark.subscribe();
        loop {
            changes.borrow_and_update();
            let high_watermark = self.high_watermark();
            self.check_offset(offset, high_watermark)?;
            let batches = if offset < high_watermark {
                self.log.read_until(offset, high_watermark, max_bytes)?
            } else {
                Vec::new()
            };
            let bytes: usize = batches.iter().map(Bytes::len).sum();
            let expired = Instant::now() >= deadline || shutdown.is_cancelled();
            if (bytes > 0 && bytes >= min_bytes) || expired {
                return Ok(Fetched { batches, high_watermark, log_start: self.log_start() });
            }
            // Woken by the next append, or by the deadline or shutdown for a last look.
            tokio::select! {
                _ = tokio::time::timeout_at(deadline, changes.changed()) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// Closes the log cleanly (flush, clean-shutdown marker) once nothing else holds it.
    pub fn close(self) -> Result<()> {
        let Partition { log, replica, .. } = self;
        drop(replica);
        match Arc::try_unwrap(log) {
            Ok(log) => Ok(log.close()?),
            Err(_) => {
                tracing::warn!(
                    "partition log still shared at close; it will be recovered on start"
                );
                Ok(())
            }
        }
    }

    /// Timestamp of the record at `offset`, if it is readable (used for message age).
    pub fn record_timestamp(&self, offset: Offset) -> Option<i64> {
        let batches = self.log.read(offset, 1).ok()?;
        let batch = RecordBatch::new(batches.first()?).ok()?;
        let section = batch.records_section(strata_record::DEFAULT_MAX_DECOMPRESSED).ok()?;
        let mut records = batch.records_in(&section).ok()?;
        records.find_map(|r| r.ok().filter(|r| r.offset() >= offset).map(|r| r.timestamp().0))
    }

    /// The oldest record a group with `committed` has not consumed, if any: the committed
    /// offset, or the log start when retention already passed it.
    pub fn first_unconsumed(&self, committed: u64) -> Option<Offset> {
        let oldest = committed.max(self.log_start().0);
        (oldest < self.high_watermark().0).then_some(Offset(oldest))
    }

    /// Earliest, latest, or the first offset at or after a timestamp (latest if none).
    pub async fn offset_for_time(self: &Arc<Self>, timestamp: Timestamp) -> Result<Offset> {
        let partition = self.clone();
        let found = tokio::task::spawn_blocking(move || partition.log.offset_for_time(timestamp))
            .await
            .map_err(|_| BrokerError::ShuttingDown)??;
        let high_watermark = self.high_watermark();
        Ok(found.filter(|&o| o < high_watermark).unwrap_or(high_watermark))
    }
}
