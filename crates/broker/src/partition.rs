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
use strata_storage::{AppendInfo, Durability, Log, LogConfig, Runs};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{BrokerError, Result};
use crate::sequencer::{Sequencer, Turn};

/// What a fetch found.
#[derive(Debug)]
pub struct Fetched {
    pub batches: Vec<Bytes>,
    /// The same batches, those that follow each other in one segment as one slice of its map
    /// (for readers that take runs: `FetchRequest.runs`).
    pub runs: Vec<Bytes>,
    pub high_watermark: Offset,
    pub log_start: Offset,
}

/// What validating a produce request led to.
enum Validated {
    /// Unreplicated and not idempotent: the batches are in the log.
    Appended(Vec<AppendInfo>),
    /// The checked batches' headers: to sequence (idempotent batches) and to propose
    /// (replicated ones).
    Headers(Vec<BatchHeader>),
}

/// How long a batch that arrived ahead of its producer's earlier ones waits for them (they are
/// in flight on other requests, or being retried) before it is refused as out of order.
const SEQUENCE_WAIT: Duration = Duration::from_secs(2);

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
    /// Held while an idempotent batch is checked against its producer's sequence and written
    /// or proposed (not while it is fsynced or committed): the order of the log.
    sequencing: Arc<tokio::sync::Mutex<()>>,
    /// Each idempotent producer's next sequence on this leader, and its last batches.
    sequencer: Sequencer,
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
            sequencer: Sequencer::default(),
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
            sequencer: Sequencer::default(),
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

    /// Publishes the log's end as the high watermark again, after something appended to the
    /// log behind the partition's back (a write-ahead replay, before the partition serves).
    pub(crate) fn refresh_high_watermark(&self) {
        self.publish_high_watermark();
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
        let headers = if validates_inline(&batches) {
            // A small uncompressed request is checked right here: its CRC and framing cost a
            // few microseconds, less than a trip to the blocking pool and back.
            let headers = check_batches(&batches)?;
            if self.replica.is_none() && headers.iter().all(|h| h.producer_id < 0) {
                return self.append_unordered(batches, headers).await;
            }
            headers
        } else {
            match self.validate_off_runtime(batches.clone()).await? {
                Validated::Appended(infos) => {
                    self.wait_shared_fsync(infos.last()).await?;
                    self.publish_high_watermark();
                    return Ok(infos);
                }
                Validated::Headers(headers) => headers,
            }
        };
        let mut infos = Vec::with_capacity(headers.len());
        for (batch, header) in batches.into_iter().zip(headers) {
            let info = if header.producer_id >= 0 {
                self.append_in_sequence(batch, header).await?
            } else {
                self.append_unsequenced(batch, header).await?
            };
            infos.push(info);
        }
        Ok(infos)
    }

    /// Validation (CRC, framing, bounded decompression) on the blocking pool, for requests
    /// too large or compressed to check on the async runtime. The validated batches go to the
    /// log as they are, so their CRC is computed once. Batches without a producer id on a
    /// single node are appended right there; the others are ordered by their producer's
    /// sequence (or proposed) after.
    async fn validate_off_runtime(self: &Arc<Self>, batches: Vec<Bytes>) -> Result<Validated> {
        let partition = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut checked = Vec::with_capacity(batches.len());
            for (index, batch) in batches.iter().enumerate() {
                checked.push(check_batch(index, batch)?);
            }
            let idempotent = checked.iter().any(|b| b.header().producer_id >= 0);
            if partition.replica.is_some() || idempotent {
                return Ok(Validated::Headers(checked.iter().map(|b| *b.header()).collect()));
            }
            let written = checked.iter().map(|b| (b.as_bytes(), *b.header()));
            Ok::<_, BrokerError>(Validated::Appended(write_durably(&partition.log, written)?))
        })
        .await
        .map_err(|_| BrokerError::ShuttingDown)?
    }

    /// Appends validated batches without a producer id on a single node, in request order,
    /// with one fsync for all of them.
    async fn append_unordered(
        &self,
        batches: Vec<Bytes>,
        headers: Vec<BatchHeader>,
    ) -> Result<Vec<AppendInfo>> {
        let mut infos = Vec::with_capacity(batches.len());
        for (batch, header) in batches.iter().zip(&headers) {
            match self.try_write_inline(batch, *header) {
                Some(written) => infos.push(written?),
                None => break,
            }
        }
        if infos.len() < batches.len() {
            // The rest on the blocking pool, in order.
            let (log, done) = (self.log.clone(), infos.len());
            let rest = tokio::task::spawn_blocking(move || {
                let rest = batches.iter().zip(headers).skip(done);
                write_durably(&log, rest.map(|(b, h)| (&b[..], h)))
            })
            .await
            .map_err(|_| BrokerError::ShuttingDown)??;
            infos.extend(rest);
        }
        self.settle_inline_writes(infos.last()).await?;
        self.publish_high_watermark();
        Ok(infos)
    }

    /// Writes a batch on the async runtime if that is only a copy into the page cache, in
    /// microseconds, less than a trip to the blocking pool and back: a small batch, to a log
    /// whose fsync is the node's sync group (waited for without a thread) or that has none to
    /// do per append (`--fsync never` or `interval:…`), that neither waits for the log's
    /// lock nor rolls a segment. `None`: write it on the blocking pool. See
    /// `docs/decisions.md`, "Small writes on the async runtime".
    fn try_write_inline(&self, batch: &[u8], header: BatchHeader) -> Option<Result<AppendInfo>> {
        if batch.len() > INLINE_WRITE_BYTES || self.log.writer_fsyncs_every_append() {
            return None;
        }
        Some(self.log.try_write_validated(batch, header)?.map_err(Into::into))
    }

    /// The leader's term, for a replicated partition whose leader has applied every earlier
    /// entry (so its producer state is complete); 0 on a single node.
    fn leader_term(&self) -> Result<u64> {
        let Some(replica) = &self.replica else { return Ok(0) };
        if replica.is_ready_leader() {
            return Ok(replica.term());
        }
        Err(if replica.is_leader() {
            BrokerError::Replication(format!(
                "{}/{}: the new leader is still applying earlier entries; retry",
                self.topic, self.id
            ))
        } else {
            self.not_leader(ReplicaError::NotLeader { leader: None })
        })
    }

    /// Appends an idempotent producer's batch in its sequence order. Under the sequencing
    /// lock the batch is checked against what the producer sent before and, if it is next,
    /// written (single node) or proposed (replicated); its fsync or commit is awaited after
    /// the lock is released, so the producer's next request is written meanwhile and shares
    /// the fsync. A batch ahead of its predecessors waits for them; a retry of a written
    /// batch is answered with where it landed.
    async fn append_in_sequence(
        self: &Arc<Self>,
        batch: Bytes,
        header: BatchHeader,
    ) -> Result<AppendInfo> {
        let (producer, sequence) = (header.producer_id, header.base_sequence);
        let deadline = Instant::now() + SEQUENCE_WAIT;
        let mut waited_out = false;
        loop {
            let sequenced = self.sequencing.clone().lock_owned().await;
            let term = self.leader_term()?;
            let turn = match self.sequencer.turn(term, producer, sequence) {
                Turn::First => self.first_turn(producer, sequence, &header, waited_out),
                // Older than this leader's window, but the state machine may remember it from
                // an earlier term (its answer was lost in a failover).
                Turn::TooOld => {
                    match self.replica.as_ref().map(|r| r.check_sequence(producer, sequence)) {
                        Some(SequenceCheck::Duplicate(appended)) => {
                            Turn::Written(Some(landed(appended, &header)))
                        }
                        _ => Turn::TooOld,
                    }
                }
                turn => turn,
            };
            match turn {
                Turn::Next | Turn::First => {
                    return self.write_in_turn(sequenced, term, batch, header).await;
                }
                Turn::Ahead => {
                    let earlier_written = self.sequencer.next_write();
                    drop(sequenced);
                    if tokio::time::timeout_at(deadline, earlier_written).await.is_err() {
                        if waited_out {
                            return Err(BrokerError::OutOfSequence(format!(
                                "producer {producer} sent sequence {sequence} to {}/{} but \
                                 its earlier batches did not arrive within {SEQUENCE_WAIT:?}",
                                self.topic, self.id
                            )));
                        }
                        waited_out = true;
                    }
                }
                Turn::Written(Some(info)) => {
                    drop(sequenced);
                    tracing::debug!(topic = %self.topic, partition = self.id, producer, sequence, "retried batch answered from producer state");
                    if self.replica.is_none() {
                        self.make_durable(info).await?;
                    }
                    return Ok(info);
                }
                Turn::Written(None) => {
                    drop(sequenced);
                    return self.await_applied(producer, sequence, &header, deadline).await;
                }
                Turn::TooOld => {
                    return Err(BrokerError::InvalidArgument(format!(
                        "producer {producer} resent sequence {sequence} to {}/{}, older than \
                         the batches remembered for it",
                        self.topic, self.id
                    )));
                }
            }
        }
    }

    /// The turn of a batch from a producer this leader has not written for in its term. A
    /// replicated partition's state machine may know the producer from earlier terms. A
    /// producer known to no one starts at sequence 0; a later batch waits for its
    /// predecessors (they may be on requests still in flight). On a single node it is taken
    /// as it comes once it `waited_out`: its producer's state was lost in a restart. A
    /// replicated partition never loses producer state, so there it is refused.
    fn first_turn(
        &self,
        producer: i64,
        sequence: i32,
        header: &BatchHeader,
        waited_out: bool,
    ) -> Turn {
        let check = match &self.replica {
            Some(replica) => replica.check_sequence(producer, sequence),
            None => SequenceCheck::Unknown,
        };
        match check {
            SequenceCheck::Unknown if sequence == 0 || (waited_out && self.replica.is_none()) => {
                Turn::First
            }
            SequenceCheck::Unknown => Turn::Ahead,
            SequenceCheck::New => Turn::Next,
            SequenceCheck::Duplicate(appended) => Turn::Written(Some(landed(appended, header))),
            SequenceCheck::OutOfOrder { expected } if sequence.wrapping_sub(expected) > 0 => {
                Turn::Ahead
            }
            SequenceCheck::OutOfOrder { .. } => Turn::TooOld,
        }
    }

    /// Writes or proposes the producer's next batch while `sequenced` is held, then releases
    /// it and waits for the batch to be durable (fsynced, or committed on a majority).
    async fn write_in_turn(
        self: &Arc<Self>,
        sequenced: tokio::sync::OwnedMutexGuard<()>,
        term: u64,
        batch: Bytes,
        header: BatchHeader,
    ) -> Result<AppendInfo> {
        let (producer, sequence, records) =
            (header.producer_id, header.base_sequence, header.record_count);
        match &self.replica {
            Some(replica) => {
                let committed = replica.submit(batch).await.map_err(|e| self.not_leader(e))?;
                self.sequencer.written(term, producer, sequence, records, None);
                drop(sequenced);
                let appended = committed.await.map_err(|e| self.not_leader(e))?;
                Ok(landed(appended, &header))
            }
            None => {
                if let Some(written) = self.try_write_inline(&batch, header) {
                    // No await between the write and its record in the sequencer: a written
                    // batch is always known, and its retry answered, even if this request is
                    // dropped.
                    let info = written?;
                    self.sequencer.written(term, producer, sequence, records, Some(info));
                    drop(sequenced);
                    self.settle_inline_writes(Some(&info)).await?;
                    self.publish_high_watermark();
                    return Ok(info);
                }
                // One trip to the blocking pool: the write, its record in the sequencer and
                // the release of the lock, then the fsync outside it. The thread finishes
                // even if this request is dropped (its client gave up), so a written batch is
                // always known and its retry is answered, not written again.
                let partition = self.clone();
                let info = tokio::task::spawn_blocking(move || {
                    let info = partition.log.write_validated(&batch, header)?;
                    partition.sequencer.written(term, producer, sequence, records, Some(info));
                    drop(sequenced);
                    fsync_unless_shared(&partition.log, &info)?;
                    Ok::<_, BrokerError>(info)
                })
                .await
                .map_err(|_| BrokerError::ShuttingDown)??;
                self.wait_shared_fsync(Some(&info)).await?;
                self.publish_high_watermark();
                Ok(info)
            }
        }
    }

    /// Waits for the log's durability setting to cover a written batch (an fsync shared with
    /// the writes around it), then publishes the high watermark.
    async fn make_durable(&self, info: AppendInfo) -> Result<()> {
        if self.log.shares_fsyncs() {
            self.wait_shared_fsync(Some(&info)).await?;
        } else {
            let log = self.log.clone();
            tokio::task::spawn_blocking(move || log.make_durable(&info))
                .await
                .map_err(|_| BrokerError::ShuttingDown)??;
        }
        self.publish_high_watermark();
        Ok(())
    }

    /// After writes on the async runtime ([`Partition::try_write_inline`]), up to `last`:
    /// waits for the sync group's round, or runs on the blocking pool an interval's fsync that
    /// fell due (`--fsync interval:…`: at most that long between fsyncs), or the fsync of a
    /// log whose settings changed to fsync every append meanwhile.
    async fn settle_inline_writes(&self, last: Option<&AppendInfo>) -> Result<()> {
        let fsync_here = |info: &&AppendInfo| {
            self.log.interval_fsync_due(info) || self.log.writer_fsyncs_every_append()
        };
        if let Some(&info) = last.filter(fsync_here) {
            let log = self.log.clone();
            tokio::task::spawn_blocking(move || log.make_durable(&info))
                .await
                .map_err(|_| BrokerError::ShuttingDown)??;
        }
        self.wait_shared_fsync(last).await
    }

    /// For a log in the node's sync group: waits, without holding a thread, for the round
    /// that makes `last` (and every batch before it) durable. Otherwise nothing: the log's own
    /// fsync, if its setting asks for one, already ran where the batch was written
    /// (`fsync_unless_shared`) or after it (`settle_inline_writes`).
    async fn wait_shared_fsync(&self, last: Option<&AppendInfo>) -> Result<()> {
        let Some(last) = last.filter(|_| self.log.shares_fsyncs()) else { return Ok(()) };
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.log.when_durable(last, move |result| {
            let _ = done.send(result);
        });
        Ok(outcome.await.map_err(|_| BrokerError::ShuttingDown)??)
    }

    /// A retry of a batch this leader proposed and has not applied yet: answered once the
    /// state machine applied the original.
    async fn await_applied(
        &self,
        producer: i64,
        sequence: i32,
        header: &BatchHeader,
        deadline: Instant,
    ) -> Result<AppendInfo> {
        let replica = self.replica.as_ref().expect("only replicated leaders defer retries");
        let mut applied = self.high_watermark.subscribe();
        loop {
            applied.borrow_and_update();
            if let SequenceCheck::Duplicate(appended) = replica.check_sequence(producer, sequence) {
                return Ok(landed(appended, header));
            }
            if tokio::time::timeout_at(deadline, applied.changed()).await.is_err() {
                return Err(BrokerError::Replication(format!(
                    "{}/{}: the original of producer {producer}'s resent sequence {sequence} \
                     is not committed yet; retry",
                    self.topic, self.id
                )));
            }
        }
    }

    /// Appends a batch without a producer id that came in a request with idempotent ones (or
    /// to a replicated partition): no order to keep but the request's own. Replicated, it is
    /// proposed and answered once committed; on a single node, written and made durable.
    async fn append_unsequenced(&self, batch: Bytes, header: BatchHeader) -> Result<AppendInfo> {
        match &self.replica {
            Some(replica) => {
                self.leader_term()?;
                let appended = replica.propose(batch).await.map_err(|e| self.not_leader(e))?;
                Ok(landed(appended, &header))
            }
            None => {
                let log = self.log.clone();
                let info = tokio::task::spawn_blocking(move || {
                    let info = log.write_validated(&batch, header)?;
                    fsync_unless_shared(&log, &info)?;
                    Ok::<_, BrokerError>(info)
                })
                .await
                .map_err(|_| BrokerError::ShuttingDown)??;
                self.wait_shared_fsync(Some(&info)).await?;
                self.publish_high_watermark();
                Ok(info)
            }
        }
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

    /// In a cluster the partition's leader serves reads (fetches and offset lookups), as in
    /// Kafka without follower fetching: a follower learns the commit point a round trip after
    /// the leader, so reading there delays every record by that trip. A follower that knows
    /// the leader answers `NotLeader` naming it; one that knows none (an election, or no
    /// majority left) serves what it knows to be committed rather than nothing.
    pub fn check_serves_reads(&self) -> Result<()> {
        match &self.replica {
            Some(replica) if replica.led_elsewhere() => {
                Err(self.not_leader(ReplicaError::NotLeader { leader: None }))
            }
            _ => Ok(()),
        }
    }

    /// Long-polling read: returns once at least `min_bytes` of committed batches from `offset`
    /// are available, or when `max_wait` has passed with whatever there is. Only on the leader
    /// (see [`Partition::check_serves_reads`]).
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
            self.check_serves_reads()?;
            changes.borrow_and_update();
            let high_watermark = self.high_watermark();
            self.check_offset(offset, high_watermark)?;
            let read = if offset < high_watermark {
                self.log.read_runs_until(offset, high_watermark, max_bytes)?
            } else {
                Runs::default()
            };
            let bytes: usize = read.runs.iter().map(Bytes::len).sum();
            let expired = Instant::now() >= deadline || shutdown.is_cancelled();
            if (bytes > 0 && bytes >= min_bytes) || expired {
                let Runs { batches, runs } = read;
                return Ok(Fetched { batches, runs, high_watermark, log_start: self.log_start() });
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

/// Where a replicated batch landed, as the produce answer reports it.
fn landed(appended: strata_raft::Appended, header: &BatchHeader) -> AppendInfo {
    AppendInfo {
        base_offset: Offset(appended.base_offset),
        last_offset: Offset(appended.last_offset),
        max_timestamp: header.max_timestamp(),
    }
}

/// Writes validated batches in order, then makes them durable with one fsync (blocking),
/// unless the log shares its fsyncs: then the caller waits for the sync group's round.
fn write_durably<'a>(
    log: &Log,
    batches: impl Iterator<Item = (&'a [u8], BatchHeader)>,
) -> Result<Vec<AppendInfo>> {
    let mut infos = Vec::new();
    for (batch, header) in batches {
        infos.push(log.write_validated(batch, header)?);
    }
    if let Some(last) = infos.last() {
        fsync_unless_shared(log, last)?;
    }
    Ok(infos)
}

/// Applies the log's durability setting to a written batch on this (blocking) thread, unless
/// the log shares its fsyncs through the node's sync group: that wait is async, after.
fn fsync_unless_shared(log: &Log, info: &AppendInfo) -> Result<()> {
    if !log.shares_fsyncs() {
        log.make_durable(info)?;
    }
    Ok(())
}

/// Writes up to this size are made on the async runtime (see `Partition::try_write_inline`).
const INLINE_WRITE_BYTES: usize = 64 * 1024;

/// Requests up to this size, uncompressed, are validated on the async runtime.
const INLINE_VALIDATION_BYTES: usize = 64 * 1024;

/// Whether a request is small and uncompressed enough to validate without leaving the async
/// runtime (decompression is unbounded work for a worker thread, so compressed batches never
/// are).
fn validates_inline(batches: &[Bytes]) -> bool {
    let bytes: usize = batches.iter().map(Bytes::len).sum();
    bytes <= INLINE_VALIDATION_BYTES
        && batches.iter().all(|b| {
            BatchHeader::parse(b).is_ok_and(|h| {
                h.attributes.compression().is_ok_and(|c| c == strata_record::Compression::None)
            })
        })
}

/// Validates one batch of a request (#`index`): header, length, CRC and record framing.
fn check_batch(index: usize, batch: &Bytes) -> Result<RecordBatch<'_>> {
    RecordBatch::new(batch).and_then(|b| b.validate_records().map(|()| b)).map_err(|err| {
        BrokerError::InvalidArgument(format!("batch #{index} of the request is invalid: {err}"))
    })
}

/// Validates every batch of a request and returns their headers.
fn check_batches(batches: &[Bytes]) -> Result<Vec<BatchHeader>> {
    batches
        .iter()
        .enumerate()
        .map(|(index, batch)| check_batch(index, batch).map(|b| *b.header()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(value: u8) -> Bytes {
        let mut builder = strata_record::BatchBuilder::new();
        builder.push(Timestamp(1), None, Some(&[value; 100]), &[]);
        builder.build(Offset(0))
    }

    #[tokio::test]
    async fn a_small_write_with_an_interval_runs_the_fsync_that_fell_due_before_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let every = Duration::from_millis(300);
        let config = LogConfig { durability: Durability::Interval(every), ..LogConfig::default() };
        let topic = TopicName::new("t").unwrap();
        let partition = Arc::new(Partition::open(topic, 0, dir.path(), config).unwrap());
        let first = partition.append(vec![batch(1)]).await.unwrap();
        assert!(partition.log().durable_end_offset() <= first[0].last_offset, "not due yet");
        tokio::time::sleep(every * 2).await;
        let second = partition.append(vec![batch(2)]).await.unwrap();
        assert!(
            partition.log().durable_end_offset() > second[0].last_offset,
            "the interval passed: the write that found it so is durable when answered"
        );
    }
}
