//! How a log behaves: segment sizes, index density, durability and retention.

use std::time::Duration;

use crate::{Result, StorageError};

/// When appended bytes are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fdatasync` before an append returns. Appends that queue up behind an fsync in flight
    /// share the next one (group commit). The default: an acknowledged batch is on disk.
    EveryAppend,
    /// At most this long between fsyncs: checked on every append and by
    /// [`crate::Log::flush_if_due`], which the owner calls from a timer.
    Interval(Duration),
    /// Only on [`crate::Log::flush`], segment roll and close; the OS writes back when it likes.
    Never,
}

/// Settings of one partition log. The defaults suit a broker partition.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment rolls once it holds this many bytes (a single larger batch gets a segment of
    /// its own). At most 1 GiB so positions fit the 32-bit index fields.
    pub segment_bytes: u64,
    /// A non-empty segment rolls once it is this old.
    pub segment_age: Option<Duration>,
    /// One offset index entry per this many log bytes.
    pub index_interval_bytes: u64,
    /// Largest batch `append` accepts.
    pub max_batch_bytes: usize,
    pub durability: Durability,
    /// Sealed segments whose newest record is older than this are deleted by retention.
    pub retention_age: Option<Duration>,
    /// Retention deletes the oldest sealed segments while the log stays at least this large
    /// without them.
    pub retention_bytes: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 128 * 1024 * 1024,
            segment_age: Some(Duration::from_secs(7 * 24 * 3600)),
            index_interval_bytes: 4096,
            max_batch_bytes: 16 * 1024 * 1024,
            durability: Durability::EveryAppend,
            retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
        }
    }
}

/// Largest segment: positions are stored as u32 and one oversized batch may follow the limit.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Largest batch any log accepts, whatever its configuration says.
pub const MAX_BATCH_BYTES: usize = 256 * 1024 * 1024;

impl LogConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(StorageError::InvalidConfig(msg));
        if !(1024..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return bad(format!(
                "segment_bytes {} not in [1024, {MAX_SEGMENT_BYTES}]",
                self.segment_bytes
            ));
        }
        // An active index holds a full segment's entries in memory: a tiny interval would make
        // it huge.
        if !(64..=self.segment_bytes).contains(&self.index_interval_bytes) {
            return bad(format!(
                "index_interval_bytes {} not in [64, segment_bytes]",
                self.index_interval_bytes
            ));
        }
        if !(strata_record::BATCH_HEADER_LEN..=MAX_BATCH_BYTES).contains(&self.max_batch_bytes) {
            return bad(format!(
                "max_batch_bytes {} not in [61, {MAX_BATCH_BYTES}]",
                self.max_batch_bytes
            ));
        }
        if let Some(age) = self.segment_age
            && age.is_zero()
        {
            return bad("segment_age must be positive".into());
        }
        Ok(())
    }

    /// Offset index entries a segment can need, one per interval plus the unindexed head, for
    /// a segment of `existing` bytes that may still grow to the configured size.
    pub(crate) fn index_capacity(&self, existing: u64) -> usize {
        (existing.max(self.segment_bytes) / self.index_interval_bytes) as usize + 2
    }
}
