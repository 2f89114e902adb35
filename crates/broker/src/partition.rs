//! One partition of a topic: its log, its high watermark, and the wake-ups long-polling
//! fetches wait on.
//!
//! This is the seam replication plugs into: services call `append`, `fetch`, `list_offset`
//! and never touch the log, so a Raft-replicated log can take the local one's place here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_record::{Offset, RecordBatch, Timestamp, TopicName};
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

#[derive(Debug)]
pub struct Partition {
    topic: TopicName,
    id: u32,
    log: Log,
    /// Last published high watermark; fetches waiting for data watch it.
    high_watermark: watch::Sender<u64>,
    /// Whether every append is fsynced (the broker-wide setting; topic changes keep it), read
    /// once here rather than from the log's config on every fetch.
    fsync_every_append: bool,
}

impl Partition {
    /// Opens (creating if needed) the partition's log in `dir`.
    pub fn open(topic: TopicName, id: u32, dir: &Path, config: LogConfig) -> Result<Partition> {
        let fsync_every_append = config.durability == Durability::EveryAppend;
        let log = Log::open(dir, config)?;
        let (high_watermark, _) = watch::channel(0);
        let partition = Partition { topic, id, log, high_watermark, fsync_every_append };
        partition.publish_high_watermark();
        Ok(partition)
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
        let result = tokio::task::spawn_blocking(move || {
            let mut checked = Vec::with_capacity(batches.len());
            for (index, batch) in batches.iter().enumerate() {
                let valid = RecordBatch::new(batch).and_then(|b| b.validate_records().map(|()| b));
                checked.push(valid.map_err(|err| {
                    BrokerError::InvalidArgument(format!(
                        "batch #{index} of the request is invalid: {err}"
                    ))
                })?);
            }
            let mut infos = Vec::with_capacity(checked.len());
            for batch in &checked {
                infos.push(partition.log.append_checked(batch)?);
            }
            Ok::<_, BrokerError>(infos)
        })
        .await
        .map_err(|_| BrokerError::ShuttingDown)?;
        self.publish_high_watermark();
        result
    }

    fn check_offset(&self, offset: Offset, high_watermark: Offset) -> Result<()> {
        let start = self.log_start();
        if offset < start || offset > high_watermark {
            return Err(BrokerError::OffsetOutOfRange {
                topic: self.topic.to_string(),
                partition: self.id,
                offset: offset.0,
                start: start.0,
                end: high_watermark.0,
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
        Ok(self.log.close()?)
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
